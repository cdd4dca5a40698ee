"""The python flavor: a custom model class around any library.

The class is saved by import path (its code packaged with ``code_paths`` when it
is not installed), constructed at load with JSON ``init_args``, and handed its
artifact files through ``load_context(artifacts)``. No pickle unless asked for.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modelpack.errors import InvalidModelError
from modelpack.model import load_native, save_with
from modelpack.plugins import FALLBACK, LoadOptions
from modelpack.trust import CLASS, PICKLE, Need, TrustArg, dotted
from modelpack.trust import CODE as SHIPPED_CODE

ARTIFACTS = "artifacts"
CODE = "code"


class PythonPredictor:
    def __init__(self, model: Any) -> None:
        self.native = model
        self._takes_params = "params" in inspect.signature(model.predict).parameters

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        if self._takes_params:
            return self.native.predict(data, params=dict(params or {}))
        return self.native.predict(data)


class PythonFlavor:
    name = "python"
    priority = FALLBACK  # tried after every library-specific flavor

    def accepts(self, obj: Any) -> bool:
        return not isinstance(obj, type) and callable(getattr(obj, "predict", None))

    def requirements(self, config: Mapping[str, Any]) -> Sequence[str]:
        return ["cloudpickle"] if config.get("serialization") == "cloudpickle" else []

    def save(
        self,
        obj: Any,
        path: Path,
        *,
        artifacts: Mapping[str, str | os.PathLike[str]] | None = None,
        code_paths: Sequence[str | os.PathLike[str]] | None = None,
        init_args: Mapping[str, Any] | None = None,
        serialization: str = "class",
    ) -> dict[str, Any]:
        if not self.accepts(obj):
            raise InvalidModelError(
                f"{type(obj).__name__} has no predict(self, data) method; "
                "the python flavor needs an instance of a class that has one"
            )
        config: dict[str, Any] = {"serialization": serialization}
        config["artifacts"] = _copy_artifacts(artifacts or {}, path / ARTIFACTS)
        config["code_paths"] = _copy_code(code_paths or [], path / CODE)
        if serialization == "cloudpickle":
            import cloudpickle

            with open(path / "model.pkl", "wb") as fh:
                cloudpickle.dump(obj, fh)
            config["file"] = "model.pkl"
            return config
        if serialization != "class":
            raise InvalidModelError(
                f"unknown serialization {serialization!r}; choose 'class' or 'cloudpickle'"
            )
        cls = type(obj)
        if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
            raise InvalidModelError(
                f"{cls.__qualname__} is defined in {cls.__module__} and cannot be imported when "
                "the model loads; move it to a module and pass code_paths=[that file], "
                "or pass serialization='cloudpickle'"
            )
        try:
            config["init_args"] = json.loads(json.dumps(dict(init_args or {})))
        except (TypeError, ValueError) as exc:
            raise InvalidModelError(f"init_args must be JSON values: {exc}") from exc
        config["class"] = f"{cls.__module__}:{cls.__qualname__}"
        return config

    def trust_needs(self, path: Path, config: Mapping[str, Any]) -> list[Need]:
        # A python model is code by nature: its class (or pickle), and whatever it ships.
        if config.get("serialization") == "cloudpickle":
            needs = [Need(PICKLE, f"model/{config.get('file', 'model.pkl')}")]
        else:
            needs = [Need(CLASS, dotted(str(config.get("class", ""))))]
        if config.get("code_paths"):
            needs.append(Need(SHIPPED_CODE, f"model/{CODE}/"))
        return needs

    def load(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Any:
        options.trust.check(self.trust_needs(path, config), model=str(path.parent))
        code_dir = path / CODE
        if config.get("code_paths") and str(code_dir) not in sys.path:
            sys.path.insert(0, str(code_dir))
        if config.get("serialization") == "cloudpickle":
            with open(path / str(config["file"]), "rb") as fh:
                model = pickle.load(fh)
        else:
            model = _import_class(str(config["class"]))(**config.get("init_args", {}))
        load_context = getattr(model, "load_context", None)
        if callable(load_context):
            load_context({k: str(path / v) for k, v in config.get("artifacts", {}).items()})
        return model

    def predictor(
        self, path: Path, config: Mapping[str, Any], options: LoadOptions
    ) -> PythonPredictor:
        return PythonPredictor(self.load(path, config, options))


def _import_class(target: str) -> Any:
    module_name, _, qualname = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidModelError(
            f"cannot import the model class {target}: {exc}; "
            "install its package or save it with code_paths"
        ) from exc
    return obj


def _copy_artifacts(artifacts: Mapping[str, str | os.PathLike[str]], dest: Path) -> dict[str, str]:
    out = {}
    for name, src in artifacts.items():
        source = Path(src)
        if not source.exists():
            raise InvalidModelError(f"artifact {name!r}: {source} does not exist")
        if not name or "/" in name or name.startswith("."):
            raise InvalidModelError(f"artifact name {name!r} must be a plain file name")
        dest.mkdir(exist_ok=True)
        target = dest / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        out[name] = f"{ARTIFACTS}/{name}"
    return out


def _copy_code(code_paths: Sequence[str | os.PathLike[str]], dest: Path) -> list[str]:
    out = []
    for src in code_paths:
        source = Path(src)
        if not source.exists():
            raise InvalidModelError(f"code path {source} does not exist")
        dest.mkdir(exist_ok=True)
        if source.is_dir():
            shutil.copytree(
                source, dest / source.name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(source, dest / source.name)
        out.append(source.name)
    return out


_FLAVOR = PythonFlavor()


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    artifacts: Mapping[str, str | os.PathLike[str]] | None = None,
    code_paths: Sequence[str | os.PathLike[str]] | None = None,
    init_args: Mapping[str, Any] | None = None,
    serialization: str = "class",
    signature: Any = None,
    input_example: Any = None,
    metadata: Mapping[str, Any] | None = None,
    requirements: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save a custom model (an object with ``predict(data)``) with its artifacts and code."""
    return save_with(
        _FLAVOR,
        model,
        path,
        signature=signature,
        input_example=input_example,
        metadata=metadata,
        requirements=requirements,
        overwrite=overwrite,
        artifacts=artifacts,
        code_paths=code_paths,
        init_args=init_args,
        serialization=serialization,
    )


def load(
    path: str | os.PathLike[str], *, trust: TrustArg = None, trust_pickle: bool | None = None
) -> Any:
    """The custom model instance saved at ``path``, with its context loaded (needs trust)."""
    return load_native("python", path, trust=trust, trust_pickle=trust_pickle)
