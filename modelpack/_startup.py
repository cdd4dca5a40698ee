"""The start-up of a process that a model server owns: less work while a model's libraries import.

Two costs of a cold start that serve no model (measured on ``modelpack serve`` of a scikit-learn
model, docs/benchmarks.md "Cold start"):

- The cyclic garbage collector runs hundreds of times while imports create the ~10^6 objects of
  numpy, scipy, pandas and scikit-learn, each time walking the objects of the younger
  generations, and finds nothing: modules, classes and functions live as long as the process.
  During start-up it is paused; then the start-up heap is frozen out of the collector
  (``gc.freeze``, O(1), what a server that owns its process does before ready anyway) and
  collection resumes as usual.
- SciPy (1.15 and later) rewrites the docstring of each function marked ``xp_capabilities`` as
  it imports (``scipy._lib._array_api``), parsing ~500 docstrings with numpydoc's parser to add
  an "Array API Standard Support" table: ~0.17 s of ``import sklearn``. During start-up the
  docstring stays as written (without that table); nothing else about the function changes.
  A SciPy without that decorator is imported as it comes.

Only for a process the server owns (the CLI's ``serve``, a server worker): never for an app or a
model embedded in someone else's process.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from modelpack._import_hooks import AfterImport

_SCIPY_ARRAY_API = "scipy._lib._array_api"
_lock = threading.Lock()
_open = {"docs": 0, "collector": 0}  # lean_startup() blocks open (in any thread) for each
_state: dict[str, Any] = {}  # while they are open: the finder, whether the collector ran


@contextlib.contextmanager
def lean_startup(*, collector: bool = True, docs: bool = True) -> Iterator[None]:
    """While the block runs: with ``collector``, the cyclic collector is paused, and when the
    block ends well what it left on the heap is frozen out of it; with ``docs``, SciPy keeps
    its docstrings as written. Blocks nest, and may span other threads' work (an await on a
    load in a worker thread): each effect lasts until the last block asking for it ends."""
    with _lock:
        if docs:
            _open["docs"] += 1
            if _open["docs"] == 1:
                _state["finder"] = _scipy_docs_as_written()
                _state["finder"].install()
        if collector:
            _open["collector"] += 1
            if _open["collector"] == 1:
                _state["collector"] = gc.isenabled()
                gc.disable()
    ok = False
    try:
        yield
        ok = True
    finally:
        with _lock:
            if docs:
                _open["docs"] -= 1
                if _open["docs"] == 0:
                    _state.pop("finder").remove()
            if collector:
                _open["collector"] -= 1
                if _open["collector"] == 0 and _state.pop("collector"):
                    if ok:  # the start-up heap lives as long as the process
                        gc.freeze()
                    gc.enable()


def _scipy_docs_as_written() -> AfterImport:
    """Once ``scipy._lib._array_api`` has run, its ``xp_capabilities`` gets a docstring parser
    that keeps each docstring as written."""
    return AfterImport({_SCIPY_ARRAY_API: _keep_docs})


def _keep_docs(module: ModuleType) -> None:
    # The decorator builds FunctionDoc(f), appends a table to doc["Notes"], and sets
    # f.__doc__ to str(doc) less its first line: only that name is replaced, in that module.
    if callable(getattr(module, "xp_capabilities", None)) and hasattr(module, "FunctionDoc"):
        setattr(module, "FunctionDoc", _DocAsWritten)  # noqa: B010


class _DocAsWritten:
    """What ``xp_capabilities`` needs of numpydoc's ``FunctionDoc``, keeping the docstring."""

    def __init__(self, func: Any) -> None:
        self._doc = getattr(func, "__doc__", None) or ""

    def __getitem__(self, section: str) -> list[str]:
        return []  # the table appended to it goes nowhere

    def __str__(self) -> str:
        return "\n" + self._doc  # the decorator drops the first line (numpydoc's signature)
