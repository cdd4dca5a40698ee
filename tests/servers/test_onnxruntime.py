"""Serving a model's onnx flavor on ONNX Runtime, and the deprecated modelpack.servers.onnxruntime.

The runtime itself is the onnx flavor's: tests/flavors/test_onnxruntime.py.
"""

import importlib
import subprocess
import sys
import warnings

import httpx
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

import modelpack
from modelpack.convert import to_onnx
from modelpack.flavors import onnx as onnx_flavor
from modelpack.flavors.onnx import CPU
from tests.servers.conftest import serve

RNG = np.random.default_rng(7)
X = RNG.normal(size=(300, 4))
Y = (X[:, 0] - X[:, 2] > 0).astype(np.int64)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPACK_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def sklearn_onnx(tmp_path_factory):
    clf = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(X, Y)
    path = modelpack.save(clf, tmp_path_factory.mktemp("sk") / "forest", input_example=X[:10])
    return to_onnx(path), clf


def test_http_server_serves_the_onnx_runtime(sklearn_onnx):
    out, clf = sklearn_onnx
    with serve(out, flavor="onnx", device="cpu") as url:
        answer = httpx.post(f"{url}/invocations", json={"instances": X[:5].tolist()})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == clf.predict(X[:5]).tolist()
        metadata = httpx.get(f"{url}/metadata").json()
        assert metadata["loader"] == "onnx"
        assert metadata["runtime"] == {"name": "onnxruntime", "provider": CPU}


def test_the_native_flavor_reports_no_runtime(sklearn_onnx):
    out, _ = sklearn_onnx
    with serve(out, device="cpu") as url:
        metadata = httpx.get(f"{url}/metadata").json()
        assert metadata["loader"] == "sklearn" and "runtime" not in metadata


def test_serve_cli_refuses_onnx_runtime_without_an_onnx_flavor(sklearn_onnx, tmp_path):
    _, clf = sklearn_onnx
    plain = modelpack.save(clf, tmp_path / "plain", input_example=X[:2])
    done = subprocess.run(
        [sys.executable, "-m", "modelpack", "serve", str(plain), "--runtime", "onnx"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error [invalid_model]") and "modelpack convert" in done.stderr
    assert done.stderr.count("\n") == 1


def test_the_old_module_is_a_deprecated_alias_of_the_onnx_flavor_runtime():
    sys.modules.pop("modelpack.servers.onnxruntime", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("modelpack.servers.onnxruntime")
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "modelpack.flavors.onnx" in str(caught[0].message)
    for name in old.__all__:
        assert getattr(old, name) is getattr(onnx_flavor, name), name
