"""modelpack: package, version, serve and deploy models from any Python ML library.

Nothing is imported or done here until a name is used: ``import modelpack`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelpack._version import __version__

if TYPE_CHECKING:
    from modelpack import errors, flavors, plugins, signature
    from modelpack.model import Model, load, save
    from modelpack.signature import Signature, infer_signature

_LAZY = {
    "save": "modelpack.model",
    "load": "modelpack.model",
    "Model": "modelpack.model",
    "Signature": "modelpack.signature",
    "infer_signature": "modelpack.signature",
}
_SUBMODULES = {"errors", "flavors", "plugins", "signature", "servers", "deployers", "testing"}

__all__ = [
    "Model",
    "Signature",
    "__version__",
    "errors",
    "flavors",
    "infer_signature",
    "load",
    "plugins",
    "save",
    "signature",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"modelpack.{name}")
    raise AttributeError(f"module 'modelpack' has no attribute {name!r}")
