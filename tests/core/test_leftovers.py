"""Interrupted saves leave nothing forever, and an overwrite never leaves no model."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

import modelpack
from modelpack import _fs
from modelpack.cli import main

X = np.eye(4)


def _old(path: Path) -> Path:
    stamp = time.time() - 2 * _fs.STALE_AGE_S
    os.utime(path, (stamp, stamp))
    return path


def _clf() -> LogisticRegression:
    return LogisticRegression().fit(X, [0, 1, 0, 1])


def test_a_save_cleans_what_a_killed_save_left_beside_it(tmp_path):
    (tmp_path / ".m.tmp-0123abcd").mkdir()
    (tmp_path / ".m.tmp-0123abcd" / "weights.bin").write_bytes(b"x" * 1000)
    _old(tmp_path / ".m.tmp-0123abcd")
    old = tmp_path / ".m.old-89abcdef"
    old.mkdir()
    _old(old)
    fresh = tmp_path / ".m.tmp-feedbeef"  # a save in progress right now: left alone
    fresh.mkdir()
    other = tmp_path / ".other.tmp-0123abcd"  # another model's: not this save's business
    other.mkdir()
    _old(other)
    modelpack.save(_clf(), tmp_path / "m")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".m.tmp-feedbeef", ".other.tmp-0123abcd", "m"]


def test_overwrite_swaps_in_one_step(tmp_path):
    first = modelpack.save(_clf(), tmp_path / "m")
    model_id = modelpack.load(first).model_id
    assert _fs.exchange(tmp_path, tmp_path) in (True, False)  # callable on this platform
    modelpack.save(LogisticRegression(C=0.1).fit(X, [0, 1, 0, 1]), tmp_path / "m", overwrite=True)
    assert modelpack.load(tmp_path / "m").model_id != model_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no .old-* left


def test_exchange_swaps_two_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "from-a").touch()
    (b / "from-b").touch()
    if not _fs.exchange(a, b):  # not Linux, or a filesystem without RENAME_EXCHANGE
        return
    assert (a / "from-b").exists() and (b / "from-a").exists()


def test_gc_removes_stale_leftovers_anywhere_it_is_told(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("MODELPACK_HOME", str(home))
    blobs = home / "artifacts" / "sha256" / "ab"
    blobs.mkdir(parents=True)
    half = blobs / ".abcd.tmp-00000000"
    half.write_bytes(b"y" * 500)
    _old(half)
    models = tmp_path / "models"
    models.mkdir()
    stale = models / ".churn.old-11111111"
    stale.mkdir()
    (stale / "w").write_bytes(b"z" * 300)
    _old(stale)
    try:
        main(["gc", str(models), "--dry-run"])
    except SystemExit as exc:
        assert not exc.code
    assert half.exists() and stale.exists()
    try:
        main(["gc", str(models)])
    except SystemExit as exc:
        assert not exc.code
    out = capsys.readouterr().out
    assert "removed 2 leftover(s), 800 bytes" in out
    assert not half.exists() and not stale.exists()
