"""Any nn.Module made of trusted parts saves with ``modelpack.save`` and loads in a fresh process.

The zoo (tests/flavors/torch_zoo_models.py): torch.nn layers and containers, user classes built
the way torchvision builds its models, Hugging Face transformers models from tiny configs,
TorchScript modules and torch.export programs. Each is built and saved once per module, with no
constructor arguments given to modelpack; ONE fresh interpreter (no ``MODELPACK_TRUST*``
variables) then loads every model with exactly the trust its case names (none for torch.nn,
transformers and TorchScript; the user classes by exact name; ``True`` for an ExportedProgram)
and predicts on the example. Each case compares that answer with the in-process module's,
bit for bit: both run the same kernels on the same CPU, in inference mode.

Outputs are compared as flat sequences of arrays, in order: a tensor is one array, a tuple or
a dict (a transformers ModelOutput too) its items depth first, ``None`` nothing. Key names are
not compared. What modelpack answers today: ``{"output_0": ..., "output_1": ...}`` for a tuple,
nested dicts for nested tuples (an LSTM's ``(out, (h, c))``), the ModelOutput's field names
(``last_hidden_state``, ``pooler_output``, ``logits``) for transformers.

Also here: the refusals (a user class with no trust, a user class whose child class is not
trusted, an ExportedProgram without ``trust=True``), ONNX conversion of a representative subset,
and three models served over HTTP.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

import modelpack
from modelpack.convert import to_onnx
from modelpack.errors import ConversionError
from tests.conftest import free_port
from tests.flavors.torch_zoo_models import CASES, HERE, ZooCase
from tests.servers.conftest import cli_server

ROOT = Path(__file__).resolve().parents[2]
BY_ID = {case.id: case for case in CASES}


@dataclass
class Outcome:
    case: ZooCase
    example: Any = None  # numpy: an array or a dict of arrays
    expected: list[np.ndarray] = field(default_factory=list)
    path: Path | None = None
    error: str | None = None  # where it went wrong first: building, saving, loading
    got: list[np.ndarray] = field(default_factory=list)
    got_keys: list[str] = field(default_factory=list)
    after_save: list[np.ndarray] = field(default_factory=list)  # the module, once saved
    native_type: str | None = None  # the type of what the fresh process loaded (unwrap())


def flatten(out: Any) -> list[tuple[str, np.ndarray]]:
    """(key path, array) pairs, depth first: a tensor or array is one, None is none."""
    pairs: list[tuple[str, np.ndarray]] = []

    def walk(value: Any, key: str) -> None:
        if value is None:
            return
        if isinstance(value, torch.Tensor):
            pairs.append((key, value.detach().cpu().numpy()))
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                walk(v, f"{key}.{i}" if key else str(i))
        else:
            pairs.append((key or "output", np.asarray(value)))

    walk(out, "")
    return pairs


def _numpy(example: Any) -> Any:
    if isinstance(example, Mapping):
        return {str(k): v.detach().cpu().numpy() for k, v in example.items()}
    return example.detach().cpu().numpy()


def _native_output(model: Any, example: Any) -> Any:
    module = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    with torch.inference_mode():
        if isinstance(example, Mapping):
            return module(**example)
        return module(example)


def _trust_json(trust: Any) -> Any:
    return list(trust) if isinstance(trust, tuple) else trust


# Runs in a fresh interpreter. The refusal probes run first, before any zoo module is imported,
# so that "was the class imported before the refusal" can be told.
_LOADER = """
import json, sys, traceback
from pathlib import Path
import numpy as np
import modelpack

root = Path(sys.argv[1])
ZOO = "tests.flavors.torch_zoo_models"


def flat(value, key, acc):
    if value is None:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            flat(v, f"{key}.{k}" if key else str(k), acc)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            flat(v, f"{key}.{i}" if key else str(i), acc)
    else:
        acc.append((key or "output", np.asarray(value)))


def read_inputs(file):
    with np.load(file, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    return data["__array__"] if list(data) == ["__array__"] else data


manifest = json.loads((root / "manifest.json").read_text())
probes = {}
for probe in manifest["probes"]:
    before = ZOO in sys.modules
    try:
        modelpack.load(probe["path"], trust=probe["trust"]).predict(
            read_inputs(root / "inputs" / f"{probe['case']}.npz")
        )
        probes[probe["id"]] = {"error": None}
    except BaseException as exc:
        probes[probe["id"]] = {
            "error": type(exc).__name__,
            "message": str(exc),
            "zoo_imported": ZOO in sys.modules and not before,
        }

cases = {}
for entry in manifest["cases"]:
    name = entry["id"]
    try:
        model = modelpack.load(entry["path"], trust=entry["trust"])
        result = model.predict(read_inputs(root / "inputs" / f"{name}.npz"))
        pairs = []
        flat(result, "", pairs)
        np.savez(root / "out" / f"{name}.npz", *[a for _, a in pairs])
        try:
            native = type(model.unwrap())
            native = f"{native.__module__}.{native.__qualname__}"
        except Exception as exc:
            native = f"unwrap() failed: {type(exc).__name__}: {exc}"
        cases[name] = {"error": None, "keys": [k for k, _ in pairs], "native": native}
    except BaseException as exc:
        cases[name] = {
            "error": f"{type(exc).__name__}: {exc}\\n{traceback.format_exc(limit=-4)}"
        }
(root / "outcome.json").write_text(json.dumps({"cases": cases, "probes": probes}))
"""

# Each probe loads a saved case with the trust given here, in the fresh process.
PROBES = {
    "user_class_no_trust": ("resnet_like", None),
    "user_class_top_only": ("resnet_like", [f"{HERE}.ResNetLike"]),
    "exported_no_trust": ("exported", None),
    "exported_named_trust": ("exported", [f"{HERE}.MobileNetLike"]),
}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("torch_zoo")
    for sub in ("models", "inputs", "out"):
        (root / sub).mkdir()
    outcomes = {case.id: Outcome(case) for case in CASES}
    entries = []
    for case in CASES:
        outcome = outcomes[case.id]
        try:
            model, example = case.build()
            outcome.expected = [a for _, a in flatten(_native_output(model, example))]
            outcome.example = _numpy(example)
        except Exception as exc:
            outcome.error = f"building failed: {type(exc).__name__}: {exc}"
            continue
        data = (
            outcome.example if isinstance(outcome.example, dict) else {"__array__": outcome.example}
        )
        np.savez(root / "inputs" / f"{case.id}.npz", **data)
        try:
            outcome.path = modelpack.save(
                model, root / "models" / case.id, input_example=outcome.example
            )
        except Exception as exc:
            outcome.error = f"saving failed: {type(exc).__name__}: {exc}"
            continue
        outcome.after_save = [a for _, a in flatten(_native_output(model, example))]
        entries.append({"id": case.id, "path": str(outcome.path), "trust": _trust_json(case.trust)})
    saved = {e["id"]: e["path"] for e in entries}
    probes = [
        {"id": pid, "case": cid, "path": saved[cid], "trust": trust}
        for pid, (cid, trust) in PROBES.items()
        if cid in saved
    ]
    (root / "manifest.json").write_text(json.dumps({"cases": entries, "probes": probes}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPACK_TRUST")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", _LOADER, str(root)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"the loading process failed:\n{done.stderr[-4000:]}"
    result = json.loads((root / "outcome.json").read_text())
    for entry in entries:
        outcome = outcomes[entry["id"]]
        loaded = result["cases"].get(entry["id"], {"error": "no outcome recorded"})
        if loaded["error"] is not None:
            outcome.error = f"loading in a fresh process failed: {loaded['error']}"
            continue
        with np.load(root / "out" / f"{entry['id']}.npz", allow_pickle=False) as npz:
            outcome.got = [npz[f"arr_{i}"] for i in range(len(npz.files))]
        outcome.got_keys = loaded["keys"]
        outcome.native_type = loaded["native"]
    return {"cases": outcomes, "probes": result["probes"], "root": root}


def _case(zoo: dict[str, Any], case_id: str, *, loaded: bool = True) -> Outcome:
    outcome: Outcome = zoo["cases"][case_id]
    if outcome.error is not None and (loaded or outcome.path is None):
        pytest.fail(f"{case_id}: {outcome.error}", pytrace=False)
    return outcome


def assert_same(got: list[np.ndarray], expected: list[np.ndarray], what: str) -> None:
    assert len(got) == len(expected), f"{what}: {len(got)} outputs, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g.dtype == e.dtype, f"{what}: output {i} is {g.dtype}, expected {e.dtype}"
        assert g.shape == e.shape, f"{what}: output {i} has shape {g.shape}, expected {e.shape}"
        np.testing.assert_array_equal(g, e, err_msg=f"{what}: output {i}")


@pytest.mark.parametrize("case_id", [pytest.param(c.id, id=c.id) for c in CASES])
def test_loads_in_a_fresh_process_and_answers_the_same(zoo: dict[str, Any], case_id: str) -> None:
    outcome = _case(zoo, case_id)
    assert_same(outcome.after_save, outcome.expected, f"{case_id}, in process once saved")
    assert_same(outcome.got, outcome.expected, f"{case_id} (answered {outcome.got_keys})")


@pytest.mark.parametrize(
    "case_id", [pytest.param(c.id, id=c.id) for c in CASES if c.kind == "torchscript"]
)
def test_torchscript_loads_as_torchscript(zoo: dict[str, Any], case_id: str) -> None:
    outcome = _case(zoo, case_id)
    assert outcome.native_type is not None
    assert outcome.native_type.startswith("torch.jit."), outcome.native_type


def _probe(zoo: dict[str, Any], probe_id: str) -> dict[str, Any]:
    case_id = PROBES[probe_id][0]
    _case(zoo, case_id, loaded=False)  # the case saved (else that is the failure to report)
    probe: dict[str, Any] = zoo["probes"][probe_id]
    return probe


def test_a_user_class_without_trust_is_refused_naming_it(zoo: dict[str, Any]) -> None:
    probe = _probe(zoo, "user_class_no_trust")
    assert probe["error"] == "UntrustedModelError", probe
    assert f"{HERE}.ResNetLike" in probe["message"]
    assert "trust" in probe["message"]
    assert not probe["zoo_imported"], "the user module was imported before the refusal"


def test_trusting_the_top_class_does_not_trust_its_children(zoo: dict[str, Any]) -> None:
    probe = _probe(zoo, "user_class_top_only")
    assert probe["error"] == "UntrustedModelError", probe
    assert f"{HERE}.BasicBlock" in probe["message"]
    assert f"{HERE}.ResNetLike" not in probe["message"]  # granted: not among the refused


@pytest.mark.parametrize("probe_id", ["exported_no_trust", "exported_named_trust"])
def test_an_exported_program_needs_whole_trust(zoo: dict[str, Any], probe_id: str) -> None:
    probe = _probe(zoo, probe_id)
    assert probe["error"] == "UntrustedModelError", probe


# -- ONNX ---------------------------------------------------------------------------------------


def _have(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


# The whole ONNX part: skipped where the onnx extra is not installed.
needs_onnx = pytest.mark.skipif(
    not _have("onnx", "onnxruntime", "onnxscript"), reason="needs modelpack[onnx]"
)

# A representative subset, and what each does today (torch 2.13, onnx 1.x, onnxruntime 1.2x):
# None converts and passes the parity gate; a string is part of the one-line ConversionError it
# is refused with. Every case here converts (the LSTM's nested (out, (h, c)) included).
# Every case converts and passes the parity gate, except an exported program with a static
# batch size: the gate's rows have other batch sizes, and the refusal says so in one line.
ONNX_CASES: dict[str, str | None] = {
    **{case.id: None for case in CASES},
    "exported": "Guard failed",
}


@needs_onnx
@pytest.mark.parametrize("case_id", list(ONNX_CASES))
def test_onnx_conversion_passes_parity_or_refuses_in_one_line(
    zoo: dict[str, Any], case_id: str, tmp_path: Path
) -> None:
    outcome = _case(zoo, case_id, loaded=False)
    assert outcome.path is not None
    refusal = ONNX_CASES[case_id]
    if refusal is not None:
        with pytest.raises(ConversionError) as err:
            to_onnx(outcome.path, tmp_path / "onnx", trust=_trust_json(outcome.case.trust))
        message = str(err.value)
        assert refusal in message
        assert "\n" not in message.strip(), f"not one line:\n{message}"
        return
    try:
        out = to_onnx(outcome.path, tmp_path / "onnx", trust=_trust_json(outcome.case.trust))
    except ConversionError as exc:  # one line either way: say so, and what it said
        message = str(exc)
        assert "\n" not in message.strip(), f"not one line:\n{message}"
        pytest.fail(f"{case_id} converted before, now refused: {message}", pytrace=False)
    got = modelpack.load(out, flavor="onnx").predict(outcome.example)
    got_arrays = [a for _, a in flatten(got)]
    assert len(got_arrays) == len(outcome.expected)
    for g, e in zip(got_arrays, outcome.expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


# -- HTTP ---------------------------------------------------------------------------------------


def _post(url: str, example: Any) -> Any:
    body = (
        {"inputs": {k: v.tolist() for k, v in example.items()}}
        if isinstance(example, dict)
        else {"inputs": example.tolist()}
    )
    response = httpx.post(url + "/invocations", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def _json_arrays(predictions: Any, expected: list[np.ndarray]) -> list[np.ndarray]:
    # JSON numbers as written from float32 round-trip exactly through float64 back to float32
    def walk(value: Any) -> Iterator[Any]:
        if isinstance(value, dict):
            for v in value.values():
                yield from walk(v)
        else:
            yield value

    leaves = list(walk(predictions)) if isinstance(predictions, dict) else [predictions]
    assert len(leaves) == len(expected), f"{len(leaves)} outputs, expected {len(expected)}"
    return [np.asarray(v, dtype=e.dtype) for v, e in zip(leaves, expected, strict=True)]


# One of each family: torch.nn (a tensor, and an LSTM's nested tuple), transformers,
# TorchScript, and torch.export (granted as its loader unpickles).
@pytest.mark.parametrize("case_id", ["seq_conv", "lstm", "hf_bert", "jit_script", "exported"])
def test_served_in_process_answers_the_same(zoo: dict[str, Any], case_id: str) -> None:
    from tests.servers.conftest import serve

    outcome = _case(zoo, case_id, loaded=False)
    assert outcome.path is not None
    granted = True if outcome.case.trust is True else None
    with serve(outcome.path, trust=granted) as url:
        predictions = _post(url, outcome.example)
    assert_same(_json_arrays(predictions, outcome.expected), outcome.expected, case_id)


def test_a_user_class_served_by_the_cli_with_trust_types(zoo: dict[str, Any]) -> None:
    outcome = _case(zoo, "resnet_like", loaded=False)
    assert outcome.path is not None and isinstance(outcome.case.trust, tuple)
    flags = [arg for name in outcome.case.trust for arg in ("--trust-type", name)]
    port = free_port()
    untrusted = ("MODELPACK_TRUST", "MODELPACK_TRUST_PICKLE")  # only the flags grant trust
    served = cli_server(
        str(outcome.path), *flags, "--port", str(port), port=port, drop_env=untrusted
    )
    with served as (_, url, _):
        predictions = _post(url, outcome.example)
    assert_same(_json_arrays(predictions, outcome.expected), outcome.expected, "resnet_like")
