"""Rows a real model cannot take (a NaN, a cell that is not a number) fail alone, not the job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import modelpack
from modelpack.batch import _io, score
from modelpack.errors import PredictionError, SignatureError

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["a", "c"]


def _frame(n: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": np.arange(n), "a": rng.normal(size=n), "c": rng.normal(size=n)})


@pytest.fixture(scope="module")
def fitted() -> LogisticRegression:
    train = _frame(400, seed=0)
    return LogisticRegression().fit(train[FEATURES], (train["a"] > 0).astype(int))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, fitted: LogisticRegression) -> Path:
    # An input example gives the signature: a and c are float64.
    path = modelpack.save(
        fitted, tmp_path_factory.mktemp("bad-rows") / "m", input_example=_frame(3)[FEATURES]
    )
    assert modelpack.load(path).signature is not None
    return path


@pytest.fixture(scope="module")
def lenient_dir(tmp_path_factory: pytest.TempPathFactory, fitted: LogisticRegression) -> Path:
    # A signature that lets NaN through to the model: LogisticRegression itself raises on it.
    # (An inferred signature may refuse missing values where the example had none.)
    columns = [{"name": n, "type": "float64", "allow_missing": True} for n in FEATURES]
    return modelpack.save(
        fitted,
        tmp_path_factory.mktemp("bad-rows") / "lenient",
        input_example=_frame(3)[FEATURES],
        signature={"inputs": {"type": "columns", "columns": columns}},
    )


def _with_nans(n: int, bad: list[int]) -> pd.DataFrame:
    frame = _frame(n)
    frame.loc[bad, "a"] = np.nan
    return frame


def _with_word(n: int, row: int) -> pd.DataFrame:
    frame = _frame(n).astype({"a": object})
    frame.loc[row, "a"] = "oops"
    return frame


def _errors(out: Path) -> pd.DataFrame:
    return pd.read_json(Path(f"{out}.errors.jsonl"), lines=True)


def _cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelpack", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("src", ["in.csv", "in.parquet"])
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("lenient", [True, False], ids=["model-raises", "inferred-signature"])
def test_nan_rows_are_isolated_with_skip(
    tmp_path, model_dir, lenient_dir, fitted, src, workers, lenient
):
    bad = [0, 7, 8, 613, 999]  # the first row, neighbours, rows in different chunks, the last
    frame = _with_nans(1_000, bad)
    path = tmp_path / src
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)  # NaN is a blank cell
        assert ",," in path.read_text() or "\n," in path.read_text()
    else:
        frame.to_parquet(path, index=False)
    out = tmp_path / "out.parquet"
    summary = score(
        lenient_dir if lenient else model_dir,
        path,
        out,
        batch_size=256,
        passthrough=["id"],
        on_error="skip",
        workers=workers,
    )
    assert (summary.rows, summary.scored_rows, summary.failed_rows) == (1_000, 995, 5)
    errors = _errors(out)
    assert errors["row"].tolist() == bad
    if lenient:  # the model raised: bisection found the rows
        assert set(errors["error"]) == {"prediction_failed"}
        assert errors["message"][0] == "ValueError: Input X contains NaN."
    else:  # the signature refused them (or, without allow_missing, the model did)
        assert len(set(errors["error"])) == 1
        assert set(errors["error"]) <= {"signature_mismatch", "prediction_failed"}
    got = pd.read_parquet(out)
    good = frame.drop(index=bad)
    assert got["id"].tolist() == good["id"].tolist()
    np.testing.assert_array_equal(got["prediction"], fitted.predict(good[FEATURES]))


def test_explicit_nan_text_in_a_csv_is_a_missing_value(tmp_path, lenient_dir, fitted):
    src = tmp_path / "in.csv"
    src.write_text("id,a,c\n0,0.5,1.0\n1,NaN,1.0\n2,-0.5,nan\n3,1.5,-1.0\n")
    out = tmp_path / "out.csv"
    summary = score(lenient_dir, src, out, passthrough=["id"], on_error="skip")
    assert (summary.scored_rows, summary.failed_rows) == (2, 2)
    assert _errors(out)["row"].tolist() == [1, 2]
    got = pd.read_csv(out)
    assert got["id"].tolist() == [0, 3]
    expected = fitted.predict(pd.DataFrame({"a": [0.5, 1.5], "c": [1.0, -1.0]}))
    np.testing.assert_array_equal(got["prediction"], expected)


def test_every_row_failing_gives_an_empty_output_and_every_row_in_errors(tmp_path, lenient_dir):
    src = tmp_path / "in.parquet"
    _with_nans(40, list(range(40))).to_parquet(src, index=False)
    out = tmp_path / "out.csv"
    summary = score(lenient_dir, src, out, batch_size=16, on_error="skip")
    assert (summary.scored_rows, summary.failed_rows) == (0, 40)
    assert _errors(out)["row"].tolist() == list(range(40))
    assert pd.read_csv(out).empty


def test_fail_names_the_first_failing_row_and_writes_nothing(tmp_path, lenient_dir):
    src = tmp_path / "in.parquet"
    _with_nans(1_000, [700, 650]).to_parquet(src, index=False)
    with pytest.raises(PredictionError, match=r"^row 650: the model failed: ValueError: Input X"):
        score(lenient_dir, src, tmp_path / "out.parquet", batch_size=300)
    assert list(tmp_path.iterdir()) == [src]


def test_cli_fail_is_one_line_exit_2_and_no_output(tmp_path, lenient_dir):
    src = tmp_path / "in.csv"
    _with_nans(500, [260, 480]).to_csv(src, index=False)
    out = tmp_path / "out.csv"
    proc = _cli("batch", lenient_dir, src, out, "--batch-size", "100", "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error [prediction_failed]: row 260: the model failed: ValueError: Input X contains "
        "NaN.; pass --on-error skip to skip bad rows"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_cli_skip_scores_the_other_rows(tmp_path, lenient_dir, fitted):
    frame = _with_nans(500, [13])
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    out = tmp_path / "out.csv"
    proc = _cli("batch", lenient_dir, src, out, "--on-error", "skip", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "scored 499 of 500 rows" in proc.stdout and "1 failed" in proc.stdout
    assert _errors(out)["row"].tolist() == [13]
    good = frame.drop(index=[13])
    np.testing.assert_array_equal(pd.read_csv(out)["prediction"], fitted.predict(good[FEATURES]))


@pytest.mark.parametrize("batch_size", [65_536, 1_000])
def test_one_bad_cell_costs_its_row_only(tmp_path, model_dir, fitted, batch_size):
    # 20,000 rows in one CSV block: inference used to read ``a`` as text and fail every row.
    n, row = 20_000, 12_345
    frame = _with_word(n, row)
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    out = tmp_path / "out.parquet"
    summary = score(
        model_dir, src, out, batch_size=batch_size, passthrough=["id", "a"], on_error="skip"
    )
    assert (summary.rows, summary.scored_rows, summary.failed_rows) == (n, n - 1, 1)
    errors = _errors(out)
    assert errors.to_dict("records") == [
        {
            "row": row,
            "error": "signature_mismatch",
            "message": "column 'a': expected float64, got 'oops'",
        }
    ]
    got = pd.read_parquet(out)
    assert len(got) == n - 1
    assert got["a"].dtype == np.float64  # parsed as numbers, not passed on as text
    good = frame.drop(index=[row]).astype({"a": "float64"})
    assert got["id"].tolist() == good["id"].tolist()
    np.testing.assert_array_equal(got["prediction"], fitted.predict(good[FEATURES]))


def test_a_bad_cell_past_the_first_csv_block_fails_its_row_not_the_job(tmp_path, model_dir):
    # Past the reader's first 1 MB block: inference had typed ``a`` as double by then, and the
    # reader stopped the whole job at the word.
    n = 60_000
    frame = _with_word(n, n - 2)
    src = tmp_path / "in.csv"
    frame.to_csv(src, index=False)
    assert src.stat().st_size > 2 << 20
    out = tmp_path / "out.csv"
    summary = score(model_dir, src, out, batch_size=10_000, on_error="skip")
    assert (summary.scored_rows, summary.failed_rows) == (n - 1, 1)
    assert _errors(out)["row"].tolist() == [n - 2]


def test_bad_cells_and_nans_and_signature_misses_together(tmp_path, lenient_dir):
    src = tmp_path / "in.csv"
    rows = ["id,a,c", "0,1.0,1.0", "1,abc,1.0", "2,,1.0", "3,2.0,2.0", "4,1e400x,0", "5,0.1,0.2"]
    src.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out.jsonl"
    summary = score(lenient_dir, src, out, batch_size=4, passthrough=["id"], on_error="skip")
    assert summary.failed_rows == 3
    errors = _errors(out)
    assert errors["row"].tolist() == [1, 2, 4]
    mismatch, failed = "signature_mismatch", "prediction_failed"
    assert errors["error"].tolist() == [mismatch, failed, mismatch]
    assert pd.read_json(out, lines=True)["id"].tolist() == [0, 3, 5]


def test_fail_on_a_bad_cell_names_its_row(tmp_path, model_dir):
    src = tmp_path / "in.csv"
    _with_word(100, 42).to_csv(src, index=False)
    with pytest.raises(SignatureError, match=r"^row 42 fails .*got 'oops'; pass --on-error skip"):
        score(model_dir, src, tmp_path / "out.csv")
    assert list(tmp_path.iterdir()) == [src]


def test_predict_cli_with_a_nan_is_one_line_and_exit_2(tmp_path, lenient_dir):
    src = tmp_path / "nan.csv"
    _with_nans(10, [4])[FEATURES].to_csv(src, index=False)
    proc = _cli("predict", "-m", lenient_dir, "-i", src)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error [prediction_failed]: the model failed on {src}: ValueError: Input X contains NaN."
    ]
    assert proc.stdout == ""


# -- JSON Lines: a bad cell or a missing key fails its row, as in a CSV ----------------------


def _jsonl_with_bad_rows(path: Path, n: int, word: int, missing: int) -> pd.DataFrame:
    """``n`` rows as JSON Lines: row ``word`` has "oops" for ``a``, row ``missing`` no ``c``."""
    frame = _frame(n)
    records = frame.to_dict("records")
    records[word]["a"] = "oops"
    del records[missing]["c"]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return frame


@pytest.mark.parametrize("block", [None, 64 << 10])
def test_jsonl_bad_cell_and_missing_key_cost_their_rows_only(
    tmp_path, model_dir, fitted, block, monkeypatch
):
    if block is not None:  # many blocks: the bad ones are past the first
        monkeypatch.setattr(_io, "JSONL_BLOCK", block)
    n, word, missing = 20_000, 12_345, 17_000
    src = tmp_path / "in.jsonl"
    frame = _jsonl_with_bad_rows(src, n, word, missing)
    out = tmp_path / "out.parquet"
    summary = score(model_dir, src, out, batch_size=1_000, passthrough=["id", "a"], on_error="skip")
    assert (summary.rows, summary.scored_rows, summary.failed_rows) == (n, n - 2, 2)
    errors = _errors(out).to_dict("records")
    assert [e["row"] for e in errors] == [word, missing]
    assert [e["error"] for e in errors] == ["signature_mismatch"] * 2
    assert errors[0]["message"] == "column 'a': expected float64, got '\"oops\"'"
    assert "'c'" in errors[1]["message"]
    got = pd.read_parquet(out)
    assert got["a"].dtype == np.float64  # parsed as numbers, not passed on as text
    good = frame.drop(index=[word, missing])
    assert got["id"].tolist() == good["id"].tolist()
    np.testing.assert_array_equal(got["a"], good["a"])
    np.testing.assert_array_equal(got["prediction"], fitted.predict(good[FEATURES]))


def test_jsonl_a_number_as_text_or_a_boolean_is_a_bad_cell(tmp_path, model_dir):
    src = tmp_path / "in.jsonl"
    lines = [
        {"id": 0, "a": 1.0, "c": 1},
        {"id": 1, "a": "1.5", "c": 1.0},
        {"id": 2, "a": True, "c": 1.0},
        {"id": 3, "a": [1.0], "c": 1.0},
        {"id": 4, "a": None, "c": 1.0},
        {"id": 5, "a": 2.0, "c": -3},
    ]
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    out = tmp_path / "out.jsonl"
    summary = score(model_dir, src, out, passthrough=["id"], on_error="skip")
    assert summary.failed_rows == 4
    assert _errors(out)["row"].tolist() == [1, 2, 3, 4]
    assert pd.read_json(out, lines=True)["id"].tolist() == [0, 5]


def test_jsonl_fail_is_one_line_exit_2_and_no_output(tmp_path, model_dir):
    src = tmp_path / "in.jsonl"
    _jsonl_with_bad_rows(src, 500, 260, 480)
    out = tmp_path / "out.jsonl"
    proc = _cli("batch", model_dir, src, out)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error [signature_mismatch]: row 260 ")
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
