"""An attacker's corpus: model directories that run code when loaded, unless loading refuses.

Each builder saves a legitimate model with modelpack, then tampers with its files and
descriptor the way an attacker can (the manifest hashes recomputed with ``build_manifest``,
the descriptor rewritten with ``Descriptor.write``), so every directory passes the manifest
check. Their payloads only write a marker file: the ``marker`` passed in, or the path in the
``MODELPACK_HOSTILE_MARKER`` environment variable when set (so that processes sharing one
corpus each get their own marker).

The ``tampered-*`` entries are the odd ones out: a legitimate model whose ``modelpack.yaml``
was edited after save without recomputing anything; they must fail the integrity check.
"""

from __future__ import annotations

import functools
import io
import json
import pickle
import shutil
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MARKER_ENV = "MODELPACK_HOSTILE_MARKER"
PAYLOAD_KEY = "_modelpack_hostile"  # the estimator attribute the skops payloads hide under


def payload_code(marker: Path) -> str:
    """Python source that appends a line to the marker file (flat: no indented block)."""
    return (
        "import os; "
        f"p = os.environ.get({MARKER_ENV!r}) or {str(marker)!r}; "
        "f = open(p, 'a'); f.write('pwned\\n'); f.close()"
    )


def payload_argv(marker: Path) -> list[str]:
    return [sys.executable, "-c", payload_code(marker)]


@dataclass(frozen=True)
class Built:
    path: Path
    pythonpath: tuple[Path, ...] = ()  # folders the loading process must have on sys.path


@dataclass(frozen=True)
class Hostile:
    id: str
    case: int  # the corpus case of the brief (1-6)
    flavor: str
    build: Callable[[Path, Path], Built]
    names: tuple[str, ...]  # the refusal must name one of these
    trust: tuple[str, ...] = ()  # skops: what skops.io.get_untrusted_types lists for the file
    modules: tuple[str, ...] = ()  # hostile modules that a refused load must not import
    async_payload: bool = False  # the payload finishes after the load returns (a child process)
    runs_when_trusted: bool = True  # False: refused by name, but not callable the way it's named
    integrity: bool = False  # case 6: must fail the integrity check instead


# ---------------------------------------------------------------------------------------------
# legitimate models to start from


def _xy() -> tuple[Any, Any]:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"a": [0.0, 1.0, 1.0, 0.0, 0.5, 0.2], "b": [1.0, 0.0, 1.0, 0.0, 0.3, 0.9]})
    return frame, np.array([0, 1, 1, 0, 1, 0])


def _save_sklearn(path: Path) -> Path:
    from sklearn.linear_model import LogisticRegression

    import modelpack

    x, y = _xy()
    return modelpack.save(LogisticRegression().fit(x, y), path, input_example=x.head(2))


def _save_python(path: Path) -> Path:
    import modelpack
    from tests.models import Doubler

    return modelpack.save(Doubler(), path)


def _save_torch(path: Path) -> Path:
    """A torch model directory as ``modelpack.save(torch.nn.Linear(2, 1), path)`` writes it.

    Built without importing torch (seconds of the suite): a saved python model turned into
    the torch flavor, weights written with safetensors' numpy API.
    """
    from importlib.metadata import version

    import numpy as np
    from safetensors.numpy import save_file

    from modelpack.descriptor import Descriptor, build_manifest

    path = _save_python(path)
    model = path / "model"
    shutil.rmtree(model)
    model.mkdir()
    weights = {"weight": np.zeros((1, 2), np.float32), "bias": np.zeros(1, np.float32)}
    save_file(weights, str(model / "weights.safetensors"), metadata={"format": "pt"})
    descriptor = Descriptor.read(path)
    descriptor.flavors = {
        "torch": {
            "class": "torch.nn.modules.linear:Linear",
            "init_args": {"in_features": 2, "out_features": 1},
            "weights": ["weights.safetensors"],
            "aliases": {},
            "dtypes": ["float32"],
            "torch_version": version("torch"),
            "safetensors_version": version("safetensors"),
        }
    }
    descriptor.loader = "torch"
    descriptor.files = build_manifest(path)
    descriptor.write(path)
    return path


def _reseal(path: Path) -> None:
    """What an attacker does after editing files: recompute the manifest, rewrite the yaml."""
    from modelpack.descriptor import Descriptor, build_manifest

    descriptor = Descriptor.read(path)
    descriptor.files = build_manifest(path)
    descriptor.write(path)


def _edit_config(path: Path, **changes: Any) -> None:
    from modelpack.descriptor import Descriptor

    descriptor = Descriptor.read(path)
    config = descriptor.flavors[descriptor.loader]
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    descriptor.write(path)


# ---------------------------------------------------------------------------------------------
# skops archives crafted by hand (skops 0.16, protocol 2; see skops/io/_general.py)


def _json(value: Any) -> dict[str, Any]:
    return {
        "__class__": "str",
        "__module__": "builtins",
        "__loader__": "JsonNode",
        "content": json.dumps(value),
        "is_json": True,
    }


def _seq(items: list[dict[str, Any]], kind: str = "tuple") -> dict[str, Any]:
    loader = {"tuple": "TupleNode", "list": "ListNode"}[kind]
    return {"__class__": kind, "__module__": "builtins", "__loader__": loader, "content": items}


def _str_type() -> dict[str, Any]:
    return {"__class__": "str", "__module__": "builtins", "__loader__": "TypeNode"}


def _dict(content: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "__class__": "dict",
        "__module__": "builtins",
        "__loader__": "DictNode",
        "content": content,
        "key_types": _seq([_str_type() for _ in content], "list"),
    }


def _call(dotted: str, *args: dict[str, Any]) -> dict[str, Any]:
    """``module.function(*args)`` when constructed: skops' ConstructorFromReduceNode."""
    module, _, name = dotted.rpartition(".")
    return {
        "__class__": name,
        "__module__": module,
        "__loader__": "ConstructorFromReduceNode",
        "content": _seq(list(args)),
    }


def _type(dotted: str) -> dict[str, Any]:
    module, _, name = dotted.rpartition(".")
    return {"__class__": name, "__module__": module, "__loader__": "TypeNode"}


class _Exec:
    """Pickles as ``exec(code)``: what a pickle payload looks like."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


def _pickle_payload(marker: Path) -> bytes:
    return pickle.dumps(_Exec(payload_code(marker)), protocol=2)


def _npy(data: bytes) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.frombuffer(data, dtype=np.uint8), allow_pickle=False)
    return buf.getvalue()


def _payload_numpy_runstring(marker: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    # numpy/testing/_private/utils.py: def runstring(astr, dict): exec(astr, dict)
    node = _call("numpy.testing._private.utils.runstring", _json(payload_code(marker)), _json({}))
    return node, {}


def _payload_scipy_nonlin_wrapper(marker: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    # scipy/optimize/_nonlin.py: _nonlin_wrapper(name, jac) formats ``name`` into the source
    # "def %(name)s(F, xin, ...)" and exec's it: a name that closes the def runs top-level code.
    name = f"pwned(): pass\n{payload_code(marker)}\ndef wrapper"
    node = _call(
        "scipy.optimize._nonlin._nonlin_wrapper",
        _json(name),
        _type("scipy.optimize._nonlin.BroydenFirst"),
    )
    return node, {}


def _payload_sklearn_run_script(marker: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    # sklearn/utils/_testing.py: runs ``source_code`` with sys.executable in a subprocess.
    node = _call(
        "sklearn.utils._testing.assert_run_python_script_without_output",
        _json(payload_code(marker)),
    )
    return node, {}


def _payload_sklearn_check_output(marker: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    # sklearn/utils/_testing.py does `from subprocess import check_output`: the re-export is
    # named sklearn.utils._testing.check_output, so "trust everything under sklearn" trusts it.
    argv = [_json(a) for a in payload_argv(marker)]
    return _call("sklearn.utils._testing.check_output", _seq(argv, "list")), {}


def _payload_scipy_setstate(marker: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    # An ObjectNode, no function at all: skops calls __setstate__ of the instance it makes, and
    # scipy's rv_generic.__setstate__ -> _attach_argparser_methods exec's _parse_arg_template.
    node = {
        "__class__": "norm_gen",
        "__module__": "scipy.stats._continuous_distns",
        "__loader__": "ObjectNode",
        "content": _dict({"_parse_arg_template": _json(payload_code(marker))}),
    }
    return node, {}


def _payload_pickle_ndarray(marker: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    # NdArrayNode calls its __module__.__class__ on the array it reads when that is not
    # numpy.ndarray: "pickle.loads" gets a uint8 array, which is a bytes-like object.
    node = {
        "__class__": "loads",
        "__module__": "pickle",
        "__loader__": "NdArrayNode",
        "type": "numpy",
        "file": "payload.npy",
    }
    return node, {"payload.npy": _npy(_pickle_payload(marker))}


def _payload_pickle_numpy_load(marker: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    # numpy.load(BytesIO(pickle), None, True): allow_pickle=True and no .npy magic means
    # pickle.load. BytesIO is taken from scipy, which imports it at module level, so every
    # name in the file starts with numpy or scipy.
    stream = _call(
        "scipy.io.matlab._mio5.BytesIO",
        {"__class__": "bytes", "__module__": "builtins", "__loader__": "BytesNode", "file": "p"},
    )
    node = _call("numpy.load", stream, _json(None), _json(True))
    return node, {"p": _pickle_payload(marker)}


def _hide_in_estimator(
    path: Path, payload: Callable[[Path], tuple[dict[str, Any], dict[str, bytes]]], marker: Path
) -> None:
    """Add the payload as one more attribute of the saved estimator, in its own model.skops."""
    from modelpack.descriptor import Descriptor

    config = Descriptor.read(path).flavors["sklearn"]
    file = path / "model" / str(config.get("file", "model.skops"))
    with zipfile.ZipFile(file) as src:
        entries = {n: src.read(n) for n in src.namelist()}
    schema = json.loads(entries.pop("schema.json"))
    state = schema["content"]  # the estimator's __dict__: a DictNode
    node, extra = payload(marker)
    state["content"][PAYLOAD_KEY] = node
    state["key_types"]["content"].append(_str_type())  # one key type per key, or it is skipped
    with zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as dst:
        for name, data in {**entries, **extra}.items():
            dst.writestr(name, data)
        dst.writestr("schema.json", json.dumps(schema, indent=2))


def _skops_builder(
    payload: Callable[[Path], tuple[dict[str, Any], dict[str, bytes]]], name: str
) -> Callable[[Path, Path], Built]:
    def build(tmp: Path, marker: Path) -> Built:
        path = _save_sklearn(tmp / name)
        _hide_in_estimator(path, payload, marker)
        # A real save records what get_untrusted_types listed; the attacker keeps it as it was
        # (nothing), so a loader that believes the descriptor is fooled.
        _reseal(path)
        return Built(path)

    return build


# ---------------------------------------------------------------------------------------------
# python flavor: the "class" is any callable, called with init_args as keywords


def _python_callable(name: str, target: str, init_args: Callable[[Path], dict[str, Any]]) -> Any:
    def build(tmp: Path, marker: Path) -> Built:
        path = _save_python(tmp / name)
        _edit_config(path, **{"class": target, "init_args": init_args(marker)})
        _reseal(path)
        return Built(path)

    return build


_EVIL_MODULE = """\
{code}


class Model:
    def predict(self, data):
        return data
"""


def _write_evil_module(folder: Path, module: str, marker: Path, torch: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    source = _EVIL_MODULE.format(code=payload_code(marker))
    if torch:
        source += "\n\nimport torch\n\n\nclass Net(torch.nn.Linear):\n    pass\n"
    file = folder / f"{module}.py"
    file.write_text(source, encoding="utf-8")
    return file


PY_SHIPPED_MODULE = "modelpack_hostile_shipped"
PY_IMPORTLIB_MODULE = "modelpack_hostile_importlib"
TORCH_INSTALLED_MODULE = "modelpack_hostile_installed"
TORCH_SHIPPED_MODULE = "modelpack_hostile_torch_code"


def _build_python_shipped(tmp: Path, marker: Path) -> Built:
    path = _save_python(tmp / "python-shipped-code")
    _write_evil_module(path / "model" / "code", PY_SHIPPED_MODULE, marker)
    _edit_config(
        path,
        **{
            "class": f"{PY_SHIPPED_MODULE}:Model",
            "init_args": {},
            "code_paths": [f"{PY_SHIPPED_MODULE}.py"],
        },
    )
    _reseal(path)
    return Built(path)


def _build_python_importlib(tmp: Path, marker: Path) -> Built:
    path = _save_python(tmp / "python-importlib")
    _write_evil_module(path / "model" / "code", PY_IMPORTLIB_MODULE, marker)
    _edit_config(
        path,
        **{
            "class": "importlib:import_module",
            "init_args": {"name": PY_IMPORTLIB_MODULE},
            "code_paths": [f"{PY_IMPORTLIB_MODULE}.py"],
        },
    )
    _reseal(path)
    return Built(path)


# ---------------------------------------------------------------------------------------------
# torch flavor: the class path is imported before anything checks it is an nn.Module


def _build_torch_installed(tmp: Path, marker: Path) -> Built:
    site = tmp / "torch-installed-site"  # stands for an installed package with side effects
    _write_evil_module(site, TORCH_INSTALLED_MODULE, marker, torch=True)
    path = _save_torch(tmp / "torch-installed-module")
    _edit_config(path, **{"class": f"{TORCH_INSTALLED_MODULE}:Net"})
    _reseal(path)
    return Built(path, pythonpath=(site,))


def _build_torch_shipped(tmp: Path, marker: Path) -> Built:
    path = _save_torch(tmp / "torch-shipped-code")
    _write_evil_module(path / "model" / "code", TORCH_SHIPPED_MODULE, marker, torch=True)
    _edit_config(path, **{"class": f"{TORCH_SHIPPED_MODULE}:Net", "code": "code"})
    _reseal(path)
    return Built(path)


# ---------------------------------------------------------------------------------------------
# case 6: modelpack.yaml edited after save, nothing recomputed


def _yaml_edit(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    file = path / "modelpack.yaml"
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    edit(data)
    file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _build_tampered_method(tmp: Path, marker: Path) -> Built:
    path = _save_sklearn(tmp / "tampered-predict-method")
    _yaml_edit(path, lambda d: d["flavors"]["sklearn"].update(predict_method="decision_function"))
    return Built(path)


def _build_tampered_signature(tmp: Path, marker: Path) -> Built:
    path = _save_sklearn(tmp / "tampered-signature")

    def edit(data: dict[str, Any]) -> None:
        for column in data["signature"]["inputs"]["columns"]:
            column["type"] = "string"

    _yaml_edit(path, edit)
    return Built(path)


# ---------------------------------------------------------------------------------------------

_NUMPY_RUNSTRING = "numpy.testing._private.utils.runstring"
_SCIPY_NONLIN = "scipy.optimize._nonlin._nonlin_wrapper"
_SKLEARN_RUN = "sklearn.utils._testing.assert_run_python_script_without_output"
_SKLEARN_CHECK_OUTPUT = "sklearn.utils._testing.check_output"
_SCIPY_NORM_GEN = "scipy.stats._continuous_distns.norm_gen"


def _kw(**values: Any) -> Callable[[Path], dict[str, Any]]:
    def make(marker: Path) -> dict[str, Any]:
        return {k: v(marker) if callable(v) else v for k, v in values.items()}

    return make


CORPUS: tuple[Hostile, ...] = (
    # 1. skops: a reduce step that calls a function that runs code
    Hostile(
        "skops-numpy-runstring",
        1,
        "sklearn",
        _skops_builder(_payload_numpy_runstring, "skops-numpy-runstring"),
        names=(_NUMPY_RUNSTRING,),
        trust=(_NUMPY_RUNSTRING,),
    ),
    Hostile(
        "skops-scipy-nonlin-wrapper",
        1,
        "sklearn",
        _skops_builder(_payload_scipy_nonlin_wrapper, "skops-scipy-nonlin-wrapper"),
        names=(_SCIPY_NONLIN,),
        trust=(_SCIPY_NONLIN, "scipy.optimize._nonlin.BroydenFirst"),
    ),
    Hostile(
        "skops-sklearn-run-script",
        1,
        "sklearn",
        _skops_builder(_payload_sklearn_run_script, "skops-sklearn-run-script"),
        names=(_SKLEARN_RUN,),
        trust=(_SKLEARN_RUN,),
    ),
    Hostile(
        "skops-sklearn-check-output",
        1,
        "sklearn",
        _skops_builder(_payload_sklearn_check_output, "skops-sklearn-check-output"),
        names=(_SKLEARN_CHECK_OUTPUT,),
        trust=(_SKLEARN_CHECK_OUTPUT,),
    ),
    Hostile(
        "skops-scipy-setstate",
        1,
        "sklearn",
        _skops_builder(_payload_scipy_setstate, "skops-scipy-setstate"),
        names=(_SCIPY_NORM_GEN,),
        trust=(_SCIPY_NORM_GEN,),
    ),
    # 2. skops smuggling a pickle
    Hostile(
        "skops-pickle-ndarray-loads",
        2,
        "sklearn",
        _skops_builder(_payload_pickle_ndarray, "skops-pickle-ndarray-loads"),
        names=("pickle.loads",),
        trust=("pickle.loads",),
    ),
    Hostile(
        "skops-pickle-numpy-load",
        2,
        "sklearn",
        _skops_builder(_payload_pickle_numpy_load, "skops-pickle-numpy-load"),
        names=("numpy.load", "scipy.io.matlab._mio5.BytesIO"),
        trust=("numpy.load", "scipy.io.matlab._mio5.BytesIO"),
    ),
    # 3. python flavor: a callable in place of a class
    Hostile(
        "python-subprocess-popen",
        3,
        "python",
        _python_callable("python-subprocess-popen", "subprocess:Popen", _kw(args=payload_argv)),
        names=("subprocess:Popen", "subprocess.Popen"),
        async_payload=True,
    ),
    Hostile(
        "python-os-system",
        3,
        "python",
        # os.system(command, /) takes no keyword: refused by name, harmless as named.
        _python_callable("python-os-system", "os:system", _kw(command=payload_code)),
        names=("os:system", "os.system"),
        runs_when_trusted=False,
    ),
    Hostile(
        "python-os-spawnv",
        3,
        "python",
        # the os-module equivalent that takes keywords: spawnv(mode=P_WAIT, file, args)
        _python_callable(
            "python-os-spawnv",
            "os:spawnv",
            _kw(mode=0, file=lambda m: sys.executable, args=payload_argv),
        ),
        names=("os:spawnv", "os.spawnv"),
    ),
    Hostile(
        "python-builtins-eval",
        3,
        "python",
        # eval(source, /, ...) takes no keyword source: refused by name, harmless as named.
        _python_callable("python-builtins-eval", "builtins:eval", _kw(source=payload_code)),
        names=("builtins:eval", "builtins.eval"),
        runs_when_trusted=False,
    ),
    Hostile(
        "python-timeit-exec",
        3,
        "python",
        # the keyword-callable equivalent of eval/exec: timeit(stmt=..., number=1) exec's stmt
        _python_callable("python-timeit-exec", "timeit:timeit", _kw(stmt=payload_code, number=1)),
        names=("timeit:timeit", "timeit.timeit"),
    ),
    Hostile(
        "python-importlib",
        3,
        "python",
        _build_python_importlib,
        names=("importlib:import_module", "importlib.import_module"),
        modules=(PY_IMPORTLIB_MODULE,),
    ),
    # 4. python flavor: shipped code with an import-time side effect
    Hostile(
        "python-shipped-code",
        4,
        "python",
        _build_python_shipped,
        names=(PY_SHIPPED_MODULE,),
        modules=(PY_SHIPPED_MODULE,),
    ),
    # 5. torch flavor: the class path imports a module with a side effect
    Hostile(
        "torch-installed-module",
        5,
        "torch",
        _build_torch_installed,
        names=(TORCH_INSTALLED_MODULE,),
        modules=(TORCH_INSTALLED_MODULE,),
    ),
    Hostile(
        "torch-shipped-code",
        5,
        "torch",
        _build_torch_shipped,
        names=(TORCH_SHIPPED_MODULE, "code/"),
        modules=(TORCH_SHIPPED_MODULE,),
    ),
    # 6. modelpack.yaml edited after save
    Hostile(
        "tampered-predict-method",
        6,
        "sklearn",
        _build_tampered_method,
        names=("modelpack.yaml",),
        integrity=True,
    ),
    Hostile(
        "tampered-signature",
        6,
        "sklearn",
        _build_tampered_signature,
        names=("modelpack.yaml",),
        integrity=True,
    ),
)

BY_ID = {h.id: h for h in CORPUS}


@dataclass
class Corpus:
    """Every entry built under one folder, sharing one default marker per entry."""

    root: Path
    built: dict[str, Built] = field(default_factory=dict)
    markers: dict[str, Path] = field(default_factory=dict)

    def pythonpath(self, entry_id: str) -> list[str]:
        return [str(p) for p in self.built[entry_id].pythonpath]


def build_corpus(root: Path, entries: tuple[Hostile, ...] = CORPUS) -> Corpus:
    corpus = Corpus(root)
    for entry in entries:
        tmp = root / entry.id
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        marker = root / "markers" / f"{entry.id}.marker"
        marker.parent.mkdir(exist_ok=True)
        corpus.markers[entry.id] = marker
        corpus.built[entry.id] = entry.build(tmp, marker)
    return corpus


# ---------------------------------------------------------------------------------------------
# The driver: one process that tries every surface on every entry (each Python process here
# spends seconds importing scikit-learn and torch, so one process does what 100 would).
#
#   python -m tests.security._hostile PLAN.json OUT.json
#
# PLAN: {"root": corpus folder, "entries": {id: {"path", "pythonpath"}}, "markers": folder,
#        "inputs": {"json", "csv"}, "registry": {id: uri}, "tracking_uri": url or null}
# Every attempt gets its own marker (MODELPACK_HOSTILE_MARKER), all checked at the end, so a
# payload that finishes later (a child process) is still seen.

CLI_COMMANDS = ("predict", "batch", "convert", "verify", "scan")


def _cli_argv(command: str, model: str, plan: dict[str, Any], out: Path) -> list[str]:
    inputs = plan["inputs"]
    return {
        "predict": ["predict", "-m", model, "-i", inputs["json"]],
        "batch": ["batch", model, inputs["csv"], str(out / "out.csv"), "--no-progress"],
        "convert": ["convert", model, "--to", "onnx", "-o", str(out / "onnx")],
        "verify": ["verify", model],
        "scan": ["scan", model],
    }[command]


def _error_fields(exc: BaseException) -> dict[str, Any]:
    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "mro": [c.__name__ for c in type(exc).__mro__],
        "code": getattr(exc, "code", None),
        "message": str(exc),
    }


class _Attempts:
    def __init__(self, markers: Path) -> None:
        self.markers = markers
        self.results: dict[str, dict[str, Any]] = {}

    def marker(self, key: str) -> Path:
        return self.markers / f"{key.replace('/', '_')}.marker"

    def run(self, key: str, watch: tuple[str, ...], fn: Callable[[], dict[str, Any]]) -> None:
        import os
        import traceback

        os.environ[MARKER_ENV] = str(self.marker(key))
        path, before = list(sys.path), set(sys.modules)
        try:
            result = fn()
        except BaseException as exc:  # the surface's own answer, whatever it is
            result = {"error": _error_fields(exc), "traceback": traceback.format_exc()}
        finally:
            os.environ.pop(MARKER_ENV, None)
        new = set(sys.modules) - before
        result["imported"] = sorted(m for m in new if m.split(".")[0] in watch)
        for name in new:  # leave the next attempt a process as clean as this one found it
            if name.split(".")[0] in watch:
                del sys.modules[name]
        sys.path[:] = path
        self.results[key] = result

    def finish(self) -> dict[str, dict[str, Any]]:
        import time

        time.sleep(0.5)  # a payload in a child process lands within this
        for key, result in self.results.items():
            result["marker"] = self.marker(key).exists()
        return self.results


def _load(uri: str, **kwargs: Any) -> dict[str, Any]:
    import modelpack

    model = modelpack.load(uri, **kwargs)
    return {"loaded": type(model).__name__}


def _cli(argv: list[str]) -> dict[str, Any]:
    import contextlib
    import traceback

    from modelpack.cli import main

    out, err = io.StringIO(), io.StringIO()
    rc: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what the interpreter prints for an uncaught exception
            traceback.print_exc()
            rc = 1
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}


def drive(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    import os

    attempts = _Attempts(Path(plan["markers"]))
    attempts.markers.mkdir(parents=True, exist_ok=True)
    os.environ.pop("MODELPACK_TRUST", None)
    os.environ.pop("MODELPACK_TRUST_PICKLE", None)
    entries = plan["entries"]
    for entry_id, built in entries.items():
        watch = tuple(BY_ID[entry_id].modules)
        attempts.run(f"load/{entry_id}", watch, functools.partial(_load, built["path"]))
    for entry_id, built in entries.items():
        watch = tuple(BY_ID[entry_id].modules)
        for command in CLI_COMMANDS:
            out = Path(plan["root"]) / "cli-out" / entry_id / command
            out.mkdir(parents=True, exist_ok=True)
            argv = _cli_argv(command, built["path"], plan, out)
            attempts.run(f"cli/{command}/{entry_id}", watch, functools.partial(_cli, argv))
    if plan.get("tracking_uri"):
        os.environ["MODELPACK_TRACKING_URI"] = plan["tracking_uri"]
        for entry_id, uri in plan["registry"].items():
            watch = tuple(BY_ID[entry_id].modules)
            attempts.run(f"registry/{entry_id}", watch, functools.partial(_load, uri))
        os.environ.pop("MODELPACK_TRACKING_URI")
    # Last, as these do run the payloads: trust given is trust used.
    for entry_id, built in entries.items():
        entry = BY_ID[entry_id]
        if entry.case in (3, 4) and entry.runs_when_trusted:
            attempts.run(
                f"trust/{entry_id}", (), functools.partial(_load, built["path"], trust=True)
            )
        if entry.case in (1, 2):
            names = list(entry.trust)
            load = functools.partial(_load, built["path"], trust=names)
            attempts.run(f"trust-list/{entry_id}", (), load)
    if "python-os-spawnv" in entries:
        os.environ["MODELPACK_TRUST"] = "1"
        spawnv = entries["python-os-spawnv"]["path"]
        attempts.run("trust-env/python-os-spawnv", (), lambda: _load(spawnv))
        os.environ.pop("MODELPACK_TRUST")
    return attempts.finish()


def main(argv: list[str]) -> None:
    plan = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    for folder in {p for e in plan["entries"].values() for p in e["pythonpath"]}:
        sys.path.append(folder)  # the "installed" packages of the torch entries
    Path(argv[1]).write_text(json.dumps(drive(plan), indent=1), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
