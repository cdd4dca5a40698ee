"""The content-addressed artifact store, locally and on S3 (moto server)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

import modelpack
from modelpack import registry
from modelpack._s3 import S3ArtifactStore
from modelpack.artifacts import LocalArtifactStore, materialize, safe_relpath, store_model
from modelpack.errors import IntegrityError, ModelNotFoundError, UnsafePathError
from tests.registry.conftest import save_small

WEIGHTS = b"\x01" * (1 << 20)


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/passwd", "C:/x", "..", "", "a\x00b"])
def test_unsafe_paths_are_refused(bad):
    with pytest.raises(UnsafePathError):
        safe_relpath(bad)


def test_safe_paths_are_normalized():
    assert safe_relpath("./model/./w.bin") == "model/w.bin"


def test_unchanged_weights_are_stored_once(store_uri, tmp_path):
    store = LocalArtifactStore(Path(tmp_path / "home" / "artifacts"))
    registry.register("m", save_small(tmp_path / "a", WEIGHTS))
    first = store.total_bytes()
    registry.register("m", save_small(tmp_path / "b", WEIGHTS, offset=1.0))  # same weights
    second = store.total_bytes()
    assert first > len(WEIGHTS) and second - first < 16_384  # only descriptor + small files
    registry.register("m", save_small(tmp_path / "c", b"\x02" * (1 << 20)))
    assert store.total_bytes() - second >= len(WEIGHTS)
    print(f"\nbytes stored: {first}, +{second - first} unchanged, {store.total_bytes()} changed")


def test_materialize_verifies_and_hardlinks(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPACK_HOME", str(tmp_path / "home"))
    store = LocalArtifactStore(tmp_path / "blobs")
    sha, _ = store_model(store, save_small(tmp_path / "m", WEIGHTS))
    path = materialize(sha, store)
    weights = next(p for p in path.rglob("*") if p.is_file() and p.stat().st_size == len(WEIGHTS))
    assert weights.stat().st_nlink == 2
    assert materialize(sha, store) == path
    blob = next(
        b
        for b in (tmp_path / "blobs").rglob("*")
        if b.is_file() and b.stat().st_size == len(WEIGHTS)
    )
    blob.chmod(0o644)
    blob.write_bytes(b"\x00" * len(WEIGHTS))  # corrupt the store, then rebuild the cache
    import shutil

    shutil.rmtree(path)
    with pytest.raises(IntegrityError):
        materialize(sha, store)


def test_s3_store_dedupes_and_loads(sql_store_uri, s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPACK_ARTIFACT_URI", f"s3://{s3_bucket}/team")
    registry.register("m", save_small(tmp_path / "a", WEIGHTS))
    store = S3ArtifactStore(f"s3://{s3_bucket}/team")
    first = store.total_bytes()
    registry.register("m", save_small(tmp_path / "b", WEIGHTS, offset=1.0))
    assert store.total_bytes() - first < 16_384
    assert not (tmp_path / "home" / "artifacts").exists()
    model = modelpack.load("models:/m/2")
    assert model.path.is_relative_to(tmp_path / "home" / "cache")


def test_s3_model_directory_uri(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPACK_HOME", str(tmp_path / "home"))
    model = save_small(tmp_path / "m", WEIGHTS)
    s3 = boto3.client("s3")
    for file in model.rglob("*"):
        if file.is_file():
            s3.upload_file(str(file), s3_bucket, f"models/m/{file.relative_to(model).as_posix()}")
    loaded = modelpack.load(f"s3://{s3_bucket}/models/m")
    assert loaded.path.is_relative_to(tmp_path / "home" / "cache")
    with pytest.raises(ModelNotFoundError, match="missing"):
        modelpack.load(f"s3://{s3_bucket}/models/nothing")
    s3.put_object(Bucket=s3_bucket, Key="models/m/model/artifacts/weights", Body=b"tampered")
    import shutil

    shutil.rmtree(tmp_path / "home" / "cache")
    with pytest.raises(IntegrityError):
        modelpack.load(f"s3://{s3_bucket}/models/m")


def test_runs_uri_rebuilds_the_subtree(sql_store_uri, tmp_path):
    from sqlalchemy import insert

    from modelpack.artifacts import default_store, put_tree
    from modelpack.store.db import write
    from modelpack.store.schema import experiments, run_artifacts, runs

    model = save_small(tmp_path / "m", WEIGHTS)
    files = put_tree(default_store(), model)
    with write() as conn:
        conn.execute(insert(experiments).values(id=1, name="e", created_at=1))
        conn.execute(
            insert(runs).values(id="r" * 32, experiment_id=1, status="FINISHED", start_time=1)
        )
        conn.execute(
            insert(run_artifacts),
            [
                {"run_id": "r" * 32, "path": f"model/{p}", "sha256": s, "size": n}
                for p, (s, n) in files.items()
            ],
        )
    loaded = modelpack.load(f"runs:/{'r' * 32}/model")
    assert loaded.predict(__import__("pandas").DataFrame({"x": [1.0]})).tolist() == [2.0]
    version = registry.register("from-run", f"runs:/{'r' * 32}/model")
    assert version.run_id == "r" * 32
    with pytest.raises(ModelNotFoundError, match="no artifacts"):
        modelpack.load(f"runs:/{'r' * 32}/other")
    with pytest.raises(UnsafePathError):
        modelpack.load(f"runs:/{'r' * 32}/../x")
