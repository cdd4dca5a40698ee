"""skops for the scikit-learn flavor, imported without its import-time sweeps.

``import skops.io`` computes its default trusted lists at import (skops/io/_trusted_types.py).
Two sweeps dominate a cold ``modelpack serve``: every estimator class, from
``sklearn.utils.all_estimators()``, which imports every public scikit-learn module (and
pytest), and scipy's ufuncs, each looked for in every loaded module (~250,000 getattr calls).
This flavor imports skops with those lists (and the one internal type that needs
sklearn.ensemble) left empty, so that skops alone would be stricter, never more lenient; then
it keeps skops' decisions exactly what they would have been:
- an estimator a file names is tested as all_estimators tests it, on the one public module
  that would list it (a parent of the module that building the estimator imports anyway),
  and added to skops' list when it passes (``_confirm_estimators``);
- when names remain that the reviewed list of modelpack.trust does not cover (they would need
  trust), the lists are completed by skops' own code and the file read again (``_complete``);
- anyone else reading those lists (skops called directly) completes them first
  (``_DefaultNames``): skops stays skops outside this flavor's own reads.

If skops' internals are not what this module expects (another skops release), it imports skops
as it comes: slower, never more lenient.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger("modelpack.flavors.sklearn")
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


def skops_io() -> Any:
    """``skops.io``, imported once with its default lists shortened when that can be done."""
    global _level
    with _lock:
        if _level < 0:  # imported before this flavor: with its full lists
            _level = _FULL if "skops.io" in sys.modules else _import_shortened()
    return sys.modules["skops.io"]


def _import_shortened() -> int:
    try:
        with _skops_imports(shorten=True), _estimators_left_out():
            import skops.io
        for attr in _SHORTENED:
            _make_lazy(attr)
    except Exception as exc:  # not the skops this module knows: import it as it comes
        log.debug("skops imported without shortcuts: %s: %s", type(exc).__name__, exc)
        for name in [n for n in sys.modules if n == "skops" or n.startswith("skops.")]:
            del sys.modules[name]
        with _skops_imports(shorten=False):
            import skops.io  # noqa: F401
        return _FULL
    return _AT_IMPORT


def untrusted_types(file: os.PathLike[str], needs_trust: Callable[[list[str]], bool]) -> list[str]:
    """skops' untrusted types of ``file``, with its lists completed only while ``needs_trust``
    says some of them would need trust (skops' answer is then exactly what it would be)."""
    with reading() as sio:
        names: list[str] = sio.get_untrusted_types(file=file)
        if _confirm_estimators(names):
            names = sio.get_untrusted_types(file=file)
        while _level < _FULL and needs_trust(names):
            _complete(_level + 1)
            names = sio.get_untrusted_types(file=file)
    return names


@contextlib.contextmanager
def reading() -> Iterator[Any]:
    """``skops.io`` for a read by this flavor (the shortened lists stay as they are)."""
    sio = skops_io()
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
