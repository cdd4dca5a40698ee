from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pytest

import modelpack
from modelpack.batch import score
from tests.batch.conftest import expected, make_frame, write

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: object, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelpack", "batch", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_cli_scores_and_prints_a_summary(tmp_path, model_dir, fitted):
    frame = make_frame(1_000)
    src = write(frame, tmp_path / "in.jsonl")
    proc = cli(
        model_dir,
        src,
        tmp_path / "out.csv",
        "--passthrough",
        "id,note",
        "--batch-size",
        "128",
        "--no-progress",
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith("scored 1,000 of 1,000 rows in ") and "1 worker(s)" in out
    got = pd.read_csv(tmp_path / "out.csv")
    assert list(got.columns) == ["id", "note", "prediction"]
    np.testing.assert_array_equal(got["prediction"], expected(fitted, frame))


def test_cli_fail_is_one_line_and_exits_2(tmp_path, model_dir):
    frame = make_frame(500)
    frame.loc[260, "b"] = -300
    src = write(frame, tmp_path / "in.parquet")
    proc = cli(model_dir, src, tmp_path / "out.parquet", "--batch-size", "100", "--no-progress")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error [signature_mismatch]: rows 200-299 fail")
    assert not (tmp_path / "out.parquet").exists()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("signum", "workers"), [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)]
)
def test_an_interrupted_job_leaves_no_output_under_the_final_name(tmp_path, signum, workers):
    from tests.batch._models import SlowScaler

    # The class is saved by name: init_args carries the delay (without it, 0 s per chunk and the
    # job can finish before the signal is sent).
    model = modelpack.save(SlowScaler(), tmp_path / "slow", init_args={"delay": 0.2})
    src = write(make_frame(5_000), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    out_dir_before = set(tmp_path.iterdir())
    proc = cli(
        model,
        src,
        out,
        "--batch-size",
        "100",
        "--columns",
        "a",
        "--workers",
        workers,
        "--no-progress",
        env={**os.environ, "MODELPACK_TRUST_PICKLE": "0"},
        # A shell without job control starts background jobs with SIGINT ignored (as CI
        # does), and Python keeps that; Ctrl-C at a terminal reaches a default handler.
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 90
    while not any(p.name.startswith(".out.parquet.tmp-") for p in tmp_path.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the job never started writing"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "interrupted: no output was written" in err
    assert set(tmp_path.iterdir()) == out_dir_before


def test_s3_input_and_output(tmp_path, model_dir, fitted, bucket):
    s3 = boto3.client("s3")
    frame = make_frame(1_500)
    for i in range(3):
        part = write(frame.iloc[i * 500 : (i + 1) * 500], tmp_path / f"part-{i}.parquet")
        s3.upload_file(str(part), bucket, f"in/{part.name}")
    s3.put_object(Bucket=bucket, Key="in/_SUCCESS", Body=b"")
    summary = score(
        model_dir,
        f"s3://{bucket}/in",
        f"s3://{bucket}/out/scored.parquet",
        batch_size=400,
        passthrough=["id"],
    )
    assert summary.rows == 1_500
    s3.download_file(bucket, "out/scored.parquet", str(tmp_path / "got.parquet"))
    got = pd.read_parquet(tmp_path / "got.parquet")
    assert got["id"].tolist() == list(range(1_500))
    np.testing.assert_array_equal(got["prediction"], expected(fitted, frame))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]]
    assert keys == ["out/scored.parquet"]
