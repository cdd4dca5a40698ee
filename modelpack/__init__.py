"""modelpack: package, version, serve and deploy models from any Python ML library.

Nothing is imported or done here until a name is used: ``import modelpack`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelpack._version import __version__

if TYPE_CHECKING:
    from modelpack import errors, flavors, plugins, signature
    from modelpack._rest import get_tracking_uri, set_tracking_uri
    from modelpack.mlflow_import.api import import_mlflow
    from modelpack.model import Model, load, save
    from modelpack.signature import Signature, infer_signature
    from modelpack.tracking import (
        active_run,
        autolog,
        end_run,
        get_run,
        log_artifact,
        log_metric,
        log_metrics,
        log_model,
        log_param,
        log_params,
        search_runs,
        set_tag,
        start_run,
    )

_LAZY = {
    "save": "modelpack.model",
    "load": "modelpack.model",
    "Model": "modelpack.model",
    "Signature": "modelpack.signature",
    "infer_signature": "modelpack.signature",
    "start_run": "modelpack.tracking",
    "log_param": "modelpack.tracking",
    "log_params": "modelpack.tracking",
    "log_metric": "modelpack.tracking",
    "log_metrics": "modelpack.tracking",
    "set_tag": "modelpack.tracking",
    "log_artifact": "modelpack.tracking",
    "log_model": "modelpack.tracking",
    "autolog": "modelpack.tracking",
    "active_run": "modelpack.tracking",
    "end_run": "modelpack.tracking",
    "get_run": "modelpack.tracking",
    "search_runs": "modelpack.tracking",
    "set_tracking_uri": "modelpack._rest",
    "get_tracking_uri": "modelpack._rest",
    "import_mlflow": "modelpack.mlflow_import.api",
}
_SUBMODULES = {
    "batch",
    "oci",
    "deploy",
    "registry",
    "spark",
    "errors",
    "flavors",
    "plugins",
    "signature",
    "servers",
    "deployers",
    "testing",
    "tracking",
    "trust",
}

__all__ = [
    "Model",
    "Signature",
    "__version__",
    "active_run",
    "autolog",
    "end_run",
    "errors",
    "flavors",
    "get_run",
    "get_tracking_uri",
    "import_mlflow",
    "infer_signature",
    "load",
    "log_artifact",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "plugins",
    "save",
    "search_runs",
    "set_tag",
    "set_tracking_uri",
    "signature",
    "start_run",
    "tracking",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"modelpack.{name}")
    raise AttributeError(f"module 'modelpack' has no attribute {name!r}")
