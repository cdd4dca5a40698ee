"""The parity gate of conversions: inputs to compare on, and the comparison itself.

The inputs are the model's input example plus rows sampled from it and perturbed within the
signature's dtypes, so a converted model is checked beyond the one row it was exported with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modelpack.errors import ConversionError, ParityError
from modelpack.signature import ColSpec, Signature, TensorSpec

Diffs = dict[str, dict[str, Any]]
BATCH_ROWS = 64


def _rows(data: Any, start: int, stop: int) -> Any:
    if isinstance(data, pd.DataFrame):
        return data.iloc[start:stop].reset_index(drop=True)
    if isinstance(data, Mapping):
        return {k: v[start:stop] for k, v in data.items()}
    return data[start:stop]


def parity_inputs(signature: Signature, example: Any, *, rows: int, seed: int = 0) -> list[Any]:
    """The enforced example (when there is one) and ``rows`` generated rows."""
    rng = np.random.default_rng(seed)
    inputs = [] if example is None else [signature.enforce(example)]
    if rows > 0:
        if signature.inputs.is_tensor:
            generated: Any = _tensor_rows(signature.inputs.tensors, example, rows, rng)
        else:
            generated = _column_rows(signature.inputs.columns, example, rows, rng)
        # In batches of a size every model takes (an exported program may cap its batch).
        for start in range(0, rows, BATCH_ROWS):
            inputs.append(signature.enforce(_rows(generated, start, start + BATCH_ROWS)))
    if not inputs:
        raise ConversionError("nothing to compare on: the model has no input example")
    return inputs


def _perturb(values: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    picked = values[idx]
    if values.dtype.kind != "f" or not picked.size:
        return picked  # labels, ids, categories: only values seen in the example are valid
    finite = np.where(np.isfinite(values), values, 0.0)
    scale = finite.std(axis=0) + 0.05 * np.abs(finite.mean(axis=0)) + 0.05
    noise = rng.normal(size=picked.shape) * scale
    # Within the example's range: a model's domain is often bounded (counts, probabilities).
    low, high = finite.min(axis=0), finite.max(axis=0)
    spread = np.where(high > low, 0.0, scale)  # one value seen: a little room around it
    moved = np.clip(picked + noise, low - spread, high + spread)
    return np.where(np.isfinite(picked), moved, picked).astype(values.dtype)


def _tensor_rows(
    specs: Sequence[TensorSpec], example: Any, rows: int, rng: np.random.Generator
) -> Any:
    names = [s.name or f"input_{i}" for i, s in enumerate(specs)]
    if example is None:
        base = {n: _random(s, rng) for n, s in zip(names, specs, strict=True)}
    elif isinstance(example, Mapping):
        base = {n: np.asarray(example[n]) for n in names}
    else:
        base = {names[0]: np.asarray(example)}
    n = min(len(v) for v in base.values())
    idx = rng.integers(0, n, rows)
    out = {name: _perturb(values, idx, rng) for name, values in base.items()}
    return out if len(specs) > 1 else out[names[0]]


def _random(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(d if d > 0 else 8 for d in spec.shape) or (1,)
    dtype = np.dtype(spec.dtype)
    return rng.normal(size=shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)


def _column_rows(
    specs: Sequence[ColSpec], example: Any, rows: int, rng: np.random.Generator
) -> pd.DataFrame:
    out = {}
    for spec in specs:
        if example is not None and spec.name in example.columns:
            values = example[spec.name].to_numpy()
        elif spec.dtype.startswith("float"):
            values = rng.normal(size=8).astype(spec.dtype)
        elif spec.dtype == "string":
            values = np.array([""], dtype=object)
        else:
            values = np.zeros(1, dtype="int64" if spec.dtype == "object" else spec.dtype)
        # Columns are sampled independently: combinations the example lacks get checked too.
        out[spec.name] = _perturb(values, rng.integers(0, len(values), rows), rng)
    return pd.DataFrame(out)


def as_outputs(out: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Named output arrays; a single output takes the converted graph's only output name."""
    if isinstance(out, Mapping):
        return {str(k): np.asarray(v) for k, v in out.items()}
    return {names[0] if len(names) == 1 else "output": np.asarray(out)}


def compare(
    source: np.ndarray,
    target: np.ndarray,
    rtol: float,
    atol: float,
    ties: np.ndarray | None = None,
) -> dict[str, Any]:
    """``max_abs``, ``max_rel``, ``mismatched`` and ``values`` of ``target`` against ``source``."""
    numeric = "biuf"
    if source.shape != target.shape or (
        (source.dtype.kind in numeric) != (target.dtype.kind in numeric)
    ):
        # A served answer of another shape or kind is a different answer, whatever the values.
        n = float(max(source.size, target.size, 1))
        return {
            "max_abs": math.inf,
            "max_rel": math.inf,
            "mismatched": n,
            "values": n,
            "shape": f"{tuple(target.shape)} {target.dtype} where the source gives "
            f"{tuple(source.shape)} {source.dtype}",
        }
    if source.dtype.kind in numeric and target.dtype.kind in numeric:
        a, b = source.astype(np.float64), target.astype(np.float64)
        both_nan = np.isnan(a) & np.isnan(b)
        with np.errstate(invalid="ignore"):
            diff = np.where(both_nan, 0.0, np.abs(a - b))
        diff = np.where(np.isnan(diff), np.inf, diff)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(diff == 0, 0.0, diff / np.abs(a))
        bad = diff > atol + rtol * np.abs(np.nan_to_num(a))
        max_abs = float(diff.max(initial=0.0))
        max_rel = float(np.nan_to_num(rel, nan=np.inf).max(initial=0.0))
        worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else None
    else:
        bad = source.astype(str) != target.astype(str)
        max_abs = max_rel = 0.0 if not bad.any() else math.inf
        worst = np.unravel_index(int(np.argmax(bad)), bad.shape) if bad.any() else None
    tied = 0
    if ties is not None and bad.ndim == 1 and ties.shape == bad.shape:
        # Rows where the source itself is undecided (two classes exactly equally likely): either
        # label is right, and argmax breaks the tie differently in scikit-learn and ONNX Runtime.
        tied = int(np.count_nonzero(bad & ties))
        bad = bad & ~ties
        if not bad.any():
            max_abs = max_rel = 0.0
    found: dict[str, Any] = {
        "ties": float(tied),
        "max_abs": max_abs,
        "max_rel": max_rel,
        "mismatched": float(np.count_nonzero(bad)),
        "values": float(bad.size),
    }
    if worst is not None and bad.any():
        found["worst"] = (
            f"row {int(worst[0]) if worst else 0}: source {source[worst]!r}, "
            f"converted {target[worst]!r}"
        )
    return found


def _failure(name: str, d: Mapping[str, Any]) -> str:
    if "shape" in d:
        return f"{name}: answers {d['shape']}"
    worst = f", worst {d['worst']}" if "worst" in d else ""
    return (
        f"{name}: max abs diff {d['max_abs']:.3g}, max rel diff {d['max_rel']:.3g} "
        f"({int(d['mismatched'])} of {int(d['values'])} values outside{worst})"
    )


def check(
    source: Callable[[Any], Any],
    target: Callable[[Any], Any],
    inputs: Sequence[Any],
    output_names: Sequence[str],
    *,
    rtol: float,
    atol: float,
    what: str,
    ties: Callable[[Any], np.ndarray | None] | None = None,
) -> Diffs:
    """Per-output differences over every input; :class:`ParityError` unless all agree."""
    diffs: Diffs = {}
    for data in inputs:
        expected = as_outputs(source(data), output_names)
        got = as_outputs(target(data), output_names)
        if set(expected) != set(got):
            raise ConversionError(
                f"{what} returns outputs {sorted(got)}, the source model {sorted(expected)}"
            )
        tied = ties(data) if ties is not None else None
        for name, value in expected.items():
            found = compare(value, got[name], rtol, atol, tied)
            seen = diffs.setdefault(
                name,
                {"max_abs": 0.0, "max_rel": 0.0, "mismatched": 0.0, "values": 0.0, "ties": 0.0},
            )
            if found["max_abs"] >= seen["max_abs"] and "worst" in found:
                seen["worst"] = found["worst"]
            if "shape" in found:
                seen["shape"] = found["shape"]
            for key in ("max_abs", "max_rel"):
                seen[key] = max(seen[key], found[key])
            for key in ("mismatched", "values", "ties"):
                seen[key] += found[key]
    failed = {n: d for n, d in diffs.items() if d["mismatched"]}
    if failed:
        detail = "; ".join(_failure(n, d) for n, d in failed.items())
        raise ParityError(
            f"{what} does not match the source model within rtol={rtol:g}, atol={atol:g}: "
            f"{detail}; nothing was written (loosen --rtol/--atol only if that is acceptable)",
            diffs=diffs,
        )
    return diffs
