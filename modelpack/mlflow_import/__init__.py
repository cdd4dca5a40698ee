"""Bringing MLflow models and registries over to modelpack, without MLflow installed.

``import_mlflow(src, path)`` converts one model (docs/migrate-from-mlflow.md);
``import_registry(tracking_uri)`` copies registered models, versions, aliases and tags.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelpack.mlflow_import.api import import_mlflow
    from modelpack.mlflow_import.registry import RegistryReport, import_registry

__all__ = ["RegistryReport", "import_mlflow", "import_registry"]

_LAZY = {
    "import_mlflow": "modelpack.mlflow_import.api",
    "import_registry": "modelpack.mlflow_import.registry",
    "RegistryReport": "modelpack.mlflow_import.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'modelpack.mlflow_import' has no attribute {name!r}")
