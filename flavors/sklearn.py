"""The scikit-learn flavor: any estimator or Pipeline, saved with skops by default.

skops loads without executing code for the types it knows; pickle is available on
request and then loads only with explicit trust, since unpickling runs code.

A Pipeline whose last step another installed flavor saves natively (an XGBoost, LightGBM or
CatBoost model) is split in two with skops: the preceding steps in ``head.skops``, the last step
saved by its flavor in ``final/`` (``flavors/_sklearn_composite.py``), so that neither part
needs trust to load.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelpack.errors import ConversionError, InvalidModelError
from modelpack.flavors import _sklearn_composite as _split
from modelpack.flavors import _skops
from modelpack.model import load_native, save_with
from modelpack.plugins import Flavor, LoadOptions, Predictor, priority
from modelpack.trust import FUNCTION, PICKLE, TYPE, Need, TrustArg, needing_trust

if TYPE_CHECKING:
    from modelpack.convert import OnnxExport
    from modelpack.signature import Signature

SERIALIZATIONS = ("skops", "pickle")


class SklearnPredictor:
    def __init__(self, estimator: Any, method: str = "predict") -> None:
        self.native = estimator
        self._method = getattr(estimator, method)
        # Fitted on an array, an estimator warns when given named columns: give it the values.
        self._wants_names = hasattr(estimator, "feature_names_in_")
        # Fitted on named columns, scikit-learn spends ~0.4 ms a call on a DataFrame's columns
        # (dtype listing, name check) whatever the rows: a frame whose columns are exactly the
        # fitted names, all plain numbers, goes to a copy that checks only the count instead.
        self._names: list[str] | None = None
        self._unnamed: Any = None
        self._verified: set[str] = set()  # the value dtypes that answered alike both ways
        if self._wants_names:
            unnamed = _without_feature_names(estimator)
            if unnamed is not None:
                self._names = [str(n) for n in estimator.feature_names_in_]
                self._unnamed = getattr(unnamed, method)

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        if not self._wants_names:
            if hasattr(data, "to_numpy"):
                data = data.to_numpy()
            return self._method(data)
        unnamed = self._unnamed  # once: another thread may drop it meanwhile
        if unnamed is not None:
            values = self._plain_values(data)
            if values is not None:
                if values.dtype.str in self._verified:
                    return unnamed(values)
                return self._verify(unnamed, data, values)
        return self._method(data)

    def _plain_values(self, data: Any) -> Any:
        columns = getattr(data, "columns", None)
        if columns is None or len(columns) != len(self._names or ()):
            return None
        if list(columns) != self._names or not hasattr(data, "to_numpy"):
            return None
        values = data.to_numpy()
        # nullable, categorical, text or mixed columns come out as objects: the named path
        return values if values.dtype.kind in "fiu" else None

    def _verify(self, unnamed: Any, data: Any, values: Any) -> Any:
        """The first frame goes both ways; the fast path stays only if it answers the same."""
        import numpy as np

        expected = self._method(data)
        try:
            got = unnamed(values)
            same = type(got) is type(expected) and np.array_equal(
                np.asarray(got), np.asarray(expected), equal_nan=_floating(expected)
            )
        except Exception:
            same = False
        if same:
            self._verified.add(values.dtype.str)
        else:
            self._unnamed = None
        return expected


def _floating(result: Any) -> bool:
    return getattr(getattr(result, "dtype", None), "kind", "") in ("f", "c")


# Keep the fitted names' check on these (they read columns by name, or run user code).
_NAMED_INPUT = frozenset({"ColumnTransformer", "FunctionTransformer"})


def _without_feature_names(estimator: Any) -> Any:
    """A shallow copy of a fitted scikit-learn estimator that checks only the column count.

    Only plain scikit-learn estimators and Pipelines of them: nothing that reads columns by
    name, no nested estimator fitted on named columns, no pandas output. None otherwise.
    """
    import copy

    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        steps = list(estimator.steps)
        if not steps or any(_outputs_frames(step) for _, step in steps):
            return None
        first = _without_feature_names(steps[0][1])
        if first is None:
            return None
        clone = copy.copy(estimator)
        clone.steps = [(steps[0][0], first), *steps[1:]]
        return clone
    cls = type(estimator)
    if not cls.__module__.startswith("sklearn.") or cls.__name__ in _NAMED_INPUT:
        return None
    if _outputs_frames(estimator) or "feature_names_in_" not in vars(estimator):
        return None
    for value in vars(estimator).values():
        inner = value if isinstance(value, (list, tuple)) else [value]
        if any(hasattr(v, "feature_names_in_") or hasattr(v, "steps") for v in inner):
            return None
    clone = copy.copy(estimator)
    del clone.feature_names_in_
    return clone


def _outputs_frames(estimator: Any) -> bool:
    return bool(getattr(estimator, "_sklearn_output_config", None))


class SklearnFlavor:
    name = "sklearn"

    def accepts(self, obj: Any) -> bool:
        if "sklearn" not in sys.modules:
            return False
        from sklearn.base import BaseEstimator

        if isinstance(obj, BaseEstimator):
            return True
        return all(hasattr(obj, a) for a in ("fit", "predict", "get_params"))

    def requirements(self, config: Mapping[str, Any]) -> Sequence[str]:
        reqs = ["scikit-learn", "numpy", "scipy"]
        if config.get("serialization") == "pickle":
            reqs.append("cloudpickle")
        else:
            reqs.append("skops")
        if "final" in config:
            reqs += [r for r in _split.requirements(_final(config)) if r not in reqs]
        return reqs

    def save(
        self,
        obj: Any,
        path: Path,
        *,
        serialization: str = "skops",
        predict_method: str | None = None,
    ) -> dict[str, Any]:
        """``predict_method``: the method that predicts; by default ``predict``, or
        ``transform`` for a transformer that has no ``predict`` (a scaler, an encoder). For a
        Pipeline split in two (module docstring), the last step's flavor checks it."""
        if serialization not in SERIALIZATIONS:
            raise InvalidModelError(
                f"unknown serialization {serialization!r}; choose one of {SERIALIZATIONS}"
            )
        final = _split.final_flavor(obj, priority(self)) if serialization == "skops" else None
        if final is not None:
            return self._save_split(obj, path, final, predict_method or "predict")
        if predict_method is None:
            has = {m for m in ("predict", "transform") if callable(getattr(obj, m, None))}
            predict_method = "transform" if has == {"transform"} else "predict"
        if not callable(getattr(obj, predict_method, None)):
            methods = [
                m
                for m in ("predict", "transform", "predict_proba", "decision_function")
                if callable(getattr(obj, m, None))
            ]
            hint = (
                f"; pass predict_method= one of {', '.join(map(repr, methods))}"
                if methods
                else "; pass predict_method='<method name>' to choose the method"
            )
            raise InvalidModelError(
                f"{type(obj).__name__} has no method {predict_method!r} to predict with{hint}"
            )
        config = _config(obj, serialization, predict_method)
        if serialization == "pickle":
            import cloudpickle

            config["file"] = "model.pkl"
            with open(path / "model.pkl", "wb") as fh:
                cloudpickle.dump(obj, fh, protocol=pickle.DEFAULT_PROTOCOL)
            return config
        config["file"] = "model.skops"
        _dump_skops(obj, path / "model.skops", type(obj).__name__)
        return config

    def _save_split(
        self, pipeline: Any, path: Path, final: Flavor, predict_method: str
    ) -> dict[str, Any]:
        """The steps before the last with skops, the last with its own flavor (``final``)."""
        config = _config(pipeline, "skops", predict_method)
        config["file"] = _split.HEAD_FILE
        config["final"] = _split.save_final(pipeline, final, path, predict_method)
        _dump_skops(_split.head(pipeline), path / _split.HEAD_FILE, type(pipeline).__name__)
        return config

    def trust_needs(self, path: Path, config: Mapping[str, Any]) -> list[Need]:
        file = str(config.get("file", "model.skops"))
        if config.get("serialization") == "pickle":
            return [Need(PICKLE, f"model/{file}")]
        # skops reads the file's schema without constructing anything; what it does not trust
        # by default, the policy must (or the load is refused before skops builds anything).
        needs = [_need(name) for name in _untrusted_types(path / file)]
        if "final" in config:  # a split Pipeline: what its last step's flavor needs too
            needs += _split.needs(path, _final(config))
        return needs

    def load(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Any:
        """The estimator; for a split Pipeline, the Pipeline rebuilt from both parts, or a
        ``PipelineParts`` when the last step's flavor loads no estimator (a LightGBM Booster)."""
        if "final" in config:
            head = self._load_file(path, config, options)
            native = _split.load_final(path, _final(config), options)
            return _split.rebuild(head, _final(config), native)
        return self._load_file(path, config, options)

    def _load_file(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Any:
        file = path / str(config.get("file", "model.skops"))
        needs = self.trust_needs(path, config)
        options.trust.check(needs, model=str(path.parent))
        if config.get("serialization") == "pickle":
            with open(file, "rb") as fh:
                return pickle.load(fh)
        try:
            with _skops.reading() as sio:
                return sio.load(file, trusted=options.trust.allowed_names(needs))
        except (ValueError, TypeError, KeyError, AttributeError, ImportError) as exc:
            raise InvalidModelError(
                f"{file.name}: skops cannot rebuild the estimator ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r})"
            ) from exc

    def predictor(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Predictor:
        if "final" in config:
            head = self._load_file(path, config, options)
            final = _split.final_predictor(path, _final(config), options)
            native = _split.rebuild(head, _final(config), getattr(final, "native", None))
            return _split.SplitPipelinePredictor(_head_predictor(head), final, native)
        return SklearnPredictor(
            self.load(path, config, options), str(config.get("predict_method", "predict"))
        )

    def wrap(self, obj: Any, config: Mapping[str, Any]) -> Predictor:
        if "final" in config:
            final = _split.wrap_final(obj, _final(config))
            return _split.SplitPipelinePredictor(_head_predictor(_split.head(obj)), final, obj)
        return SklearnPredictor(obj, str(config.get("predict_method", "predict")))

    def export_onnx(
        self,
        native: Any,
        config: Mapping[str, Any],
        signature: Signature,
        example: Any,
        *,
        opset: int | None = None,
    ) -> OnnxExport:
        """skl2onnx's graph of the saved ``predict_method`` (``flavors/_sklearn_onnx.py``)."""
        from modelpack.flavors import _sklearn_onnx

        if "final" in config:
            raise ConversionError(
                f"ONNX export of a Pipeline whose last step is saved by the "
                f"{_final(config).get('flavor')} flavor is not supported; convert that step's "
                "model on its own"
            )
        method = str(config.get("predict_method", "predict"))
        return _sklearn_onnx.export(native, signature, method, opset)


def _config(obj: Any, serialization: str, predict_method: str) -> dict[str, Any]:
    import sklearn

    return {
        "serialization": serialization,
        "estimator": f"{type(obj).__module__}.{type(obj).__qualname__}",
        "predict_method": predict_method,
        "sklearn_version": sklearn.__version__,
    }


def _dump_skops(obj: Any, file: Path, what: str) -> None:
    try:
        _skops.skops_io().dump(obj, file)
    except Exception as exc:  # skops refuses what it cannot represent (e.g. Birch's tree)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise InvalidModelError(
            f"skops cannot save this {what} ({type(exc).__name__}: {reason}); "
            "save it with serialization='pickle' (loading it then needs trust=True)"
        ) from exc


def _head_predictor(head: Any) -> Predictor:
    # A one-step Pipeline's head passes the input through as it came (a frame stays a frame).
    return _split.Identity() if _split.passes_through(head) else SklearnPredictor(head, "transform")


def _final(config: Mapping[str, Any]) -> Mapping[str, Any]:
    final = config["final"]
    if not isinstance(final, Mapping):
        raise InvalidModelError("the sklearn flavor's 'final' entry is not a mapping")
    return final


_FLAVOR = SklearnFlavor()


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    serialization: str = "skops",
    predict_method: str | None = None,
    signature: Any = None,
    input_example: Any = None,
    metadata: Mapping[str, Any] | None = None,
    requirements: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save a scikit-learn estimator (skops by default; ``serialization="pickle"`` on request).

    ``predict_method`` defaults to ``predict``, or to ``transform`` for a transformer that has
    no ``predict`` (StandardScaler, OneHotEncoder...). A Pipeline ending in an XGBoost, LightGBM
    or CatBoost model is stored in two parts that load without trust (docs/flavors/sklearn.md).
    """
    return save_with(
        _FLAVOR,
        model,
        path,
        signature=signature,
        input_example=input_example,
        metadata=metadata,
        requirements=requirements,
        overwrite=overwrite,
        serialization=serialization,
        predict_method=predict_method,
    )


def load(
    path: str | os.PathLike[str], *, trust: TrustArg = None, trust_pickle: bool | None = None
) -> Any:
    """The estimator saved at ``path``."""
    return load_native("sklearn", path, trust=trust, trust_pickle=trust_pickle)


def _untrusted_types(file: Path) -> list[str]:
    # The core asks before load, and load asks again: one read of the schema per file version
    # (a 4 MB forest's schema takes ~80 ms to walk). Any change to the file changes its stat.
    st = file.stat()
    key = (str(file), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    cached = _SCANNED.get(key)
    if cached is not None:
        return list(cached)
    try:
        names = _skops.untrusted_types(
            file, lambda found: bool(needing_trust(_need(n) for n in found))
        )
    except Exception as exc:  # a malformed archive is a broken model, not a crash
        raise InvalidModelError(
            f"{file.name} is not a readable skops file ({type(exc).__name__}: {exc})"
        ) from exc
    if len(_SCANNED) >= 64:
        _SCANNED.clear()
    _SCANNED[key] = tuple(names)
    return names


_SCANNED: dict[tuple[str, int, int, int, int], tuple[str, ...]] = {}


def _need(name: str) -> Need:
    # skops names types and functions alike; a lower-case last part is a function by convention.
    return Need(FUNCTION if name.rpartition(".")[2][:1].islower() else TYPE, name)
