"""The PyTorch flavor: any ``nn.Module`` as safetensors weights plus its structure.

Nothing is unpickled and no constructor runs at load: the structure file names each module's
class (imported once the trust policy allows it) and its plain attributes, and the tensors read
from safetensors become its parameters and buffers as they are, so a model is never held twice
in memory. TorchScript modules keep their own archive; a ``torch.export`` program its ``.pt2``
(whose loader unpickles: it needs trust); a HuggingFace ``PreTrainedModel`` is a
``save_pretrained`` folder rebuilt from its config class. See docs/torch.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelpack.errors import (
    InvalidInputError,
    InvalidModelError,
    ModelpackError,
)
from modelpack.flavors import _torch_structure as _structure
from modelpack.model import load_native, save_with
from modelpack.plugins import LoadOptions
from modelpack.trust import CODE, FORMAT, MODULE, TYPE, Need, TrustArg, dotted

if TYPE_CHECKING:
    import onnx
    import torch

    from modelpack.signature import Signature

WEIGHTS = "weights.safetensors"
SHARD_BYTES = 256 * 2**20  # larger models are split, so their files hash in parallel
BUFFERS = "buffers.safetensors"  # non-persistent buffers: not in the state_dict, still needed
CODE_DIR = "code"
STRUCTURE = "structure.json"
SCRIPT = "model.torchscript"
EXPORTED = "model.pt2"
_MISSING = object()


class TorchPredictor:
    def __init__(self, module: torch.nn.Module) -> None:
        import torch

        self.native = module
        first = next(iter([*module.parameters(), *module.buffers()]), None)
        self._device = first.device if first is not None else torch.device("cpu")
        floats = [p.dtype for p in module.parameters() if p.is_floating_point()]
        self._float = floats[0] if floats else None

    def predict(self, data: Any, params: Mapping[str, Any] | None = None) -> Any:
        import torch

        with torch.inference_mode(), _evaluating(self.native):
            if isinstance(data, Mapping):
                out = self.native(**{str(k): self._tensor(v) for k, v in data.items()})
            else:
                out = self.native(self._tensor(data))
        return _to_numpy(out)

    def _tensor(self, value: Any) -> torch.Tensor:
        import torch

        if isinstance(value, torch.Tensor):
            tensor = value
        else:
            arr = np.asarray(value)
            try:  # torch warns on read-only arrays, and takes no object or string arrays
                tensor = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
            except TypeError as exc:
                raise InvalidInputError(f"cannot make a tensor of {arr.dtype} data") from exc
        if tensor.is_floating_point() and self._float is not None:
            tensor = tensor.to(self._float)  # float64 numpy data into a float32 model
        return tensor.to(self._device)


@contextlib.contextmanager
def _evaluating(module: torch.nn.Module) -> Iterator[None]:
    # predict means eval mode (dropout off, batch norm frozen), without changing the caller's model.
    training = [m for m in module.modules() if m.training]
    if training:
        _eval(module)
    try:
        yield
    finally:
        for m in training:
            m.training = True


def _to_numpy(out: Any) -> Any:
    """A tensor as an array; tuples, lists, dicts and model outputs as flat named arrays."""
    if isinstance(out, (Mapping, tuple, list)):
        flat: dict[str, Any] = {}
        _flatten(out, "", flat)
        return flat
    return _array(out)


def _array(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        try:
            return tensor.numpy()
        except TypeError:  # bfloat16 and friends have no numpy dtype
            return tensor.float().numpy()
    return np.asarray(value)


def _is_array_like(value: Any) -> bool:
    import torch

    return isinstance(value, (torch.Tensor, np.ndarray, np.generic, int, float, bool))


def _flatten(value: Any, name: str, into: dict[str, Any]) -> None:
    # (out, (h, c)) -> output_0, output_1_0, output_1_1; a ModelOutput -> its field names.
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items() if v is not None]
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        items = [(str(f), v) for f, v in zip(value._fields, value, strict=True)]
    elif isinstance(value, (tuple, list)):
        items = [(f"output_{i}" if not name else str(i), v) for i, v in enumerate(value)]
    elif _is_array_like(value):
        into[name or "output"] = _array(value)
        return
    else:
        return  # not data a client can take (e.g. a transformers cache object): left out
    for key, item in items:
        _flatten(item, f"{name}_{key}" if name else key, into)


class TorchFlavor:
    name = "torch"

    def accepts(self, obj: Any) -> bool:
        if "torch" not in sys.modules:
            return False
        import torch

        return isinstance(obj, (torch.nn.Module, torch.export.ExportedProgram))

    def requirements(self, config: Mapping[str, Any]) -> Sequence[str]:
        if config.get("format") == "transformers":
            return ["torch", "safetensors", "numpy", "transformers"]
        return ["torch", "safetensors", "numpy"]

    def save(
        self,
        obj: Any,
        path: Path,
        *,
        init_args: Mapping[str, Any] | None = None,
        code_paths: Sequence[str | os.PathLike[str]] | None = None,
    ) -> dict[str, Any]:
        import safetensors
        import torch

        if isinstance(obj, torch.export.ExportedProgram):
            config = _save_exported(obj, path)
        elif not isinstance(obj, torch.nn.Module):
            raise InvalidModelError(f"expected a torch.nn.Module, got {type(obj).__qualname__}")
        else:
            obj = getattr(obj, "_orig_mod", obj)  # torch.compile's wrapper: save the module inside
            if isinstance(obj, torch.jit.ScriptModule):
                config = _save_script(obj, path)
            elif _is_pretrained(obj):
                config = _save_pretrained(obj, path)
            elif init_args is not None:
                config = _save_with_init_args(obj, path, init_args, code_paths)
            else:
                config = _save_structure(obj, path, code_paths)
        config.update(
            torch_version=str(torch.__version__), safetensors_version=str(safetensors.__version__)
        )
        if code_paths:
            _copy_code(code_paths, path / CODE_DIR)
            config["code"] = CODE_DIR
        return config

    def trust_needs(self, path: Path, config: Mapping[str, Any]) -> list[Need]:
        kind = config.get("format", "init_args")
        if kind == "structure":
            needs = _structure.needs(_read_structure(path, config))
        elif kind == "transformers":
            needs = [Need(MODULE, str(config.get("class", ""))), _config_need(config)]
        elif kind == "exported":
            needs = [Need(FORMAT, f"model/{config.get('file', EXPORTED)}")]  # unpickles
        elif kind == "torchscript":
            needs = []
        else:
            needs = [Need(MODULE, dotted(str(config.get("class", ""))))]
        if config.get("code"):
            needs.append(Need(CODE, f"model/{config['code']}/"))
        return needs

    def load(self, path: Path, config: Mapping[str, Any], options: LoadOptions) -> Any:
        options.trust.check(self.trust_needs(path, config), model=str(path.parent))
        device = _device(options.device)
        code = config.get("code")
        if code and str(path / code) not in sys.path:
            sys.path.insert(0, str(path / code))
        no_pyc = sys.dont_write_bytecode
        sys.dont_write_bytecode = bool(code) or no_pyc  # a .pyc in model/code fails the manifest
        try:
            module = _LOADERS[str(config.get("format", "init_args"))](path, config, device)
        finally:
            sys.dont_write_bytecode = no_pyc
        return _eval(module)

    def predictor(
        self, path: Path, config: Mapping[str, Any], options: LoadOptions
    ) -> TorchPredictor:
        return TorchPredictor(self.load(path, config, options))

    def wrap(self, obj: Any, config: Mapping[str, Any]) -> TorchPredictor:
        import torch

        if isinstance(obj, torch.export.ExportedProgram):
            return TorchPredictor(obj.module())
        return TorchPredictor(getattr(obj, "_orig_mod", obj))

    def export_onnx(
        self,
        native: Any,
        config: Mapping[str, Any],
        signature: Signature,
        example: Any,
        *,
        opset: int | None = None,
    ) -> onnx.ModelProto:
        """torch.onnx's graph of the module, outputs named as the predictor names them
        (``flavors/_torch_onnx.py``)."""
        from modelpack.flavors import _torch_onnx

        produced = self.wrap(native, config).predict(example)
        return _torch_onnx.export(native, signature, example, produced, opset)


def _eval(module: Any) -> Any:
    try:
        return module.eval()
    except (NotImplementedError, RuntimeError):  # an exported program's module: eval is baked in
        return module


# -- the structure format (any nn.Module of trusted parts) -----------------------------------


def _save_structure(
    obj: torch.nn.Module, path: Path, code_paths: Sequence[str | os.PathLike[str]] | None
) -> dict[str, Any]:
    from safetensors.torch import save_file

    def name_of(cls: type) -> str:
        return f"{_module_name(cls, code_paths)}.{cls.__qualname__}"

    capture = _structure.Capture(name_of)
    structure = capture.run(obj)
    (path / STRUCTURE).write_text(json.dumps(structure, allow_nan=False), encoding="utf-8")
    state = {k: t.contiguous() for k, t in capture.tensors.items()}
    config: dict[str, Any] = {
        "format": "structure",
        "structure": STRUCTURE,
        "class": f"{_module_name(type(obj), code_paths)}:{type(obj).__qualname__}",
        "weights": _write_shards(_unshare(state), path),
        "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in state.values()}),
    }
    if capture.extra:
        save_file(_unshare(dict(capture.extra)), path / BUFFERS)
        config["extra"] = BUFFERS
    return config


def _unshare(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses two names over one storage (views of one tensor): give each its bytes.
    seen: set[tuple[Any, ...]] = set()
    out = {}
    for name, tensor in state.items():
        t = tensor.contiguous()
        key = (t.device, t.untyped_storage().data_ptr()) if t.numel() else None
        if key is not None and key in seen:
            t = t.clone()
        elif key is not None:
            seen.add(key)
        out[name] = t
    return out


def _read_structure(path: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    file = path / str(config.get("structure", STRUCTURE))
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidModelError(f"{file.name}: not a readable torch structure ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != _structure.STRUCTURE_FORMAT:
        raise InvalidModelError(f"{file.name}: not a torch structure this modelpack reads")
    return data


def _load_structure(path: Path, config: Mapping[str, Any], device: torch.device) -> Any:
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    files = config.get("weights", WEIGHTS)
    for file in [files] if isinstance(files, str) else files:
        tensors.update(load_file(path / str(file), device=str(device)))
    if config.get("extra"):
        tensors.update(load_file(path / str(config["extra"]), device=str(device)))
    try:
        return _structure.Rebuild(_read_structure(path, config), tensors).run()
    except (ImportError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidModelError(
            f"cannot rebuild the module from its structure: {type(exc).__name__}: {exc}"
        ) from exc


# -- TorchScript, torch.export, HuggingFace ----------------------------------------------------


def _save_script(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    with _no_jit_deprecation():
        torch.jit.save(obj, str(path / SCRIPT))
    return {"format": "torchscript", "file": SCRIPT}


def _load_script(path: Path, config: Mapping[str, Any], device: torch.device) -> Any:
    import torch

    load_script: Any = torch.jit.load
    with _no_jit_deprecation():
        return load_script(str(path / str(config.get("file", SCRIPT))), map_location=device)


@contextlib.contextmanager
def _no_jit_deprecation() -> Iterator[None]:
    # torch 2.13 warns on every TorchScript call; the format is documented as deprecated upstream.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        yield


def _save_exported(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    torch.export.save(obj, str(path / EXPORTED))
    return {"format": "exported", "file": EXPORTED}


def _load_exported(path: Path, config: Mapping[str, Any], device: torch.device) -> Any:
    import torch

    load_program: Any = torch.export.load
    program = load_program(str(path / str(config.get("file", EXPORTED))))
    module = program.module()
    return module if device.type == "cpu" else module.to(device)


def _is_pretrained(obj: Any) -> bool:
    if "transformers" not in sys.modules:
        return False
    from transformers import PreTrainedModel

    return isinstance(obj, PreTrainedModel)


def _save_pretrained(obj: Any, path: Path) -> dict[str, Any]:
    # model/ is a save_pretrained folder: from_pretrained reads it as it is.
    with _quiet_transformers():
        obj.save_pretrained(str(path), safe_serialization=True)
    cls, config_cls = type(obj), type(obj.config)
    attention = getattr(obj.config, "_attn_implementation", None)
    return {
        "format": "transformers",
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "config_class": f"{config_cls.__module__}.{config_cls.__qualname__}",
        # not in config.json, and eager vs sdpa attention differ in the last bits
        "attn_implementation": attention if isinstance(attention, str) else None,
    }


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    # No progress bars in a server's log for every load (a library default, put back after).
    from transformers.utils import logging

    hf_logging: Any = logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _config_need(config: Mapping[str, Any]) -> Need:
    return Need(TYPE, str(config.get("config_class", "")))


def _load_pretrained(path: Path, config: Mapping[str, Any], device: torch.device) -> Any:
    import torch

    cls: Any = _structure.resolve(str(config["class"]))
    config_cls: Any = _structure.resolve(str(config["config_class"]))
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise InvalidModelError(f"{config['class']} is not a torch.nn.Module class")
    with _quiet_transformers():
        hf_config = config_cls.from_pretrained(str(path), local_files_only=True)
        attention = config.get("attn_implementation")
        extra = {"attn_implementation": str(attention)} if attention else {}
        builder: Any = cls  # narrowed to nn.Module above; from_pretrained is PreTrainedModel's
        model = builder.from_pretrained(
            str(path), config=hf_config, use_safetensors=True, local_files_only=True, **extra
        )
    return model if device.type == "cpu" else model.to(device)


# -- the first format: class + constructor arguments (still read; saved with init_args=) -------


def _save_with_init_args(
    obj: torch.nn.Module,
    path: Path,
    init_args: Mapping[str, Any],
    code_paths: Sequence[str | os.PathLike[str]] | None,
) -> dict[str, Any]:
    from safetensors.torch import save_file

    cls = type(obj)
    spec = f"{_module_name(cls, code_paths)}:{cls.__qualname__}"
    args = _json_args(cls, init_args)
    state, aliases = _dedupe(obj.state_dict())
    if any(t.is_meta for t in state.values()):
        raise InvalidModelError(f"{spec} has weights on the meta device; load them first")
    _check_rebuild(cls, args, {**state, **{a: state[k] for a, k in aliases.items()}})
    config: dict[str, Any] = {
        "format": "init_args",
        "class": spec,
        "init_args": args,
        "weights": _write_shards(state, path),
        "aliases": aliases,
        "dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in state.values()}),
    }
    extra, extra_aliases = _dedupe(
        {n: b for n, b in obj.named_buffers() if n not in state and n not in aliases}
    )
    if extra:
        save_file(extra, path / BUFFERS)
        config["buffers"] = {"file": BUFFERS, "aliases": extra_aliases}
    return config


def _load_with_init_args(path: Path, config: Mapping[str, Any], device: torch.device) -> Any:
    cls = _import_class(str(config["class"]))
    module = _build(cls, dict(config.get("init_args") or {}))
    _materialise(module, path, config, device)
    return module


_LOADERS: dict[str, Callable[[Path, Mapping[str, Any], Any], Any]] = {
    "structure": _load_structure,
    "torchscript": _load_script,
    "exported": _load_exported,
    "transformers": _load_pretrained,
    "init_args": _load_with_init_args,
}


def _module_name(cls: type, code_paths: Sequence[str | os.PathLike[str]] | None) -> str:
    where = f"{cls.__module__}.{cls.__qualname__}"
    if "<locals>" in cls.__qualname__:
        raise InvalidModelError(
            f"{where} is defined inside a function and cannot be imported at load; "
            "define it at module level"
        )
    if cls.__module__ != "__main__":
        return cls.__module__
    main = sys.modules["__main__"]
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if spec_name:  # run as `python -m package.module`
        return str(spec_name)
    script = Path(getattr(main, "__file__", "") or ".").resolve()
    for given in (Path(p).resolve() for p in code_paths or ()):
        if given == script:
            return script.stem
        if given.is_dir() and script.is_relative_to(given):
            return ".".join(script.relative_to(given.parent).with_suffix("").parts)
    raise InvalidModelError(
        f"{cls.__qualname__} is defined in __main__, which cannot be imported at load; move it "
        "to a module, or pass code_paths=['your_script.py'] (guard its training code with "
        "`if __name__ == '__main__':`)"
    )


def _json(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return _MISSING


def _json_args(cls: type, init_args: Mapping[str, Any]) -> dict[str, Any]:
    bad = [str(k) for k, v in init_args.items() if _json(v) is _MISSING or not isinstance(k, str)]
    if bad:
        raise InvalidModelError(
            f"init_args of {cls.__qualname__} must map names to JSON values (numbers, strings, "
            f"booleans, lists, dicts); not so for: {', '.join(bad)}"
        )
    return dict(_json(dict(init_args)))


def _dedupe(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    # A tensor saved under two names (tied weights) is stored once and re-tied at load.
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name, t in state.items():
        key = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if t.numel() and not t.is_meta and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = t.contiguous()
    # Distinct views that overlap cannot share bytes in a safetensors file: copy them.
    end_of: dict[str, int] = {}
    spans = [(str(t.device), t.data_ptr(), n) for n, t in unique.items() if t.numel()]
    for device, start, name in sorted(spans):
        if start < end_of.get(device, 0):
            unique[name] = unique[name].clone()
        else:
            end_of[device] = start + unique[name].nbytes
    return unique, aliases


def _write_shards(state: dict[str, torch.Tensor], path: Path) -> list[str]:
    from safetensors.torch import save_file

    limit = max(SHARD_BYTES, sum(t.nbytes for t in state.values()) // 8)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        if shards[-1] and size + tensor.nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += tensor.nbytes
    n = len(shards)
    files = [f"weights-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    files = [WEIGHTS] if n == 1 else files
    for file, shard in zip(files, shards, strict=True):
        save_file(shard, path / file, metadata={"format": "pt"})
    return files


def _build(cls: type[torch.nn.Module], args: dict[str, Any]) -> torch.nn.Module:
    # On the meta device, unless __init__ does what meta tensors cannot (e.g. ``.item()``) or
    # keeps a tensor outside the state, which no load would fill in: then build it for real.
    import torch

    try:
        try:
            with torch.device("meta"):
                module = cls(**args)
            if not any(
                isinstance(v, torch.Tensor) and v.is_meta
                for sub in module.modules()
                for v in vars(sub).values()
            ):
                return module
        except TypeError:
            raise
        except Exception:
            pass
        return cls(**args)
    except TypeError as exc:
        raise InvalidModelError(
            f"cannot build {cls.__qualname__}(**{args}): {exc}; "
            "pass init_args={...} with the arguments it was built with"
        ) from exc


def _check_rebuild(
    cls: type[torch.nn.Module], args: dict[str, Any], state: Mapping[str, Any]
) -> None:
    fresh = {k: tuple(v.shape) for k, v in _build(cls, args).state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in state.items()}
    if fresh != saved:
        diff = sorted(k for k in fresh.keys() | saved.keys() if fresh.get(k) != saved.get(k))
        raise InvalidModelError(
            f"{cls.__qualname__}(**{args}) builds a module whose weights differ from this one "
            f"({', '.join(diff[:3])}); pass init_args={{...}} with the arguments it was built with"
        )


def _copy_code(code_paths: Sequence[str | os.PathLike[str]], dest: Path) -> None:
    dest.mkdir()
    for source in map(Path, code_paths):
        if source.is_dir():
            junk = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(source, dest / source.name, ignore=junk)
        elif source.is_file():
            shutil.copy2(source, dest / source.name)
        else:
            raise InvalidModelError(f"code path {source} does not exist")


def _device(name: str) -> torch.device:
    import torch

    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise ModelpackError(f"device {name!r} is not available here ({reason})") from exc
    return device


def _import_class(spec: str) -> type[torch.nn.Module]:
    # Only called once the trust policy granted the class (and the shipped code, if any).
    import torch

    try:
        obj = _structure.resolve(dotted(spec))
    except (ImportError, AttributeError) as exc:
        raise InvalidModelError(
            f"cannot import {spec} to rebuild the model ({exc}); install the code that defines "
            "it, or save the model with code_paths=[...]"
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
        raise InvalidModelError(f"{spec} is not a torch.nn.Module class")
    return obj


def _materialise(
    module: torch.nn.Module, path: Path, config: Mapping[str, Any], device: torch.device
) -> None:
    from safetensors.torch import load_file

    aliases = dict(config.get("aliases") or {})
    files = config.get("weights", WEIGHTS)
    state: dict[str, torch.Tensor] = {}
    for file in [files] if isinstance(files, str) else files:
        state.update(load_file(path / str(file), device=str(device)))
    state.update({alias: state[kept] for alias, kept in aliases.items()})
    try:
        module.load_state_dict(state, assign=True)
    except RuntimeError as exc:
        raise InvalidModelError(
            f"the saved weights do not fit {config['class']}: {str(exc).strip().splitlines()[-1]}"
        ) from exc
    for alias, kept in aliases.items():  # one Parameter again, as tied weights were
        setattr(*_owner(module, alias), getattr(*_owner(module, kept)))
    buffers = config.get("buffers")
    if buffers:
        extra = load_file(path / str(buffers["file"]), device=str(device))
        extra.update({a: extra[k] for a, k in dict(buffers.get("aliases") or {}).items()})
        for name, tensor in extra.items():
            setattr(*_owner(module, name), tensor)


def _owner(module: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    owner, _, attr = name.rpartition(".")
    return module.get_submodule(owner), attr


_FLAVOR = TorchFlavor()


def save(
    model: Any,
    path: str | os.PathLike[str],
    *,
    init_args: Mapping[str, Any] | None = None,
    code_paths: Sequence[str | os.PathLike[str]] | None = None,
    signature: Any = None,
    input_example: Any = None,
    metadata: Mapping[str, Any] | None = None,
    requirements: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save an ``nn.Module``: safetensors weights, its class, and ``init_args`` to rebuild it."""
    return save_with(
        _FLAVOR,
        model,
        path,
        signature=signature,
        input_example=input_example,
        metadata=metadata,
        requirements=requirements,
        overwrite=overwrite,
        init_args=init_args,
        code_paths=code_paths,
    )


def load(path: str | os.PathLike[str], *, device: str = "cpu", trust: TrustArg = None) -> Any:
    """The ``nn.Module`` saved at ``path``, in eval mode, on ``device``."""
    return load_native("torch", path, device=device, trust=trust)
