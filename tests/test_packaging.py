"""The built wheel, installed in a fresh venv beside a third-party flavor, works as installed.

The namespace mapping (flavors/ -> modelpack.flavors, ...) and the entry points must survive a
real install, not only the editable one the dev venv uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BUILTIN_FLAVORS = {
    "sklearn",
    "torch",
    "onnx",
    "python",
    "xgboost",
    "lightgbm",
    "catboost",
    "keras",
    "transformers",
}
THIRDPARTY_DIST = "mp-thirdparty-flavor"

Run = Callable[..., str]


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_wheel_holds_the_mapped_packages(thirdparty_venv: Path) -> None:
    [wheel] = (thirdparty_venv.parents[2] / "dist").glob("modelpack-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("modelpack", "modelpack/flavors", "modelpack/servers", "modelpack/deployers"):
        assert f"{package}/__init__.py" in names
    assert "modelpack/py.typed" in names
    assert not any(n.startswith(("flavors/", "servers/", "deployers/", "tests/")) for n in names)


def test_builtin_plugins_import_from_the_installed_wheel(run_in_venv: Run) -> None:
    out = run_in_venv(
        """
import importlib, json
from importlib import metadata
import modelpack
from modelpack import plugins

modules = {}
for ep in metadata.entry_points(group="modelpack.flavors"):
    if ep.dist is not None and ep.dist.name == "modelpack":
        modules[ep.name] = importlib.import_module(ep.module).__file__
        plugins.get_plugin("flavor", ep.name)  # loads, instantiates, checks the Protocol
for name in ("modelpack.servers", "modelpack.deployers"):
    modules[name] = importlib.import_module(name).__file__
print(json.dumps({"modelpack": modelpack.__file__, "modules": modules}))
"""
    )
    found = json.loads(out)
    site = str(Path(found["modelpack"]).parent.parent)
    assert "site-packages" in site
    assert set(found["modules"]) == BUILTIN_FLAVORS | {"modelpack.servers", "modelpack.deployers"}
    for name, file in found["modules"].items():
        assert file.startswith(site), f"{name} imported from {file}, not from the wheel"


def test_plugins_listed_with_their_distributions(run_in_venv: Run) -> None:
    out = run_in_venv(
        """
import json
from modelpack.plugins import list_plugins
print(json.dumps({p.name: p.distribution for p in list_plugins("flavor")}))
"""
    )
    dists = json.loads(out)
    assert {name: dists.get(name) for name in BUILTIN_FLAVORS} == dict.fromkeys(
        BUILTIN_FLAVORS, "modelpack"
    )
    assert _normalize(dists["constant"]) == THIRDPARTY_DIST


def test_thirdparty_flavor_passes_the_conformance_kit(run_in_venv: Run) -> None:
    run_in_venv(
        """
import numpy
from modelpack.testing import check_flavor
from mp_thirdparty_flavor import ConstantModel
check_flavor("constant", ConstantModel(3.0), numpy.zeros((4, 2)))
"""
    )


def test_thirdparty_flavor_round_trips_through_the_generic_api(run_in_venv: Run) -> None:
    out = run_in_venv(
        """
import json, sys, numpy, modelpack
from mp_thirdparty_flavor import ConstantModel
path = modelpack.save(ConstantModel(3.0), sys.argv[1] + "/m", input_example=numpy.zeros((2, 2)))
model = modelpack.load(path)
print(json.dumps({
    "loader": model.descriptor.loader,
    "files": sorted(model.descriptor.files),
    "predictions": model.predict(numpy.ones((4, 2))).tolist(),
}))
""",
        ".",
    )
    found = json.loads(out)
    assert found["loader"] == "constant"
    assert "model/constant.json" in found["files"]
    assert found["predictions"] == [3.0, 3.0, 3.0, 3.0]


def test_plugins_command_lists_the_thirdparty_flavor(thirdparty_venv: Path) -> None:
    cli = thirdparty_venv.parent / "modelpack"
    proc = subprocess.run(
        [str(cli), "plugins"],
        cwd=thirdparty_venv.parents[2],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "constant" in proc.stdout
    assert THIRDPARTY_DIST in _normalize(proc.stdout)
    for name in BUILTIN_FLAVORS:
        assert name in proc.stdout


def test_wheel_holds_every_package_of_the_tree(thirdparty_venv: Path) -> None:
    # pyproject lists packages explicitly (for the folder mapping): a new subpackage must be added.
    [wheel] = (thirdparty_venv.parents[2] / "dist").glob("modelpack-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    root = Path(__file__).resolve().parent.parent
    for top, prefix in (
        ("modelpack", "modelpack"),
        ("flavors", "modelpack/flavors"),
        ("servers", "modelpack/servers"),
        ("deployers", "modelpack/deployers"),
    ):
        for init in (root / top).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.relative_to(root / top).as_posix()
            assert f"{prefix}/{rel}" in names, f"{prefix}/{rel} is missing from the wheel"
