from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from tests.batch.conftest import expected, make_frame, write

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'modelpack[spark]')")

# pyspark 4.3 warns on pandas >= 3 (ENVIRONMENT.md); the features used here work.
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        if os.environ.get("CI"):
            pytest.fail("Java is not installed (CI is set, so this is a failure, not a skip)")
        pytest.skip("Java is not installed: Spark needs a JVM (apt-get install openjdk-17-jre)")
    from pyspark.sql import SparkSession

    # Workers must run this interpreter, or they miss the venv's packages.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("modelpack-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "500")
        .getOrCreate()
    )
    try:
        yield session
    finally:
        session.stop()


def test_udf_scores_a_dataframe_and_score_files_writes_parts(spark, tmp_path, model_dir, fitted):
    from pyspark.sql.functions import struct

    from modelpack.spark import score_files, udf

    frame = make_frame(3_000)
    df = spark.createDataFrame(frame).repartition(3)
    predict = udf(spark, model_dir, "double")
    rows = (
        df.select("id", predict("a", "b").alias("p"), predict(struct("a", "b")).alias("q"))
        .orderBy("id")
        .collect()  # not toPandas: pyspark 4.3's Arrow path trips on pandas 3 deprecations
    )
    got = pd.DataFrame([r.asDict() for r in rows])
    np.testing.assert_array_equal(got["p"].to_numpy(), expected(fitted, frame))
    np.testing.assert_array_equal(got["q"], got["p"])
    assert got["id"].tolist() == list(range(3_000))

    src = write(frame, tmp_path / "in.parquet")
    rows = score_files(
        str(model_dir), str(src), str(tmp_path / "out.parquet"), passthrough=["id"], spark=spark
    )
    assert rows == 3_000
    out = pd.read_parquet(tmp_path / "out.parquet").sort_values("id")
    np.testing.assert_array_equal(out["prediction"], expected(fitted, frame).astype(float))


def test_an_untrusted_model_is_refused_on_the_driver(spark, tmp_path, monkeypatch):
    import modelpack
    import modelpack.flavors.python
    from modelpack.errors import UntrustedModelError
    from modelpack.spark import udf
    from tests.models import Doubler

    monkeypatch.delenv("MODELPACK_TRUST")
    path = modelpack.flavors.python.save(Doubler(), tmp_path / "m")
    with pytest.raises(UntrustedModelError, match=r"tests\.models\.Doubler"):
        udf(spark, path, "double")  # before anything is shipped to an executor
    assert udf(spark, path, "double", trust=["tests.models.Doubler"]) is not None
