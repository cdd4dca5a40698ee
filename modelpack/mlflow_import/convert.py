"""Turning an MLflow model's native files into an object one of modelpack's flavors saves.

Each converter reads one MLflow flavor's files (as MLflow's ``save_model`` writes them) and
returns what to save: the object, the modelpack flavor and its save options. Anything that would
run code (a pickle, a skops type nobody reviewed, a pickled ``PythonModel``) is asked of the trust
policy first; the result is saved in modelpack's pickle-free formats where one exists, so that
it then loads with no trust at all.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack.errors import (
    InvalidModelError,
    MissingDependencyError,
    ModelpackError,
    UnsupportedModelError,
    UntrustedModelError,
)
from modelpack.mlflow_import.mlmodel import MlflowModel
from modelpack.trust import PICKLE, Need, Trust, grant_hint

# The classes each library's MLflow flavor records, rebuilt from this fixed list only.
_XGBOOST = ("XGBClassifier", "XGBRegressor", "XGBRanker", "XGBRFClassifier", "XGBRFRegressor")
_CATBOOST = ("CatBoostClassifier", "CatBoostRegressor", "CatBoostRanker", "CatBoost")
# MLflow flavors in the order they are tried: the library's own flavor before python_function.
ORDER = (
    "sklearn",
    "xgboost",
    "lightgbm",
    "catboost",
    "pytorch",
    "onnx",
    "keras",
    "transformers",
    "python_function",
)


@dataclass
class Converted:
    obj: Any
    flavor: str
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    code_dir: Path | None = None  # the MLflow model's code, which its pickle may import


def convert(model: MlflowModel, trust: Trust, what: str) -> Converted:
    for name in ORDER:
        if name in model.flavors and (name != "python_function" or _is_python_model(model)):
            return _guarded(name, model, trust, what)
    loaders = model.flavor("python_function").get("loader_module")
    raise UnsupportedModelError(
        f"{what}: no importer for its MLflow flavor(s) {', '.join(sorted(model.flavors))}"
        + (f" (pyfunc loader {loaders})" if loaders else "")
        + f"; supported: {', '.join(ORDER)}"
    )


def _guarded(name: str, model: MlflowModel, trust: Trust, what: str) -> Converted:
    """The converter's result; a library's own failure becomes one line naming the model."""
    try:
        return _CONVERTERS[name](model, trust, what)
    except ModelpackError:
        raise
    except ImportError as exc:
        raise MissingDependencyError(
            f"{what} is a {name} model: install {exc.name or 'its library'} to import it"
        ) from exc
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InvalidModelError(
            f"{what}: cannot read its {name} files ({type(exc).__name__}: {reason})"
        ) from exc


def _is_python_model(model: MlflowModel) -> bool:
    return "python_model" in model.flavor("python_function")


def _file(model: MlflowModel, rel: Any, what: str) -> Path:
    path = (model.path / str(rel)).resolve()
    if not str(rel) or model.path.resolve() not in path.parents or not path.exists():
        raise InvalidModelError(f"{what}: the MLmodel names {rel!r}, which the model lacks")
    return path


def _check_pickle(trust: Trust, model: MlflowModel, file: Path, what: str) -> None:
    need = Need(PICKLE, str(file.relative_to(model.path)))
    if not trust.allows(need):  # a grant by digest (`trust add`) is for modelpack models only
        raise UntrustedModelError(
            f"importing {what} would unpickle {need.name}, which runs code; import it only if "
            f"you trust its source, with {grant_hint([need])}",
            needs=[need.to_dict()],
        )


def code_dir(model: MlflowModel, conf: dict[str, Any], what: str) -> Path | None:
    """The flavor's ``code`` directory (``code_paths`` MLflow saved), if any."""
    return _file(model, conf["code"], what) if conf.get("code") else None


@contextlib.contextmanager
def importable(directory: Path | None) -> Iterator[None]:
    """``directory`` on ``sys.path`` while a pickle naming its modules loads or saves, as MLflow
    does when it loads the model."""
    if directory is None:
        yield
        return
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        sys.path.remove(str(directory))


def _code_paths(directory: Path | None) -> list[str]:
    return [str(p) for p in sorted(directory.iterdir())] if directory else []


def _load_pickle(file: Path) -> Any:
    import pickle

    with open(file, "rb") as fh:
        return pickle.load(fh)


def _load_skops(file: Path, trust: Trust, what: str) -> Any:
    """A skops file read by the sklearn flavor: the types the policy does not trust are refused
    (naming ``what``) before skops builds anything."""
    from modelpack import plugins
    from modelpack.model import trust_needs
    from modelpack.plugins import LoadOptions

    flavor = plugins.flavor("sklearn")
    config = {"file": file.name, "serialization": "skops"}
    trust.check(trust_needs(flavor, file.parent, config), model=what)
    return flavor.load(file.parent, config, LoadOptions(trust=trust))


def sklearn(model: MlflowModel, trust: Trust, what: str) -> Converted:
    conf = model.flavor("sklearn")
    file = _file(model, conf.get("pickled_model", "model.pkl"), what)
    if conf.get("serialization_format") == "skops":
        return Converted(_load_skops(file, trust, what), "sklearn")
    _check_pickle(trust, model, file, what)
    code = code_dir(model, conf, what)
    with importable(code):
        estimator = _load_pickle(file)
    return Converted(estimator, "sklearn", notes=["pickle re-saved with skops"], code_dir=code)


def xgboost(model: MlflowModel, trust: Trust, what: str) -> Converted:
    import xgboost as xgb

    conf = model.flavor("xgboost")
    file = _file(model, conf.get("data", "model.xgb"), what)
    cls_name = str(conf.get("model_class", "xgboost.core.Booster")).rpartition(".")[2]
    if cls_name == "Booster":
        return Converted(xgb.Booster(model_file=str(file)), "xgboost")
    if cls_name not in _XGBOOST:
        raise UnsupportedModelError(f"{what}: unknown XGBoost model class {cls_name!r}")
    estimator = getattr(xgb, cls_name)()
    estimator.load_model(str(file))
    return Converted(estimator, "xgboost")


def lightgbm(model: MlflowModel, trust: Trust, what: str) -> Converted:
    import lightgbm as lgb

    conf = model.flavor("lightgbm")
    file = _file(model, conf.get("data", "model.lgb"), what)
    fmt = conf.get("serialization_format")
    if fmt == "skops":  # a scikit-learn wrapper: its types go through the trust policy
        return Converted(_load_skops(file, trust, what), "lightgbm")
    if file.suffix == ".pkl" or fmt in ("pickle", "cloudpickle"):
        _check_pickle(trust, model, file, what)
        return Converted(_load_pickle(file), "lightgbm", notes=["pickle re-saved as model.txt"])
    return Converted(lgb.Booster(model_file=str(file)), "lightgbm")


def catboost(model: MlflowModel, trust: Trust, what: str) -> Converted:
    import catboost as cb

    conf = model.flavor("catboost")
    file = _file(model, conf.get("data", "model.cb"), what)
    cls_name = str(conf.get("model_type", "CatBoost"))
    if cls_name not in _CATBOOST:
        raise UnsupportedModelError(f"{what}: unknown CatBoost model type {cls_name!r}")
    estimator = getattr(cb, cls_name)()
    estimator.load_model(str(file), format=str(conf.get("save_format", "cbm")))
    return Converted(estimator, "catboost")


def pytorch(model: MlflowModel, trust: Trust, what: str) -> Converted:
    import torch

    conf = model.flavor("pytorch")
    data = _file(model, conf.get("model_data", "data"), what)
    exported, pickled = data / "model.pt2", data / "model.pth"
    if exported.is_file():  # serialization_format="pt2": torch.export, whose loader unpickles
        _check_pickle(trust, model, exported, what)
        load_program: Any = torch.export.load
        program = load_program(str(exported))
        return Converted(program, "torch", notes=["torch.export program kept as model.pt2"])
    if not pickled.is_file():
        raise InvalidModelError(f"{what}: {data.name}/ holds neither model.pth nor model.pt2")
    if zipfile.is_zipfile(pickled) and _is_torchscript(pickled):
        load_script: Any = torch.jit.load
        with warnings.catch_warnings():  # torch.jit is deprecated; MLflow wrote the archive
            warnings.simplefilter("ignore", DeprecationWarning)
            return Converted(load_script(str(pickled), map_location="cpu"), "torch")
    _check_pickle(trust, model, pickled, what)
    code = code_dir(model, conf, what)
    with importable(code):
        module = torch.load(str(pickled), map_location="cpu", weights_only=False)
    options = {"code_paths": _code_paths(code)} if code else {}
    notes = ["pickled module re-saved pickle-free"]
    return Converted(module, "torch", options, notes=notes, code_dir=code)


def _is_torchscript(file: Path) -> bool:
    with zipfile.ZipFile(file) as archive:
        return any(n.endswith("/constants.pkl") for n in archive.namelist())


def onnx(model: MlflowModel, trust: Trust, what: str) -> Converted:
    import onnx as onnx_lib

    conf = model.flavor("onnx")
    file = _file(model, conf.get("data", "model.onnx"), what)
    return Converted(onnx_lib.load(str(file)), "onnx")


def keras(model: MlflowModel, trust: Trust, what: str) -> Converted:
    from modelpack import plugins
    from modelpack.model import trust_needs
    from modelpack.plugins import LoadOptions

    conf = model.flavor("keras")
    if conf.get("save_exported_model"):
        raise UnsupportedModelError(
            f"{what}: a Keras model exported as a TensorFlow SavedModel is not imported; "
            "save it with save_exported_model=False (the .keras archive)"
        )
    data = _file(model, conf.get("data", "data"), what)
    if not (data / "model.keras").is_file():
        raise InvalidModelError(f"{what}: {data.name}/model.keras is missing")
    # The keras flavor reads the archive in safe mode; classes that are not Keras' own (custom
    # layers) are code named by the archive, which the trust policy must allow.
    flavor = plugins.flavor("keras")
    config = {"file": "model.keras"}
    trust.check(trust_needs(flavor, data, config), model=what)
    return Converted(flavor.load(data, config, LoadOptions(trust=trust)), "keras")


def transformers(model: MlflowModel, trust: Trust, what: str) -> Converted:
    from modelpack.mlflow_import import _transformers as hf

    conf = model.flavor("transformers")
    hf.check_supported(conf, what)
    weights = _file(model, conf["model_binary"], what)
    tokenizer = _file(model, "components/tokenizer", what)
    pickles = hf.pickled_weights(weights)
    for file in pickles:  # read by torch's weights_only unpickler, still a pickle
        _check_pickle(trust, model, file, what)
    task = hf.pipeline_task(conf, what)
    pipe = hf.load(weights, tokenizer, task, pickles, trust, what)
    notes = ["pickled .bin weights re-saved as safetensors"] if pickles else []
    return Converted(pipe, "transformers", {"task": task}, notes=notes)


def python_model(model: MlflowModel, trust: Trust, what: str) -> Converted:
    from modelpack.mlflow_import.pyfunc import MlflowPythonModel, unpickle

    conf = model.flavor("python_function")
    file = _file(model, conf["python_model"], what)
    _check_pickle(trust, model, file, what)
    artifacts = {
        str(name): _file(model, spec.get("path") if isinstance(spec, dict) else spec, what)
        for name, spec in (conf.get("artifacts") or {}).items()
    }
    code = code_dir(model, conf, what)
    with importable(code):
        wrapper = MlflowPythonModel(unpickle(file), conf.get("model_config"))
        wrapper.load_context({k: str(v) for k, v in artifacts.items()})
    options = {
        "serialization": "cloudpickle",
        "artifacts": artifacts,
        "code_paths": _code_paths(code),
    }
    return Converted(wrapper, "python", options, code_dir=code)


_CONVERTERS: dict[str, Callable[[MlflowModel, Trust, str], Converted]] = {
    "sklearn": sklearn,
    "xgboost": xgboost,
    "lightgbm": lightgbm,
    "catboost": catboost,
    "pytorch": pytorch,
    "onnx": onnx,
    "keras": keras,
    "transformers": transformers,
    "python_function": python_model,
}
