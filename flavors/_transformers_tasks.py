"""What each transformers pipeline task takes and answers: its params and its tabular output.

Every task takes a column ``text`` of strings and answers one row per input, in a form both the
MLflow JSON format and the v2 protocol encode: numbers and strings, nested results as JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from modelpack.errors import SignatureError
from modelpack.signature import ColSpec, Schema, Signature, TensorSpec

INPUT = "text"


@dataclass(frozen=True)
class Param:
    """One inference parameter, declared as MLflow's ParamSpec: a type, a default, and a
    shape (``[-1]`` for a list of values)."""

    type: str  # "int64", "float64", "bool" or "string"
    default: Any = None
    is_list: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "default": self.default, "shape": [-1] if self.is_list else None}


_GENERATION = {
    "max_new_tokens": Param("int64"),
    "do_sample": Param("bool"),
    "temperature": Param("float64"),
    "top_k": Param("int64"),
    "top_p": Param("float64"),
    "num_beams": Param("int64"),
    "repetition_penalty": Param("float64"),
    "return_full_text": Param("bool"),
}

# transformers' own pipeline tasks this flavor serves, with the class transformers builds for
# each: fixed here, so a saved model never names a class to import.
PARAMS: dict[str, dict[str, Param]] = {
    "text-classification": {
        "top_k": Param("int64", 1),
        "function_to_apply": Param("string"),
    },
    "token-classification": {
        "aggregation_strategy": Param("string", "none"),
        "ignore_labels": Param("string", is_list=True),
    },
    "feature-extraction": {"normalize": Param("bool", False)},
    "fill-mask": {"top_k": Param("int64", 5), "targets": Param("string", is_list=True)},
    "text-generation": _GENERATION,
    "zero-shot-classification": {
        "candidate_labels": Param("string", is_list=True),
        "multi_label": Param("bool", False),
        "hypothesis_template": Param("string"),
    },
}
PIPELINES = {
    "text-classification": "TextClassificationPipeline",
    "token-classification": "TokenClassificationPipeline",
    "feature-extraction": "FeatureExtractionPipeline",
    "fill-mask": "FillMaskPipeline",
    "text-generation": "TextGenerationPipeline",
    "zero-shot-classification": "ZeroShotClassificationPipeline",
}
_CLASSIFIED = (
    ("label", "string"),
    ("score", "float64"),
    ("labels", "string"),
    ("scores", "string"),
)
OUTPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "text-classification": _CLASSIFIED,
    "zero-shot-classification": _CLASSIFIED,
    "token-classification": (("entities", "string"),),
    "fill-mask": (("predictions", "string"),),
    "text-generation": (("generated_text", "string"),),
}
_AGGREGATIONS = ("none", "simple", "first", "average", "max")


def signature(task: str, hidden_size: int | None) -> Signature:
    inputs = Schema(columns=(ColSpec(INPUT, "string", allow_missing=False),))
    if task == "feature-extraction":
        outputs = Schema(tensors=(TensorSpec("float32", (-1, hidden_size or -1)),))
    else:
        cols = tuple(ColSpec(n, t, allow_missing=False) for n, t in OUTPUTS[task])
        outputs = Schema(columns=cols)
    params = {name: p.to_dict() for name, p in PARAMS[task].items()}
    return Signature(inputs=inputs, outputs=outputs, params=params)


# -- input and params --------------------------------------------------------------------------


def texts(data: Any) -> list[str]:
    """The input strings: a ``text`` column (or the only column), a 1-D array or a list."""
    if isinstance(data, pd.DataFrame):
        if INPUT in data.columns:
            values = data[INPUT].tolist()
        elif len(data.columns) == 1:
            values = data.iloc[:, 0].tolist()
        else:
            raise SignatureError(
                f"expected a column {INPUT!r} of strings, got columns {list(data.columns)}",
                field=INPUT,
                expected="string",
                got=list(map(str, data.columns)),
            )
    elif isinstance(data, pd.Series):
        values = data.tolist()
    else:
        arr = np.asarray(data, dtype=object)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise SignatureError(
                f"expected strings, one per row, got an array of shape {list(arr.shape)}",
                field=INPUT,
                expected="string",
                got=list(arr.shape),
            )
        values = arr.tolist()
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise SignatureError(
                f"column {INPUT!r}: expected a string at row {row}, got {type(value).__name__}",
                field=INPUT,
                expected="string",
                got=type(value).__name__,
            )
    if not values:
        raise SignatureError("no rows: the input is empty; send at least one string", field=INPUT)
    return values


def check_params(task: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` checked against the task's declared params (unknown ones refused)."""
    known = PARAMS[task]
    given = dict(params or {})
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise SignatureError(
            f"unknown param(s) {', '.join(map(repr, unknown))} for {task}; it takes "
            f"{', '.join(sorted(known))}",
            field=unknown[0],
            expected=sorted(known),
            got=unknown,
        )
    return {name: _checked(name, value, known[name]) for name, value in given.items()}


def _checked(name: str, value: Any, spec: Param) -> Any:
    if value is None:
        return None
    if spec.is_list:
        ok = isinstance(value, list) and all(_fits(v, spec.type) for v in value)
    else:
        ok = _fits(value, spec.type)
    if not ok:
        want = f"a list of {spec.type}" if spec.is_list else spec.type
        raise SignatureError(
            f"param {name!r}: expected {want}, got {value!r}",
            field=name,
            expected=want,
            got=type(value).__name__,
        )
    return float(value) if spec.type == "float64" else value


def _fits(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int64":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float64":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


# -- one call per task -------------------------------------------------------------------------


def predict(pipe: Any, task: str, values: list[str], params: Mapping[str, Any]) -> Any:
    return _TASKS[task](pipe, values, dict(params))


def _text_classification(pipe: Any, values: list[str], params: dict[str, Any]) -> pd.DataFrame:
    params.setdefault("top_k", 1)
    _positive(params, "top_k")
    answers = pipe(values, **params)
    return _classified([[(a["label"], a["score"]) for a in ranked] for ranked in answers])


def _zero_shot(pipe: Any, values: list[str], params: dict[str, Any]) -> pd.DataFrame:
    if not params.get("candidate_labels"):
        raise SignatureError(
            "zero-shot-classification needs params candidate_labels (a list of labels)",
            field="candidate_labels",
            expected="a list of string",
            got=None,
        )
    answers = pipe(values, **params)
    answers = [answers] if isinstance(answers, dict) else answers
    return _classified([list(zip(a["labels"], a["scores"], strict=True)) for a in answers])


def _classified(ranked: Sequence[Sequence[tuple[str, float]]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "label": [str(r[0][0]) for r in ranked],
            "score": np.array([float(r[0][1]) for r in ranked], dtype=np.float64),
            "labels": [_json([str(label) for label, _ in r]) for r in ranked],
            "scores": [_json([float(score) for _, score in r]) for r in ranked],
        }
    )


def _token_classification(pipe: Any, values: list[str], params: dict[str, Any]) -> pd.DataFrame:
    strategy = params.get("aggregation_strategy")
    if strategy is not None and strategy not in _AGGREGATIONS:
        raise SignatureError(
            f"param 'aggregation_strategy': expected one of {', '.join(_AGGREGATIONS)}, "
            f"got {strategy!r}",
            field="aggregation_strategy",
            expected=list(_AGGREGATIONS),
            got=strategy,
        )
    answers = pipe(values, **params)
    return pd.DataFrame({"entities": [_json(a) for a in answers]})


def _fill_mask(pipe: Any, values: list[str], params: dict[str, Any]) -> pd.DataFrame:
    _positive(params, "top_k")
    answers = [pipe(value, **params) for value in values]  # a list per input, whatever the masks
    return pd.DataFrame({"predictions": [_json(a) for a in answers]})


def _text_generation(pipe: Any, values: list[str], params: dict[str, Any]) -> pd.DataFrame:
    for name in ("max_new_tokens", "num_beams"):
        _positive(params, name)
    answers = pipe(values, **params)
    return pd.DataFrame({"generated_text": [str(a[0]["generated_text"]) for a in answers]})


def _feature_extraction(pipe: Any, values: list[str], params: dict[str, Any]) -> np.ndarray:
    import torch

    rows = []
    with torch.inference_mode():
        for features in pipe(values, return_tensors=True, truncation=True):
            rows.append(features[0].mean(dim=0))  # [1, tokens, hidden]: every token is real
        vectors = torch.stack(rows).float()
        if params.get("normalize"):
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
    return vectors.numpy()


_TASKS: dict[str, Callable[[Any, list[str], dict[str, Any]], Any]] = {
    "text-classification": _text_classification,
    "zero-shot-classification": _zero_shot,
    "token-classification": _token_classification,
    "fill-mask": _fill_mask,
    "text-generation": _text_generation,
    "feature-extraction": _feature_extraction,
}


def _positive(params: Mapping[str, Any], name: str) -> None:
    value = params.get(name)
    if value is not None and value < 1:
        raise SignatureError(
            f"param {name!r}: expected a whole number of at least 1, got {value!r}",
            field=name,
            expected=">= 1",
            got=value,
        )


def plain(value: Any) -> Any:
    """Pipeline answers (numpy scalars, tensors, nested lists and dicts) as plain data."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist"):  # an array or a tensor
        return value.tolist()
    return value


def _json(value: Any) -> str:
    return json.dumps(plain(value), ensure_ascii=False)
