"""Every built-in flavor passes the conformance kit third parties run."""

import numpy as np
import pandas as pd
import pytest

from modelpack.testing import check_flavor
from tests.models import Doubler, iris_like


def _sklearn():
    from sklearn.linear_model import LogisticRegression

    frame, target = iris_like()
    frame = frame.drop(columns="colour")
    return LogisticRegression(max_iter=500).fit(frame, target), frame.head(5)


def _torch():
    import torch

    from tests.flavors.torch_models import MLP

    torch.manual_seed(0)
    return MLP(4, 8, 2), np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)


def _onnx():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, np.ones((4, 3), dtype=np.float32)


def _python(tmp_path):
    (tmp_path / "factor.txt").write_text("2")
    return Doubler(), pd.DataFrame({"x": [1.0, 2.0, 3.0]})


@pytest.mark.parametrize("name", ["sklearn", "torch", "onnx"])
def test_builtin_flavor_passes_check_flavor(name, tmp_path):
    model, example = {"sklearn": _sklearn, "torch": _torch, "onnx": _onnx}[name]()
    check_flavor(name, model, example, tmp_dir=tmp_path)


def test_python_flavor_passes_check_flavor(tmp_path):
    model, example = _python(tmp_path)
    check_flavor("python", model, example, tmp_dir=tmp_path / "check")


def test_check_flavor_rejects_a_broken_flavor(tmp_path):
    class Forgetful:
        name = "forgetful"

        def accepts(self, obj):
            return True

        def requirements(self, config):
            return []

        def save(self, obj, path):
            (path / "nothing").write_text("x")
            return {}

        def load(self, path, config, options):
            return None

        def predictor(self, path, config, options):
            return self

        def predict(self, data):
            return data

    with pytest.raises(AssertionError, match=r"accepts\(object\(\)\)"):
        check_flavor(Forgetful(), Doubler(), pd.DataFrame({"x": [1.0]}), tmp_dir=tmp_path)


def test_check_flavor_rejects_an_incomplete_plugin(tmp_path):
    from modelpack.errors import PluginError

    class NoSave:
        name = "nosave"

    with pytest.raises(PluginError, match="missing .*save"):
        check_flavor(NoSave(), Doubler(), pd.DataFrame({"x": [1.0]}), tmp_dir=tmp_path)  # type: ignore[arg-type]
