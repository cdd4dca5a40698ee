"""Run code right after a named module is imported, whoever imports it and whenever.

``AfterImport`` is a meta-path finder that finds the modules it watches through the finders
after it (the module is found and loaded exactly as without it), and wraps their loader so that
its callback runs on the module once the module's own code has run. It serves two callers:
modelpack/_startup.py (SciPy's docstrings during a server's start-up) and autolog (an
integration switched on when its library is imported, not before: MLflow's post-import hooks).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

log = logging.getLogger("modelpack")


class AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``callbacks[name](module)`` after the module ``name`` is executed. A callback that
    raises is logged, never raised into the import that triggered it."""

    def __init__(self, callbacks: dict[str, Callable[[ModuleType], None]]) -> None:
        self.callbacks = callbacks

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        callback = self.callbacks.get(fullname)
        if callback is None:
            return None
        spec = self._find_after(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _ThenCall(spec.loader, fullname, callback)
        return spec

    def _find_after(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None
    ) -> importlib.machinery.ModuleSpec | None:
        finders = sys.meta_path
        start = next((i for i, f in enumerate(finders) if f is self), -1) + 1
        for finder in finders[start:]:
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def install(self) -> None:
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def remove(self) -> None:
        while self in sys.meta_path:
            sys.meta_path.remove(self)


class _ThenCall(importlib.abc.Loader):
    """The module's own loader, then the callback on the module it ran."""

    def __init__(
        self, loader: importlib.abc.Loader, name: str, callback: Callable[[ModuleType], None]
    ) -> None:
        self._loader = loader
        self._name = name
        self._callback = callback

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        try:
            self._callback(module)
        except Exception as exc:  # the user's import goes on; what did not happen is said
            log.warning("after importing %s: %s: %s", self._name, type(exc).__name__, exc)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, get_filename, ...
        return getattr(self._loader, name)
