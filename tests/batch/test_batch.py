from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import modelpack
from modelpack.batch import BatchSummary, score
from modelpack.batch._io import open_source, read_chunks
from modelpack.batch._progress import Progress
from modelpack.errors import InvalidInputError, SignatureError
from tests.batch.conftest import expected, make_frame, read, write

SUFFIXES = (".parquet", ".csv", ".jsonl")


@pytest.mark.parametrize("src", SUFFIXES)
@pytest.mark.parametrize("dst", SUFFIXES)
def test_every_format_pair_gives_one_prediction_per_row_in_order(
    tmp_path, model_dir, fitted, src, dst
):
    frame = make_frame(2_345)
    out = tmp_path / f"out{dst}"
    summary = score(
        model_dir, write(frame, tmp_path / f"in{src}"), out, batch_size=500, passthrough=["id"]
    )
    assert isinstance(summary, BatchSummary)
    assert (summary.rows, summary.scored_rows, summary.failed_rows) == (2_345, 2_345, 0)
    assert summary.chunks == 5 and summary.seconds > 0 and summary.errors_output is None
    got = read(out)
    assert list(got.columns) == ["id", "prediction"]
    assert got["id"].tolist() == list(range(2_345))
    np.testing.assert_array_equal(got["prediction"].to_numpy(), expected(fitted, frame))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_chunks_have_exactly_batch_size_rows_across_part_files(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    frame = make_frame(1_000)
    for i, start in enumerate(range(0, 1_000, 300)):
        frame.iloc[start : start + 300].to_parquet(parts / f"part-{i:05d}.parquet", index=False)
    (parts / "_SUCCESS").write_text("")
    (parts / ".part-00000.parquet.crc").write_bytes(b"crc")
    chunks = list(read_chunks(open_source(str(parts)), 256, ["id"]))
    assert [c.num_rows for c in chunks] == [256, 256, 256, 232]
    assert pa.concat_tables(chunks).column("id").to_pylist() == list(range(1_000))


def test_a_directory_of_parts_is_one_dataset(tmp_path, model_dir, fitted):
    parts = tmp_path / "in"
    parts.mkdir()
    frame = make_frame(900)
    for i in range(3):
        frame.iloc[i * 300 : (i + 1) * 300].to_csv(parts / f"part-{i}.csv", index=False)
    (parts / "_SUCCESS").write_text("")
    summary = score(model_dir, parts, tmp_path / "out.parquet", passthrough=["id", "note"])
    got = pd.read_parquet(tmp_path / "out.parquet")
    assert summary.rows == 900 and got["id"].tolist() == list(range(900))
    assert got["note"].tolist() == frame["note"].tolist()
    np.testing.assert_array_equal(got["prediction"], expected(fitted, frame))


def _with_bad_rows(n: int, bad: list[int]) -> pd.DataFrame:
    frame = make_frame(n)
    frame.loc[bad, "b"] = 1_000  # out of the signature's int8 range
    return frame


def test_skip_writes_bad_rows_to_the_errors_file_and_workers_match_one(tmp_path, model_dir, fitted):
    bad = [3, 404, 405, 1_999]
    frame = _with_bad_rows(2_000, bad)
    src = write(frame, tmp_path / "in.parquet")
    one = score(
        model_dir,
        src,
        tmp_path / "one.parquet",
        batch_size=300,
        passthrough=["id"],
        on_error="skip",
    )
    two = score(
        model_dir,
        src,
        tmp_path / "two.parquet",
        batch_size=300,
        passthrough=["id"],
        on_error="skip",
        workers=2,
    )
    for summary in (one, two):
        assert (summary.rows, summary.scored_rows, summary.failed_rows) == (2_000, 1_996, 4)
    assert two.workers == 2
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()
    got = pd.read_parquet(tmp_path / "one.parquet")
    good = frame.drop(index=bad)
    assert got["id"].tolist() == good["id"].tolist()
    np.testing.assert_array_equal(got["prediction"], expected(fitted, good))
    errors = pd.read_json(tmp_path / "one.parquet.errors.jsonl", lines=True)
    assert errors["row"].tolist() == bad
    assert set(errors["error"]) == {"signature_mismatch"}
    assert "column 'b'" in errors["message"][0] and "out of range" in errors["message"][0]
    assert one.errors_output == str(tmp_path / "one.parquet") + ".errors.jsonl"


def test_fail_names_the_row_range_of_the_first_bad_chunk(tmp_path, model_dir):
    src = write(_with_bad_rows(1_000, [650]), tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    with pytest.raises(SignatureError, match=r"rows 600-899 fail .*column 'b'.*--on-error skip"):
        score(model_dir, src, out, batch_size=300)
    assert list(tmp_path.iterdir()) == [src]


@pytest.mark.parametrize("dst", [".csv", ".jsonl"])
def test_workers_write_the_same_bytes_as_one_worker(tmp_path, model_dir, dst):
    src = write(make_frame(3_001), tmp_path / "in.parquet")
    outs = [tmp_path / f"out-{n}{dst}" for n in (1, 3)]
    for n, out in zip((1, 3), outs, strict=True):
        summary = score(model_dir, src, out, batch_size=200, passthrough=["id"], workers=n)
        assert (summary.rows, summary.chunks, summary.workers) == (3_001, 16, n)
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_fail_with_workers_names_the_same_first_bad_chunk(tmp_path, model_dir):
    src = write(_with_bad_rows(2_000, [650, 1_900]), tmp_path / "in.parquet")
    with pytest.raises(SignatureError, match=r"rows 600-899 fail .*column 'b'"):
        score(model_dir, src, tmp_path / "out.parquet", batch_size=300, workers=2)
    assert list(tmp_path.iterdir()) == [src]


def test_a_stale_errors_file_is_removed_when_no_row_fails(tmp_path, model_dir):
    src = write(make_frame(10), tmp_path / "in.parquet")
    stale = tmp_path / "out.parquet.errors.jsonl"
    stale.write_text('{"row": 1}\n')
    assert score(model_dir, src, tmp_path / "out.parquet", on_error="skip").failed_rows == 0
    assert not stale.exists()


def test_user_mistakes_are_one_line_errors(tmp_path, model_dir):
    src = write(make_frame(10), tmp_path / "in.parquet")
    with pytest.raises(InvalidInputError, match="does not exist"):
        score(model_dir, tmp_path / "nope.parquet", tmp_path / "o.parquet")
    with pytest.raises(InvalidInputError, match="no column.*'zz'.*--passthrough"):
        score(model_dir, src, tmp_path / "o.parquet", passthrough=["zz"])
    with pytest.raises(InvalidInputError, match="cannot tell the format"):
        score(
            model_dir,
            write(make_frame(3), tmp_path / "in.csv").rename(tmp_path / "x.dat"),
            tmp_path / "o.parquet",
        )
    with pytest.raises(InvalidInputError, match="choose fail or skip"):
        score(model_dir, src, tmp_path / "o.parquet", on_error="ignore")
    with pytest.raises(SignatureError, match="missing required column 'b'"):
        score(model_dir, src, tmp_path / "o.parquet", columns=["a"], on_error="skip")


def test_several_outputs_become_columns(tmp_path):
    from tests.batch._models import TwoOutputs

    path = modelpack.save(TwoOutputs(), tmp_path / "m")
    src = write(make_frame(50), tmp_path / "in.parquet")
    score(path, src, tmp_path / "o.jsonl", columns=["a"], passthrough=["id"])
    got = pd.read_json(tmp_path / "o.jsonl", lines=True)
    assert list(got.columns) == ["id", "prediction_0", "prediction_1"]
    np.testing.assert_allclose(got["prediction_1"], -make_frame(50)["a"])


def test_plain_progress_lines_off_a_terminal():
    stream = io.StringIO()
    with Progress(1_000, stream=stream, every=0) as bar:
        bar.advance(400)
        bar.advance(600)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("scored 400/1,000 rows, ") and "rows/s, ETA" in lines[0]
    assert lines[1].startswith("scored 1,000/1,000 rows")
