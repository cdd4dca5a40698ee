"""The Keras 3 flavor: any ``keras.Model`` as its native ``.keras`` archive, loaded in safe mode.

``model.keras`` is what ``model.save`` writes: the model's config as JSON and its weights as
HDF5. ``keras.saving.load_model(..., safe_mode=True)`` rebuilds it from Keras' own classes and
refuses Python bytecode (a ``Lambda`` of a lambda). Classes and functions that are not Keras'
(custom layers, registered activations) are code named by the archive: ``trust_needs`` lists
them from ``config.json`` without loading anything, and the load imports only those the trust
policy grants and hands them to Keras as ``custom_objects``.

Keras picks its backend at its first import. When nothing chose one (no ``KERAS_BACKEND``, no
installed backend in ``keras.json``) the flavor picks ``torch`` before importing Keras; a Keras
already imported is used as it is. See docs/flavors/keras.md.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpack.errors import InvalidModelError, MissingDependencyError
from modelpack.model import load_native, save_with
from modelpack.plugins import SPECIFIC, LoadOptions
from modelpack.trust import CLASS, CODE, FUNCTION, Need, TrustArg

if TYPE_CHECKING:
    from modelpack.signature import Signature

FILE = "model.keras"
CONFIG_MEMBER = "config.json"
MAX_CONFIG_BYTES = 64 * 2**20
# model.predict's default batch size: the predictor calls the model on slices of this many
# rows, so that its answers are model.predict's to the bit.
BATCH = 32
_BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy"}
_BACKEND_DISTRIBUTIONS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
# Serialized values that are data, not classes (Keras' own markers).
_DATA_MARKERS = frozenset(
    {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}
)


def import_keras() -> Any:
    """``keras``, on the torch backend unless a backend was chosen (or Keras imported) before."""
    if "keras" not in sys.modules and not os.environ.get("KERAS_BACKEND"):
        configured = _configured_backend()
        module = _BACKEND_MODULES.get(configured or "", "")
        if not module or importlib.util.find_spec(module) is None:
            os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as exc:
        backend = os.environ.get("KERAS_BACKEND") or _configured_backend() or "tensorflow"
        raise MissingDependencyError(
            f"keras cannot be imported on its {backend!r} backend ({exc}); install that "
            "backend or set KERAS_BACKEND=torch before keras is first imported"
        ) from exc
    return keras


@contextlib.contextmanager
def _no_array_copy_warning() -> Iterator[None]:
    # Keras' torch backend reads weights with np.array(tensor); numpy 2 warns because torch's
    # Tensor.__array__ takes no copy= (Keras 3.15, torch 2.13). Nothing the user can change.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"__array__ implementation doesn't accept a copy keyword",
            category=DeprecationWarning,
        )
        yield


def _configured_backend() -> str | None:
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        data = json.loads((home / "keras.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    backend = data.get("backend") if isinstance(data, dict) else None
    return backend if isinstance(backend, str) else None


# -- what the archive names ------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """One object the archive names that is not Keras' own.

    ``kind``: ``class``, ``function`` or ``code`` (bytecode); ``key``: the name Keras looks it
    up by in ``custom_objects``; ``name``: its dotted import path.
    """

    kind: str
    key: str
    name: str


def _is_keras_module(module: Any) -> bool:
    return isinstance(module, str) and (module == "keras" or module.startswith("keras."))


def references(config: Any, custom: Mapping[str, str] | None = None) -> list[Ref]:
    """Every class and function ``config`` (an archive's ``config.json``) names outside Keras.

    ``custom``: the dotted names recorded at save for registered functions, which the archive
    names only by their registered name (``package>name``).
    """
    found: dict[tuple[str, str], Ref] = {}
    for node in _objects(config):
        ref = _reference(node, custom or {})
        if ref is not None:
            found.setdefault((ref.kind, ref.key), ref)
    return sorted(found.values(), key=lambda r: (r.kind, r.key))


def _objects(value: Any) -> Iterator[Mapping[str, Any]]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if "class_name" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _reference(node: Mapping[str, Any], custom: Mapping[str, str]) -> Ref | None:
    class_name = node.get("class_name")
    module = node.get("module")
    if class_name == "__lambda__":
        return Ref(CODE, "__lambda__", "a lambda's Python bytecode")
    if not isinstance(class_name, str) or class_name in _DATA_MARKERS:
        return None
    if class_name == "function":
        fn = node.get("config")
        if not isinstance(fn, str):
            return None
        if module == "builtins" and ">" not in fn:
            return None  # Keras looks these up among its own functions only
        if module == "builtins" or (_is_keras_module(module) and ">" in fn):
            return Ref(FUNCTION, fn, custom.get(fn, fn))
        if _is_keras_module(module):
            return None
        return Ref(FUNCTION, fn, f"{module}.{fn}")
    if _is_keras_module(module):
        return None
    registered = node.get("registered_name")
    key = registered if isinstance(registered, str) and registered else class_name
    return Ref(CLASS, key, f"{module}.{class_name}" if module else key)


def read_config(file: Path) -> Any:
    """The archive's ``config.json``, read without loading anything."""
    try:
        with zipfile.ZipFile(file) as archive:
            info = archive.getinfo(CONFIG_MEMBER)
            if info.file_size > MAX_CONFIG_BYTES:
                raise InvalidModelError(f"{file.name}: {CONFIG_MEMBER} is too large")
            return json.loads(archive.read(info))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise InvalidModelError(f"{file.name}: not a readable .keras archive ({exc})") from exc


def _needs(refs: Sequence[Ref], file: str) -> list[Need]:
    return [
        Need(CODE, f"model/{file}: {r.name}") if r.kind == CODE else Need(r.kind, r.name)
        for r in refs
    ]


def _resolve(ref: Ref) -> Any:
    module_name, _, attr = ref.name.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
        obj = getattr(obj, attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InvalidModelError(f"cannot import {ref.name}, which the model names: {exc}") from exc
    if ref.kind == CLASS and not (isinstance(obj, type) and hasattr(obj, "from_config")):
        raise InvalidModelError(f"{ref.name} is not a Keras class")
    if ref.kind == FUNCTION and (isinstance(obj, type) or not callable(obj)):
        raise InvalidModelError(f"{ref.name} is not a function")
    return obj


# -- predicting ------------------------------------------------------------------------------


class KerasPredictor:
    def __init__(self, model: Any) -> None:
        keras = import_keras()
        self.native = model
        self._torch = keras.backend.backend() == "torch"

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        rows = _rows(data)
        parts = [self._call(_slice(data, i, i + BATCH)) for i in range(0, rows, BATCH)]
        if not parts:
            return self._call(data)
        if isinstance(parts[0], dict):
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return np.concatenate(parts)

    def _call(self, data: Any) -> Any:
        if self._torch:
            import torch

            with torch.no_grad():
                out = self.native(data, training=False)
        else:
            out = self.native(data, training=False)
        return _outputs(out)


def _rows(data: Any) -> int:
    if isinstance(data, Mapping):
        first = next(iter(data.values()), None)
        return 0 if first is None else len(first)
    return len(data)


def _slice(data: Any, start: int, stop: int) -> Any:
    if isinstance(data, Mapping):
        return {str(k): np.asarray(v)[start:stop] for k, v in data.items()}
    return np.asarray(data)[start:stop]


def _outputs(out: Any) -> Any:
    """One tensor as an array; a list as ``output_0``...; a dict as its keys."""
    if isinstance(out, Mapping):
        return {str(k): _array(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return {f"output_{i}": _array(v) for i, v in enumerate(out)}
    return _array(out)


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (numpy 2 warns on np.array(tensor))
        result: np.ndarray = value.detach().cpu().numpy()
        return result
    import keras

    return np.asarray(keras.ops.convert_to_numpy(value))


# -- the flavor ------------------------------------------------------------------------------


def _is_keras_model(obj: Any) -> bool:
    return any(
        c.__module__ == "keras.src.models.model" and c.__name__ == "Model"
        for c in type(obj).__mro__
    )


class KerasFlavor:
    name = "keras"
    priority = SPECIFIC  # on the torch backend a Keras model is also an nn.Module

    def accepts(self, obj: Any) -> bool:
        return _is_keras_model(obj)

    def requirements(self, config: Mapping[str, Any]) -> Sequence[str]:
        backend = _BACKEND_DISTRIBUTIONS.get(str(config.get("backend", "torch")))
        return ["keras", "h5py", "numpy", *([backend] if backend else [])]

    def save(self, obj: Any, path: Path) -> dict[str, Any]:
        keras = import_keras()
        if not _is_keras_model(obj):
            raise InvalidModelError(f"expected a keras.Model, got {type(obj).__qualname__}")
        file = path / FILE
        try:
            with _no_array_copy_warning():
                obj.save(str(file))
        except (TypeError, ValueError, NotImplementedError) as exc:
            raise InvalidModelError(f"keras cannot save this model: {_first_line(exc)}") from exc
        archive = read_config(file)
        custom = _registered_functions(keras, archive)
        refs = references(archive, custom)
        _check_importable(refs)
        return {
            "file": FILE,
            "format": "keras",
            "keras_version": str(keras.__version__),
            "backend": str(keras.backend.backend()),
            "inputs": [str(t.name) for t in getattr(obj, "inputs", None) or []],
            "outputs": [str(n) for n in getattr(obj, "output_names", None) or []],
            "custom_objects": {r.key: r.name for r in refs if r.kind != CODE},
        }

    def trust_needs(self, path: Path, config: Mapping[str, Any]) -> list[Need]:
        file = str(config.get("file", FILE))
        return _needs(self._refs(path, config), file)

    def _refs(self, path: Path, config: Mapping[str, Any]) -> list[Ref]:
        custom = config.get("custom_objects") or {}
        return references(read_config(path / str(config.get("file", FILE))), dict(custom))

    def load(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Any:
        """The ``keras.Model``, rebuilt in safe mode, uncompiled (inference needs no optimizer)."""
        refs = self._refs(path, config)
        options.trust.check(_needs(refs, str(config.get("file", FILE))), model=str(path.parent))
        keras = import_keras()
        custom = {r.key: _resolve(r) for r in refs if r.kind != CODE}
        try:
            with _no_array_copy_warning():
                return keras.saving.load_model(
                    str(path / str(config.get("file", FILE))),
                    custom_objects=custom,
                    compile=False,
                    safe_mode=True,
                )
        except (TypeError, ValueError, KeyError, OSError) as exc:
            raise InvalidModelError(f"keras cannot load the model: {_first_line(exc)}") from exc

    def predictor(
        self, path: Path, config: Mapping[str, Any], options: LoadOptions
    ) -> KerasPredictor:
        return KerasPredictor(self.load(path, config, options))

    def wrap(self, obj: Any, config: Mapping[str, Any]) -> KerasPredictor:
        return KerasPredictor(obj)

    def export_onnx(
        self,
        native: Any,
        config: Mapping[str, Any],
        signature: Signature,
        example: Any,
        *,
        opset: int | None = None,
    ) -> Any:
        """torch.onnx's graph of the model on the torch backend (``flavors/_torch_onnx.py``),
        outputs named as the predictor names them."""
        from modelpack.errors import ConversionError
        from modelpack.flavors import _torch_onnx

        keras = import_keras()
        if keras.backend.backend() != "torch":
            raise ConversionError(
                f"keras exports to ONNX here only on the torch backend, not "
                f"{keras.backend.backend()!r}"
            )
        produced = self.wrap(native, config).predict(example)
        names = [s.name or f"input_{i}" for i, s in enumerate(signature.inputs.tensors)]
        outputs = list(produced) if isinstance(produced, Mapping) else ["output"]
        model = _torch_onnx.torch_to_onnx(
            _forward_module(native, names), signature, example, outputs, opset
        )
        model.producer_name, model.producer_version = "keras+torch.onnx", str(keras.__version__)
        return model


def _forward_module(model: Any, names: Sequence[str]) -> Any:
    import torch

    class Forward(torch.nn.Module):
        """The model as torch.onnx calls it: one tensor, or named tensors (as keywords, or by
        position in the signature's order)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            if not kwargs and len(args) > 1:
                kwargs = dict(zip(names, args, strict=True))
            out = self.model(kwargs if kwargs else args[0], training=False)
            if isinstance(out, Mapping):
                return tuple(out.values())
            return tuple(out) if isinstance(out, (list, tuple)) else out

    return Forward().eval()


def _registered_functions(keras: Any, archive: Any) -> dict[str, str]:
    """Registered functions (``package>name``) as the dotted names they import from."""
    found = {}
    for ref in references(archive):
        if ref.kind != FUNCTION or ">" not in ref.key:
            continue
        fn = keras.saving.get_registered_object(ref.key)
        if fn is None:
            raise InvalidModelError(f"function {ref.key!r} is not registered with keras")
        found[ref.key] = f"{fn.__module__}.{fn.__qualname__}"
    return found


def _check_importable(refs: Sequence[Ref]) -> None:
    for ref in refs:
        if ref.kind == CODE:
            raise InvalidModelError(
                "the model holds a Python lambda (a Lambda layer), which Keras' safe mode "
                "refuses to load; use a named function registered with "
                "@keras.saving.register_keras_serializable() instead"
            )
        module_name, _, attr = ref.name.rpartition(".")
        if module_name == "__main__" or "<locals>" in ref.name:
            raise InvalidModelError(
                f"{ref.name} is defined in a script or a function and cannot be imported at "
                "load; move it to a module"
            )
        module = sys.modules.get(module_name)
        if module is None or not hasattr(module, attr):
            raise InvalidModelError(
                f"{ref.name}, which the model names, cannot be imported at load; define it at "
                "module level"
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


_FLAVOR = KerasFlavor()


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    signature: Any = None,
    input_example: Any = None,
    metadata: Mapping[str, Any] | None = None,
    requirements: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save a ``keras.Model`` as its ``.keras`` archive."""
    return save_with(
        _FLAVOR,
        model,
        path,
        signature=signature,
        input_example=input_example,
        metadata=metadata,
        requirements=requirements,
        overwrite=overwrite,
    )


def load(path: str | os.PathLike[str], *, trust: TrustArg = None) -> Any:
    """The ``keras.Model`` saved at ``path``."""
    return load_native("keras", path, trust=trust)
