"""A bounded, seeded fuzz of the scoring server: client data never gets a 5xx.

Random bodies in every format the server reads (MLflow JSON, CSV, Parquet, v2 JSON), built
from valid requests with one part broken at a time, are sent over one keep-alive connection.
Every answer must be < 500 (the model never fails on valid data here), an error must be JSON
with a code and no traceback text, and the connection and the server must still answer.
"""

from __future__ import annotations

import io
import json
import random
from typing import Any

import httpx
import pandas as pd
import pytest

from tests.servers.conftest import COLUMNS

CASES = 300
_NUMBERS: list[Any] = [
    0,
    -1,
    1.5,
    1e308,
    -1e308,
    2**63,
    -(2**63) - 1,
    "1",
    "x",
    None,
    True,
    [],
    {},
    "NaN",
    "",
]
_DATATYPES = ["FP64", "FP32", "FP16", "INT8", "UINT8", "INT64", "BOOL", "BYTES", "XX", 3, None]


def _value(rng: random.Random) -> Any:
    return rng.choice(_NUMBERS)


def _mlflow(rng: random.Random) -> tuple[str, bytes, str]:
    rows = [[rng.uniform(-3, 3) for _ in COLUMNS] for _ in range(rng.randint(0, 4))]
    body: dict[str, Any] = {"dataframe_split": {"columns": list(COLUMNS), "data": rows}}
    broken = rng.randrange(9)
    if broken == 0 and rows:
        rows[0][rng.randrange(len(COLUMNS))] = _value(rng)
    elif broken == 1:
        body["dataframe_split"]["columns"] = [rng.choice([*COLUMNS, "zz", 1, None])] * 4
    elif broken == 2:
        body = {"dataframe_records": [{c: _value(rng) for c in COLUMNS}]}
    elif broken == 3:
        body = {"instances": [[_value(rng)] * rng.randint(0, 5)]}
    elif broken == 4:
        body = {"inputs": {c: [_value(rng)] for c in COLUMNS}}
    elif broken == 5:
        body["params"] = _value(rng)
    elif broken == 6:
        body = {rng.choice(["dataframe_split", "inputs", "nope"]): _value(rng)}
    elif broken == 7:
        return "/invocations", json.dumps(body)[: rng.randint(0, 40)].encode(), "application/json"
    return "/invocations", json.dumps(body).encode(), "application/json"


def _csv(rng: random.Random) -> tuple[str, bytes, str]:
    lines = [",".join(rng.sample(COLUMNS, len(COLUMNS)) if rng.random() < 0.2 else COLUMNS)]
    for _ in range(rng.randint(0, 3)):
        lines.append(
            ",".join(str(rng.choice([1.0, -2.5, "", "oops", "nan", "inf"])) for _ in COLUMNS)
        )
    return "/invocations", "\n".join(lines).encode(), "text/csv"


def _parquet(rng: random.Random) -> tuple[str, bytes, str]:
    rows = rng.randint(0, 3)
    frame = pd.DataFrame({c: [rng.uniform(-1, 1) for _ in range(rows)] for c in COLUMNS})
    if rng.random() < 0.3:
        frame = frame.astype(str)
    buf = io.BytesIO()
    frame.to_parquet(buf)
    raw = buf.getvalue()
    if rng.random() < 0.3:
        raw = raw[: rng.randint(0, len(raw))]
    return "/invocations", raw, "application/vnd.apache.parquet"


def _v2(rng: random.Random) -> tuple[str, bytes, str]:
    n = rng.randint(0, 3)
    tensor: dict[str, Any] = {
        "name": rng.choice(["input-0", "x", COLUMNS[0]]),
        "shape": rng.choice([[n, 4], [n], [-1, 4], "x", [2**70]]),
        "datatype": rng.choice(_DATATYPES),
        "data": [rng.choice([0.5, _value(rng)]) for _ in range(n * 4)],
    }
    body: dict[str, Any] = {"inputs": [tensor]}
    if rng.random() < 0.3:
        tensor["parameters"] = rng.choice([{"binary_data_size": _value(rng)}, _value(rng)])
    if rng.random() < 0.3:
        body["outputs"] = rng.choice([_value(rng), [{"name": "predict"}], [{"name": _value(rng)}]])
    if rng.random() < 0.2:
        body["parameters"] = _value(rng)
    return "/v2/models/iris/infer", json.dumps(body).encode(), "application/json"


# 1e308 in every column overflows inside the model's own arithmetic: numpy warns (an error
# only under this suite's warnings-as-errors, since the server runs in the test process).
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_no_client_body_gets_a_5xx_and_the_connection_survives(iris_url):
    rng = random.Random(20261204)
    makers = [_mlflow, _csv, _parquet, _v2]
    with httpx.Client(base_url=iris_url, timeout=30) as http:
        for i in range(CASES):
            path, body, content_type = rng.choice(makers)(rng)
            answer = http.post(path, content=body, headers={"content-type": content_type})
            context = f"case {i}: {path} {content_type} {body[:200]!r} -> {answer.text[:300]}"
            assert answer.status_code < 500, context
            if answer.status_code >= 400:
                error = answer.json()
                code = error.get("code") or (error.get("error") or {}).get("code")
                assert code, context
                assert "Traceback" not in answer.text, context
        assert http.get("/ping").status_code == 200  # same connection, server alive
