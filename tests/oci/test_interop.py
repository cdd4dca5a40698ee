"""Independent clients read what modelpack pushes, and modelpack loads what they push:
the oras Python SDK (PyPI ``oras``) and skopeo (Debian)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelpack
from modelpack import oci
from modelpack._fs import walk_files
from modelpack.errors import InvalidModelError
from modelpack.oci import _layout
from tests.conftest import skip_or_fail
from tests.models import iris_like
from tests.oci.conftest import LocalRegistry


def _oras(host: str) -> Any:
    provider = pytest.importorskip("oras.provider")
    return provider.Registry(hostname=host, insecure=True)


def test_skopeo_reads_the_manifest(registry: LocalRegistry, torch_model: Path) -> None:
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        skip_or_fail("skopeo is not installed (apt-get install skopeo)")
    repo = f"interop/m{uuid.uuid4().hex[:8]}"
    result = oci.push(torch_model, registry.ref(repo) + ":v1")
    url = f"docker://{registry.host}/{repo}:v1"
    raw = subprocess.run(
        [str(skopeo), "inspect", "--raw", "--tls-verify=false", url],
        capture_output=True,
        check=True,
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == result.digest
    manifest = json.loads(raw)
    assert manifest["artifactType"] == _layout.ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == _layout.CONFIG
    config = subprocess.run(
        [str(skopeo), "inspect", "--raw", "--config", "--tls-verify=false", url],
        capture_output=True,
        check=True,
    ).stdout
    assert json.loads(config)["modelfs"]["diffIds"] == [x["digest"] for x in manifest["layers"]]


def test_oras_pulls_what_modelpack_pushed(
    registry: LocalRegistry, sklearn_model: Path, tmp_path: Path
) -> None:
    repo = f"interop/m{uuid.uuid4().hex[:8]}"
    oci.push(sklearn_model, registry.ref(repo) + ":v1")
    out = tmp_path / "oras-out"
    out.mkdir()
    for rel in walk_files(sklearn_model):  # oras writes files, not the folders above them
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
    files = _oras(registry.host).pull(target=f"{registry.host}/{repo}:v1", outdir=str(out))
    assert sorted(Path(f).relative_to(out).as_posix() for f in files) == walk_files(sklearn_model)
    for rel in walk_files(sklearn_model):
        assert (out / rel).read_bytes() == (sklearn_model / rel).read_bytes(), rel
    frame, _ = iris_like()
    numeric = frame[["length", "width", "count"]]
    np.testing.assert_array_equal(
        modelpack.load(out).predict(numeric), modelpack.load(sklearn_model).predict(numeric)
    )


def _oras_push(registry: LocalRegistry, model: Path, repo: str, *, config_type: str) -> None:
    """A model directory's files pushed by oras with the CNCF media types and filepaths."""
    files, annotations = [], {}
    for rel in walk_files(model):
        kind = _layout.WEIGHT if rel.endswith(".skops") else _layout.WEIGHT_CONFIG
        files.append(f"{rel}:{kind}")
        annotations[rel] = {_layout.FILEPATH: rel}
    diff_ids = [
        "sha256:" + hashlib.sha256((model / r).read_bytes()).hexdigest() for r in walk_files(model)
    ]
    config = {
        "descriptor": {"name": "from-oras"},
        "config": {"format": "sklearn"},
        "modelfs": {"type": "layers", "diffIds": diff_ids},
    }
    (model.parent / "oras-config.json").write_text(json.dumps(config), encoding="utf-8")
    (model.parent / "oras-annotations.json").write_text(json.dumps(annotations), encoding="utf-8")
    _oras(registry.host).push(
        target=f"{registry.host}/{repo}:v1",
        files=files,
        manifest_config=f"../oras-config.json:{config_type}",
        annotation_file=str(model.parent / "oras-annotations.json"),
        disable_path_validation=True,
        quiet=True,
    )


def test_modelpack_loads_what_oras_pushed(
    registry: LocalRegistry,
    sklearn_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = tmp_path / "model"
    shutil.copytree(sklearn_model, model)
    monkeypatch.chdir(model)
    repo = f"interop/m{uuid.uuid4().hex[:8]}"
    _oras_push(registry, model, repo, config_type=_layout.CONFIG)
    loaded = modelpack.load(registry.ref(repo) + ":v1")
    frame, _ = iris_like()
    numeric = frame[["length", "width", "count"]]
    np.testing.assert_array_equal(
        loaded.predict(numeric), modelpack.load(sklearn_model).predict(numeric)
    )

    other = f"interop/m{uuid.uuid4().hex[:8]}"
    _oras_push(registry, model, other, config_type="application/vnd.oci.image.config.v1+json")
    with pytest.raises(InvalidModelError, match="not a CNCF ModelPack model artifact"):
        oci.pull(registry.ref(other) + ":v1", tmp_path / "out")
    assert not (tmp_path / "out").exists()
