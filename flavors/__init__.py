"""Built-in flavors, importable as ``modelpack.flavors.<name>``.

Each is registered through the ``modelpack.flavors`` entry-point group, exactly as a
third-party flavor would be. Submodules load on first attribute access.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BUILTIN = ("sklearn", "torch", "onnx", "python")


def __getattr__(name: str) -> ModuleType:
    if name in BUILTIN:
        return importlib.import_module(f"modelpack.flavors.{name}")
    raise AttributeError(f"module 'modelpack.flavors' has no attribute {name!r}")
