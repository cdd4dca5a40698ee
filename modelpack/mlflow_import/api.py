"""``import_mlflow``: an MLflow model (directory, run, registered version) as a modelpack model."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from modelpack.mlflow_import import convert as _convert
from modelpack.mlflow_import import mlmodel
from modelpack.mlflow_import.sources import Located, locate
from modelpack.trust import Trust, TrustArg, policy

METADATA_KEY = "mlflow"


def import_mlflow(
    src: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    tracking_uri: str | None = None,
    trust: TrustArg = None,
    overwrite: bool = False,
) -> Path:
    """Save the MLflow model ``src`` as a modelpack model directory at ``path``.

    ``src``: an MLflow model directory, ``runs:/RUN_ID/PATH``, ``models:/NAME/VERSION``,
    ``models:/NAME@ALIAS`` or ``models:/m-<id>`` of the store at ``tracking_uri`` (default:
    ``MLFLOW_TRACKING_URI``). ``trust``: what unpickling the model's files may run (as for
    :func:`modelpack.load`); pickles are re-saved in pickle-free formats where one exists.
    """
    with tempfile.TemporaryDirectory(prefix="modelpack-mlflow-") as work:
        located = locate(str(src), tracking_uri, Path(work))
        return save_located(located, path, trust=policy(trust), overwrite=overwrite)


def save_located(
    located: Located, path: str | os.PathLike[str], *, trust: Trust, overwrite: bool
) -> Path:
    from modelpack import plugins
    from modelpack.model import save_with

    model = mlmodel.read(located.path)
    what = f"the MLflow model {located.origin.get('source', located.path)}"
    converted = _convert.convert(model, trust, what)
    metadata = {METADATA_KEY: _provenance(model, located, converted)}
    with _convert.importable(converted.code_dir):  # saving pickles what the model imports
        return save_with(
            plugins.flavor(converted.flavor),
            converted.obj,
            path,
            signature=model.signature,
            input_example=model.input_example,
            metadata=metadata,
            requirements=model.requirements,
            overwrite=overwrite,
            **converted.options,
        )


def _provenance(model: mlmodel.MlflowModel, located: Located, converted: Any) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in located.origin.items() if v is not None}
    out.update(model.info)
    out["flavors"] = sorted(model.flavors)
    version = mlmodel.python_version(model)
    if version:
        out["python_version"] = version
    if converted.notes:
        out["notes"] = list(converted.notes)
    return out
