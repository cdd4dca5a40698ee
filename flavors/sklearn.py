"""The scikit-learn flavor: any estimator or Pipeline, saved with skops by default.

skops loads without executing code for the types it knows; pickle is available on
request and then loads only with explicit trust, since unpickling runs code.

A Pipeline whose last step another installed flavor saves natively (an XGBoost, LightGBM or
CatBoost model) is split in two with skops: the preceding steps in ``head.skops``, the last step
saved by its flavor in ``final/`` (``flavors/_sklearn_composite.py``), so that neither part
needs trust to load.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.abc
import importlib.util
import os
import pickle
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelpack.errors import ConversionError, InvalidModelError
from modelpack.flavors import _sklearn_composite as _split
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
            with _skops_reading() as sio:
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
        _skops_io().dump(obj, file)
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
        with _skops_reading() as sio:
            names: list[str] = sio.get_untrusted_types(file=file)
            if _confirm_estimators(names):
                names = sio.get_untrusted_types(file=file)
            while _level < _FULL and needing_trust(_need(n) for n in names):
                _complete(_level + 1)
                names = sio.get_untrusted_types(file=file)
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


# -- skops, without its import-time sweeps ----------------------------------------------------
# ``import skops.io`` computes its default trusted lists at import (skops/io/_trusted_types.py).
# Two sweeps dominate a cold ``modelpack serve``: every estimator class, from
# ``sklearn.utils.all_estimators()``, which imports every public scikit-learn module (and
# pytest), and scipy's ufuncs, each looked for in every loaded module (~250,000 getattr calls).
# This flavor imports skops with those lists (and the one internal type that needs
# sklearn.ensemble) left empty, so that skops alone would be stricter, never more lenient; then
# it keeps skops' decisions exactly what they would have been:
# - an estimator a file names is tested as all_estimators tests it, on the one public module
#   that would list it (a parent of the module that building the estimator imports anyway),
#   and added to skops' list when it passes (``_confirm_estimators``);
# - when names remain that the reviewed list of modelpack.trust does not cover (they would need
#   trust), the lists are completed by skops' own code and the file read again (``_complete``);
# - anyone else reading those lists (skops called directly) completes them first
#   (``_DefaultNames``): skops stays skops outside this flavor's own reads.
_DEFAULTS = "skops.io._trusted_types"
_SHORTENED = (
    "SKLEARN_ESTIMATOR_TYPE_NAMES",
    "SKLEARN_INTERNAL_TYPE_NAMES",
    "SCIPY_UFUNC_TYPE_NAMES",
)
# How complete the shortened lists are: all but the estimators, or all.
_AT_IMPORT, _BUT_ESTIMATORS, _FULL = 0, 1, 2
_level = -1  # skops not imported yet
_lock = threading.RLock()
_reading = threading.local()  # set while this flavor reads with the shortened lists
# sklearn.externals.array_api_compat.<backend> imports that backend (torch alone: seconds).
_ARRAY_API_BACKENDS = ("torch", "cupy", "jax", "dask")


def _skops_io() -> Any:
    global _level
    with _lock:
        if _level < 0:
            if "skops.io" in sys.modules:  # imported before this flavor: with its full lists
                _level = _FULL
            else:
                with _skops_imports(shorten=True), _estimators_left_out():
                    import skops.io  # noqa: F401
                for attr in _SHORTENED:
                    _make_lazy(attr)
                _level = _AT_IMPORT
    return sys.modules["skops.io"]


@contextlib.contextmanager
def _skops_reading() -> Iterator[Any]:
    sio = _skops_io()
    was = getattr(_reading, "on", False)
    _reading.on = True
    try:
        yield sio
    finally:
        _reading.on = was


class _SkopsImports(importlib.abc.MetaPathFinder):
    """While skops' defaults are computed: no unused array backend, and, when ``shorten``,
    no sklearn.ensemble and no scipy ufuncs for them."""

    def __init__(self, shorten: bool) -> None:
        self._shorten = shorten
        self.utils: Any = None  # skops.io._utils, its get_public_type_names replaced

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        prefix, _, backend = fullname.rpartition(".")
        unused = backend in _ARRAY_API_BACKENDS and backend not in sys.modules
        if prefix == "sklearn.externals.array_api_compat" and unused:
            # pkgutil.walk_packages (all_estimators) skips what raises ImportError
            raise ModuleNotFoundError(f"{fullname} skipped while importing skops")
        if not self._shorten:
            return None
        if fullname == _DEFAULTS and self.utils is None:  # skops.io._utils is loaded by now
            self.utils = sys.modules["skops.io._utils"]
            self.utils.get_public_type_names = _no_scipy_ufuncs(self.utils.get_public_type_names)
        if fullname == "sklearn.ensemble" and _importer() == _DEFAULTS:
            raise ModuleNotFoundError(f"{fullname} deferred while importing skops")
        return None


def _importer() -> str:
    """The module whose code runs the import being looked up."""
    frame = sys._getframe(2)
    while frame.f_back is not None and frame.f_code.co_filename.startswith("<frozen "):
        frame = frame.f_back
    return str(frame.f_globals.get("__name__", ""))


def _no_scipy_ufuncs(real: Any) -> Any:
    @functools.wraps(real)
    def get_public_type_names(module: Any, oftype: Any) -> Any:
        caller = sys._getframe(1).f_globals.get("__name__")
        if module.__name__ == "scipy.special" and caller == _DEFAULTS:
            return []
        return real(module=module, oftype=oftype)

    return get_public_type_names


@contextlib.contextmanager
def _skops_imports(*, shorten: bool) -> Iterator[None]:
    finder = _SkopsImports(shorten)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        if finder.utils is not None:
            finder.utils.get_public_type_names = finder.utils.get_public_type_names.__wrapped__


@contextlib.contextmanager
def _estimators_left_out() -> Iterator[None]:
    """``sklearn.utils.all_estimators()`` is empty for skops' defaults, itself for anyone else."""
    import sklearn.utils

    real = sklearn.utils.all_estimators

    def all_estimators(type_filter: Any = None) -> Any:
        if sys._getframe(1).f_globals.get("__name__") == _DEFAULTS:
            return []
        return real(type_filter)

    sklearn.utils.all_estimators = all_estimators
    try:
        yield
    finally:
        sklearn.utils.all_estimators = real


class _DefaultNames(list):  # type: ignore[type-arg]
    """A shortened skops default list: complete before anyone but this flavor reads it."""

    def _complete(self) -> None:
        if not getattr(_reading, "on", False):
            _complete(_FULL)

    def __add__(self, other: Any) -> Any:
        self._complete()
        return list.__add__(self, other)

    def __iter__(self) -> Any:
        self._complete()
        return list.__iter__(self)

    def __contains__(self, name: object) -> bool:
        self._complete()
        return list.__contains__(self, name)

    def __len__(self) -> int:
        self._complete()
        return list.__len__(self)


def _make_lazy(attr: str) -> None:
    """Put a ``_DefaultNames`` in place of skops' list wherever skops imported it by name."""
    shortened = getattr(sys.modules[_DEFAULTS], attr)
    lazy = _DefaultNames(list.__iter__(shortened))
    for name, module in list(sys.modules.items()):
        if name.startswith("skops.") and getattr(module, attr, None) is shortened:
            setattr(module, attr, lazy)


def _complete(level: int) -> None:
    """Fill the shortened lists up to ``level``, with skops' own code run again."""
    global _level
    with _lock:
        if _level >= level:
            return
        live = sys.modules[_DEFAULTS]
        spec = importlib.util.spec_from_file_location(_DEFAULTS, live.__file__)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot read {live.__file__} again")
        fresh = importlib.util.module_from_spec(spec)
        estimators = _estimators_left_out() if level < _FULL else contextlib.nullcontext()
        with _skops_imports(shorten=False), estimators:
            spec.loader.exec_module(fresh)
        for attr in _SHORTENED:
            names = getattr(live, attr)
            known = set(list.__iter__(names))
            list.extend(names, [n for n in getattr(fresh, attr) if n not in known])
        _level = level


def _confirm_estimators(names: Iterable[str]) -> bool:
    """Add to skops' estimator list those of ``names`` that all_estimators() lists."""
    found = [n for n in names if n.startswith("sklearn.") and _listed_estimator(n)]
    with _lock:
        list.extend(getattr(sys.modules[_DEFAULTS], _SHORTENED[0]), found)
    return bool(found)


def _listed_estimator(name: str) -> bool:
    """Whether ``sklearn.utils.all_estimators()`` lists the class ``name``, by its own test.

    all_estimators imports each module with no private part (``._``) and no ignored one, and
    lists the public, non-abstract BaseEstimator subclasses among its attributes; such a class
    is found in the public package above its private module (sklearn.linear_model for
    sklearn.linear_model._logistic.LogisticRegression). A class listed only through another
    module is not confirmed here, and is then found by completing the lists.
    """
    from sklearn.base import BaseEstimator
    from sklearn.utils import discovery

    module_name, _, attr = name.rpartition(".")
    public = module_name.split("._", 1)[0]
    parts = public.split(".")
    ignored = getattr(discovery, "_MODULE_TO_IGNORE", None)
    if ignored is None or len(parts) < 2 or parts[0] != "sklearn":
        return False
    if not all(p.isidentifier() and p not in ignored for p in parts) or attr.startswith("_"):
        return False
    try:
        module = importlib.import_module(public)
    except Exception:  # all_estimators would have failed on it: let the full lists decide
        return False
    import sklearn
    from skops.io._utils import get_type_name

    root = os.path.dirname(sklearn.__file__) + os.sep  # all_estimators walks this directory
    origin = getattr(module.__spec__, "origin", None) or ""
    cls = getattr(module, attr, None) if attr in dir(module) else None
    return (
        origin.startswith(root)
        and isinstance(cls, type)
        and issubclass(cls, BaseEstimator)
        and attr != "BaseEstimator"
        and not getattr(cls, "__abstractmethods__", None)
        and get_type_name(cls) == name
    )
