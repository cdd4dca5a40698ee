from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import modelpack

# b is int8 in the signature: an int64 value out of its range fails one row, not the chunk.
SIGNATURE = {
    "inputs": {
        "type": "columns",
        "columns": [{"name": "a", "type": "float64"}, {"name": "b", "type": "int8"}],
    }
}


@pytest.fixture
def bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty bucket on the moto server (``moto_endpoint`` lives in tests/conftest.py)."""
    import boto3

    for key, value in {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    name = f"batch-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def make_frame(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype="int64"),
            "a": rng.normal(size=n),
            "b": rng.integers(0, 5, n),
            "note": rng.choice(["x", "y"], n),
        }
    )


@pytest.fixture(scope="session")
def fitted() -> LogisticRegression:
    frame = make_frame(500, seed=0)
    return LogisticRegression().fit(frame[["a", "b"]], (frame["a"] > 0).astype(int))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, fitted: LogisticRegression) -> Path:
    return modelpack.save(fitted, tmp_path_factory.mktemp("batch") / "m", signature=SIGNATURE)


def expected(fitted: LogisticRegression, frame: pd.DataFrame) -> np.ndarray:
    return fitted.predict(frame[["a", "b"]].astype({"b": "int8"}))


def write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return pd.read_json(path, lines=True)
