import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import modelpack
from modelpack.errors import InvalidModelError, UntrustedModelError
from tests.models import Doubler


def test_artifacts_reach_load_context(tmp_path):
    (tmp_path / "factor.txt").write_text("5")
    path = modelpack.flavors.python.save(
        Doubler(),
        tmp_path / "m",
        artifacts={"factor": tmp_path / "factor.txt"},
        init_args={"offset": 1.0},
        input_example=pd.DataFrame({"x": [1.0]}),
    )
    model = modelpack.load(path)
    np.testing.assert_allclose(model.predict(pd.DataFrame({"x": [2.0]})), [11.0])
    native = modelpack.flavors.python.load(path)
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
    model = modelpack.load(path)
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
    with pytest.raises(UntrustedModelError, match="trust_pickle"):
        modelpack.load(path)
    assert modelpack.load(path, trust_pickle=True).predict([1, 2]) == [1, 2]


def test_non_json_init_args_are_refused(tmp_path):
    with pytest.raises(InvalidModelError, match="JSON"):
        modelpack.flavors.python.save(Doubler(), tmp_path / "m", init_args={"x": object()})
    assert not (tmp_path / "m").exists()
