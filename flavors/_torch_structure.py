"""The torch flavor's structure file: a module tree, saved without pickle, rebuilt without
calling a constructor.

Each module is a node: its class by import path, its plain attributes (numbers, strings,
booleans, None, tuples/lists/dicts/sets of them, dtypes, devices, sizes, enums, references to
importable classes and functions, ``functools.partial`` of those, tensors by key, other modules
by node), its parameters and buffers by tensor key, and its children by node. Loading imports
each class (once the trust policy allowed it), makes the object with ``cls.__new__`` and gives
it its state with ``__setstate__``, as unpickling would, but from JSON: nothing in the file can
name a callable to run. Tensors live in safetensors files; a tensor held in two places (tied
weights, an LSTM's flat weight list) is one tensor in the file and one object after loading.
"""

from __future__ import annotations

import enum
import functools
import importlib
import math
import sys
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from modelpack.errors import InvalidModelError
from modelpack.trust import FUNCTION, MODULE, TYPE, Need

if TYPE_CHECKING:
    import torch

STRUCTURE_FORMAT = 1
# Module state that is not an attribute of the model: parameters, buffers and children are
# nodes' own fields; hooks are runtime wiring (forward hooks are refused, see _check_hooks).
_OWN = frozenset({"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"})
_HOOKS = frozenset(
    {
        "_backward_pre_hooks",
        "_backward_hooks",
        "_is_full_backward_hook",
        "_forward_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_hooks_always_called",
        "_forward_pre_hooks",
        "_forward_pre_hooks_with_kwargs",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_load_state_dict_pre_hooks",
        "_load_state_dict_post_hooks",
    }
)
_FORWARD_HOOKS = ("_forward_hooks", "_forward_pre_hooks")


class Capture:
    """Walks a module tree into nodes; tensors are collected by identity, under their first name."""

    def __init__(self, name_of: Callable[[type], str]) -> None:
        self.name_of = name_of  # class -> "module.Qualname" (the flavor knows about __main__)
        self.nodes: list[dict[str, Any] | None] = []
        self.index: dict[int, int] = {}
        self.keys: dict[int, str] = {}  # id(tensor) -> key
        self.tensors: dict[str, torch.Tensor] = {}  # key -> tensor, weights file
        self.extra: dict[str, torch.Tensor] = {}  # key -> tensor, non-persistent and plain
        self.table: dict[str, dict[str, Any]] = {}  # key -> {file, parameter, requires_grad}
        self.needs: set[Need] = set()

    def run(self, root: torch.nn.Module) -> dict[str, Any]:
        self._register(root, "")
        self._node(root, "")
        return {
            "format": STRUCTURE_FORMAT,
            "root": 0,
            "nodes": self.nodes,
            "tensors": self.table,
        }

    # -- tensors first, so that attributes can refer to any of them -----------------------------

    def _register(self, root: torch.nn.Module, prefix: str) -> None:
        for path, module in root.named_modules(remove_duplicate=True, prefix=prefix.rstrip(".")):
            dot = f"{path}." if path else ""
            for name, param in module._parameters.items():
                if param is not None:
                    self._tensor(param, f"{dot}{name}", persistent=True)
            for name, buf in module._buffers.items():
                if buf is not None:
                    persistent = name not in module._non_persistent_buffers_set
                    self._tensor(buf, f"{dot}{name}", persistent=persistent)

    def _tensor(self, tensor: torch.Tensor, key: str, *, persistent: bool) -> str:
        known = self.keys.get(id(tensor))
        if known is not None:
            return known
        import torch

        if tensor.is_meta:
            raise InvalidModelError(f"{key} is on the meta device; load the weights first")
        self.keys[id(tensor)] = key
        data = tensor.detach()
        (self.tensors if persistent else self.extra)[key] = data
        self.table[key] = {
            "file": "weights" if persistent else "extra",
            "parameter": isinstance(tensor, torch.nn.Parameter),
            "requires_grad": bool(tensor.requires_grad),
        }
        return key

    # -- modules ---------------------------------------------------------------------------------

    def _node(self, module: torch.nn.Module, path: str) -> int:
        known = self.index.get(id(module))
        if known is not None:
            return known
        index = len(self.nodes)
        self.index[id(module)] = index
        self.nodes.append(None)
        where = path or "the model"
        cls = type(module)
        name = self.name_of(cls)
        if cls.__module__ != "__main__":  # a script's class is imported from code_paths at load
            _check_importable(cls, name, where)
        self.needs.add(Need(MODULE, name))
        _check_hooks(module, where)
        dot = f"{path}." if path else ""
        node: dict[str, Any] = {
            "class": name,
            "parameters": {
                n: None if p is None else self.keys[id(p)] for n, p in module._parameters.items()
            },
            "buffers": {
                n: None if b is None else self.keys[id(b)] for n, b in module._buffers.items()
            },
            "non_persistent": sorted(module._non_persistent_buffers_set),
            "children": {
                n: None if c is None else self._node(c, f"{dot}{n}")
                for n, c in module._modules.items()
            },
        }
        node["attributes"] = {
            k: self._value(v, f"{dot}{k}")
            for k, v in vars(module).items()
            if k not in _OWN and k not in _HOOKS
        }
        self.nodes[index] = node
        return index

    def _value(self, value: Any, where: str) -> Any:
        import torch

        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int) and type(value) is int:
            return value
        if type(value) is float:
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, torch.nn.Module):
            return {"$module": self._node(value, where)}
        if isinstance(value, torch.Tensor):
            key = self.keys.get(id(value)) or self._tensor(value, where, persistent=False)
            return {"$tensor": key}
        if isinstance(value, torch.dtype):
            return {"$dtype": str(value).removeprefix("torch.")}
        if isinstance(value, torch.device):
            return {"$device": str(value)}
        if isinstance(value, torch.Size):
            return {"$size": list(value)}
        if isinstance(value, enum.Enum):
            return {"$enum": self._ref(type(value), where), "name": value.name}
        if type(value) is tuple:
            return {"$tuple": [self._value(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if type(value) is list:
            return [self._value(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if type(value) in (set, frozenset):
            tag = "$set" if type(value) is set else "$frozenset"
            return {tag: [self._value(v, f"{where}.item") for v in value]}
        if isinstance(value, dict) and type(value).__module__ in ("builtins", "collections"):
            return {
                "$dict": [
                    [self._value(k, f"{where}.key"), self._value(v, f"{where}[{k!r}]")]
                    for k, v in value.items()
                ]
            }
        if isinstance(value, weakref.ref):
            target = value()
            return {"$weakref": None if target is None else self._value(target, where)}
        if isinstance(value, functools.partial):
            return {
                "$partial": {
                    "func": self._value(value.func, f"{where}.func"),
                    "args": [self._value(a, f"{where}.args") for a in value.args],
                    "keywords": {
                        str(k): self._value(v, f"{where}.{k}") for k, v in value.keywords.items()
                    },
                }
            }
        if _is_hf_config(value):  # a transformers model's configuration: its JSON
            attention = getattr(value, "_attn_implementation", None)
            return {
                "$config": self._ref(type(value), where),
                "data": value.to_dict(),
                "attention": attention if isinstance(attention, str) else None,
            }
        if isinstance(value, type):
            return {"$class": self._ref(value, where)}
        if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
            return {"$function": self._ref(value, where)}
        if hasattr(value, "item") and type(value).__module__ == "numpy":
            return self._value(value.item(), where)  # a numpy scalar: its Python value
        raise InvalidModelError(
            f"{where}: attribute holds a {_kind(value)}, which the torch structure cannot "
            "keep (it keeps numbers, strings, tuples/lists/dicts of them, dtypes, tensors, "
            "modules, and classes or functions importable by name); make it one of those, "
            "or set it in the module's forward"
        )

    def _ref(self, obj: Any, where: str) -> str:
        name = importable_name(obj)
        if name is None:
            raise InvalidModelError(
                f"{where}: attribute holds {_kind(obj)}, which cannot be imported by name at "
                "load; define it at module level in an importable module"
            )
        self.needs.add(Need(TYPE if isinstance(obj, type) else FUNCTION, name))
        return name


def _is_hf_config(value: Any) -> bool:
    if "transformers" not in sys.modules:
        return False
    from transformers import PretrainedConfig

    return isinstance(value, PretrainedConfig)


def _kind(value: Any) -> str:
    if isinstance(value, types.FunctionType) and value.__name__ == "<lambda>":
        return "a lambda"
    if isinstance(value, types.FunctionType) and "<locals>" in value.__qualname__:
        return f"the local function {value.__qualname__}"
    if isinstance(value, types.MethodType):
        return f"the bound method {value.__qualname__}"
    return f"{type(value).__module__}.{type(value).__qualname__}"


def importable_name(obj: Any) -> str | None:
    """``module.qualname`` under which ``obj`` can be imported back, or None."""
    module = getattr(obj, "__module__", None)
    if not module or module == "__main__":
        return None
    for attr in ("__name__", "__qualname__"):  # the public spelling first (torch.tanh)
        name = getattr(obj, attr, None)
        if not name or "<" in name:
            continue
        try:
            if resolve(f"{module}.{name}", len(module)) is obj:
                return f"{module}.{name}"
        except (ImportError, AttributeError):
            continue
    return None


def resolve(name: str, split: int | None = None) -> Any:
    """Import ``name`` ("package.module.Qual.name"): the longest importable module prefix."""
    parts = name.split(".")
    if split is not None:
        module_parts = name[:split].split(".")
        candidates: Iterator[int] = iter([len(module_parts)])
    else:
        candidates = iter(range(len(parts) - 1, 0, -1))
    error: Exception | None = None
    for cut in candidates:
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError as exc:
            error = exc
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(f"cannot import {name}") from error


def _check_importable(cls: type, name: str, where: str) -> None:
    try:
        found = resolve(name)
    except (ImportError, AttributeError):
        found = None
    if found is not cls and cls.__module__ == "torch.nn.utils.parametrize":
        raise InvalidModelError(
            f"{where}: the module is parametrized (its class {cls.__qualname__} is made at run "
            "time); remove it with torch.nn.utils.parametrize.remove_parametrizations(module, "
            "name) before saving"
        )
    if found is not cls:
        raise InvalidModelError(
            f"{where}: its class {cls.__module__}.{cls.__qualname__} cannot be imported by name "
            "at load (made at run time, e.g. by torch.nn.utils.parametrize, or defined inside a "
            "function); use a class defined at module level"
        )


def _check_hooks(module: torch.nn.Module, where: str) -> None:
    hooks = [h for h in _FORWARD_HOOKS if getattr(module, h, None)]
    hooks += [h for h in ("_forward_hooks_with_kwargs",) if getattr(module, h, None)]
    hooks += [h for h in ("_forward_pre_hooks_with_kwargs",) if getattr(module, h, None)]
    if hooks:
        raise InvalidModelError(
            f"{where}: the module has forward hooks ({', '.join(sorted(set(hooks)))}), which are "
            "code the structure cannot keep; remove them before saving (e.g. "
            "torch.nn.utils.remove_weight_norm), or save a class that does the same in forward"
        )


# -- loading ---------------------------------------------------------------------------------


def needs(structure: Mapping[str, Any]) -> list[Need]:
    """Every class and callable a structure names, read without importing anything."""
    found: set[Need] = set()
    for node in _nodes(structure):
        found.add(Need(MODULE, str(node.get("class"))))
        _value_needs(node.get("attributes") or {}, found)
    return sorted(found)


def _value_needs(value: Any, found: set[Need]) -> None:
    if isinstance(value, list):
        for v in value:
            _value_needs(v, found)
    elif isinstance(value, dict):
        if "$class" in value:
            found.add(Need(TYPE, str(value["$class"])))
        elif "$function" in value:
            found.add(Need(FUNCTION, str(value["$function"])))
        elif "$enum" in value:
            found.add(Need(TYPE, str(value["$enum"])))
        elif "$config" in value:
            found.add(Need(TYPE, str(value["$config"])))
            return  # its data is JSON for the config class, never decoded as values
        for v in value.values():
            _value_needs(v, found)


def _nodes(structure: Mapping[str, Any]) -> list[dict[str, Any]]:
    nodes = structure.get("nodes")
    if not isinstance(nodes, list) or not nodes or not all(isinstance(n, dict) for n in nodes):
        raise InvalidModelError("the torch structure file has no module nodes")
    return nodes


class Rebuild:
    """Builds the module tree of a structure; every class was granted by the trust policy."""

    def __init__(self, structure: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
        self.nodes = _nodes(structure)
        self.table: Mapping[str, Any] = structure.get("tensors") or {}
        self.raw = tensors
        self.objects: dict[str, torch.Tensor] = {}
        self.built: dict[int, torch.nn.Module] = {}

    def run(self) -> torch.nn.Module:
        return self._module(int(self._root()))

    def _root(self) -> int:
        return 0

    def _tensor(self, key: str) -> torch.Tensor:
        import torch

        found = self.objects.get(key)
        if found is not None:
            return found
        if key not in self.raw:
            raise InvalidModelError(f"the torch structure names tensor {key!r}, not in the files")
        info = self.table.get(key) or {}
        tensor = self.raw[key]
        if info.get("parameter"):
            tensor = torch.nn.Parameter(tensor, requires_grad=bool(info.get("requires_grad")))
        self.objects[key] = tensor
        return tensor

    def _module(self, index: int) -> torch.nn.Module:
        import torch

        built = self.built.get(index)
        if built is not None:
            return built
        try:
            node = self.nodes[index]
        except IndexError:
            raise InvalidModelError(f"the torch structure has no node {index}") from None
        cls = resolve(str(node["class"]))
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise InvalidModelError(f"{node['class']} is not a torch.nn.Module class")
        module = cls.__new__(cls)
        self.built[index] = module  # before its state: a module may refer back to it
        state: dict[str, Any] = {h: OrderedDict() for h in _HOOKS}
        state["_is_full_backward_hook"] = None
        state.update({k: self._decode(v) for k, v in (node.get("attributes") or {}).items()})
        state["_parameters"] = {
            n: None if k is None else self._tensor(k) for n, k in node["parameters"].items()
        }
        state["_buffers"] = {
            n: None if k is None else self._tensor(k) for n, k in node["buffers"].items()
        }
        state["_non_persistent_buffers_set"] = set(node.get("non_persistent") or ())
        state["_modules"] = {
            n: None if i is None else self._module(int(i)) for n, i in node["children"].items()
        }
        restore: Any = module.__setstate__  # nn.Module's (and e.g. RNNBase's) own restore
        restore(state)
        return module

    def _decode(self, value: Any) -> Any:
        import torch

        if isinstance(value, list):
            return [self._decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "$tuple" in value:
            return tuple(self._decode(v) for v in value["$tuple"])
        if "$dict" in value:
            return {self._decode(k): self._decode(v) for k, v in value["$dict"]}
        if "$set" in value:
            return {self._decode(v) for v in value["$set"]}
        if "$frozenset" in value:
            return frozenset(self._decode(v) for v in value["$frozenset"])
        if "$float" in value:
            return float(value["$float"])
        if "$tensor" in value:
            return self._tensor(str(value["$tensor"]))
        if "$module" in value:
            return self._module(int(value["$module"]))
        if "$weakref" in value:
            target = self._decode(value["$weakref"])
            return None if target is None else weakref.ref(target)
        if "$dtype" in value:
            dtype = getattr(torch, str(value["$dtype"]), None)
            if not isinstance(dtype, torch.dtype):
                raise InvalidModelError(f"unknown torch dtype {value['$dtype']!r}")
            return dtype
        if "$device" in value:
            return torch.device(str(value["$device"]))
        if "$size" in value:
            return torch.Size(int(v) for v in value["$size"])
        if "$enum" in value:
            return resolve(str(value["$enum"]))[str(value["name"])]
        if "$config" in value:
            config = resolve(str(value["$config"])).from_dict(dict(value["data"]))
            if isinstance(value.get("attention"), str):  # not in to_dict(): set on its own
                config._attn_implementation = value["attention"]
            return config
        if "$class" in value:
            return resolve(str(value["$class"]))
        if "$function" in value:
            return resolve(str(value["$function"]))
        if "$partial" in value:
            spec = value["$partial"]
            func = self._decode(spec["func"])
            args = [self._decode(a) for a in spec.get("args", [])]
            keywords = {k: self._decode(v) for k, v in (spec.get("keywords") or {}).items()}
            return functools.partial(func, *args, **keywords)
        raise InvalidModelError(f"the torch structure holds an unknown value {value!r:.80}")
