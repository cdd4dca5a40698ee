import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import modelpack
from modelpack.errors import InvalidModelError, UntrustedModelError
from tests.models import Doubler


@pytest.fixture(autouse=True)
def _no_ambient_trust(monkeypatch):
    monkeypatch.delenv("MODELPACK_TRUST")  # these tests grant trust themselves


def test_artifacts_reach_load_context(tmp_path):
    (tmp_path / "factor.txt").write_text("5")
    path = modelpack.flavors.python.save(
        Doubler(),
        tmp_path / "m",
        artifacts={"factor": tmp_path / "factor.txt"},
        init_args={"offset": 1.0},
        input_example=pd.DataFrame({"x": [1.0]}),
    )
    with pytest.raises(UntrustedModelError, match=r"class tests\.models\.Doubler.*--trust-type"):
        modelpack.load(path)  # a python model is code: its class runs only when trusted
    model = modelpack.load(path, trust=["tests.models.Doubler"])
    np.testing.assert_allclose(model.predict(pd.DataFrame({"x": [2.0]})), [11.0])
    assert model.descriptor.trust == {
        "executes_code": True,
        "needs": [{"kind": "class", "name": "tests.models.Doubler"}],
    }
    native = modelpack.flavors.python.load(path, trust=["tests.models.Doubler"])
    assert isinstance(native, Doubler) and native.factor == 5.0 and native.offset == 1.0


def test_code_paths_make_a_module_importable_at_load(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "shouty_model.py").write_text(
        textwrap.dedent(
            """
            class Shouty:
                def predict(self, data, params=None):
                    suffix = (params or {}).get("suffix", "!")
                    return [str(v).upper() + suffix for v in data["text"]]
            """
        )
    )
    monkeypatch.syspath_prepend(str(src))
    import shouty_model

    path = modelpack.save(
        shouty_model.Shouty(),
        tmp_path / "m",
        code_paths=[src / "shouty_model.py"],
        input_example=pd.DataFrame({"text": ["hi"]}),
    )
    monkeypatch.delitem(sys.modules, "shouty_model")
    sys.path.remove(str(src))
    # Shipped code runs at import: naming the class is not enough, only whole trust covers it.
    with pytest.raises(UntrustedModelError, match=r"code model/code/"):
        modelpack.load(path, trust=["shouty_model.Shouty"])
    assert "shouty_model" not in sys.modules
    model = modelpack.load(path, trust=True)
    assert model.predict({"text": ["a", "b"]}) == ["A!", "B!"]
    assert model.predict({"text": ["a"]}, params={"suffix": "?"}) == ["A?"]
    assert (path / "model" / "code" / "shouty_model.py").is_file()


def test_classes_from_main_need_code_paths_or_cloudpickle(tmp_path):
    class Local:
        def predict(self, data):
            return data

    with pytest.raises(InvalidModelError, match="code_paths"):
        modelpack.save(Local(), tmp_path / "m")
    path = modelpack.flavors.python.save(Local(), tmp_path / "p", serialization="cloudpickle")
    with pytest.raises(UntrustedModelError, match=r"pickle model/model\.pkl.*trust=True"):
        modelpack.load(path)
    assert modelpack.load(path, trust=True).predict([1, 2]) == [1, 2]
    with pytest.warns(DeprecationWarning, match="trust_pickle"):
        assert modelpack.load(path, trust_pickle=True).predict([1, 2]) == [1, 2]


def test_non_json_init_args_are_refused(tmp_path):
    with pytest.raises(InvalidModelError, match="JSON"):
        modelpack.flavors.python.save(Doubler(), tmp_path / "m", init_args={"x": object()})
    assert not (tmp_path / "m").exists()
