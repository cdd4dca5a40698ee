"""Scoring Spark DataFrames: a pandas UDF that loads the model once per Python worker.

``pyspark`` is imported here only (the ``spark`` extra). The UDF is the iterator form: each
worker process loads the model on its first batch and keeps it for every later task.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Tuple, Union  # noqa: UP035 (pyspark reads these)

import pandas as pd

from modelpack.errors import InvalidInputError, MissingDependencyError
from modelpack.trust import TrustArg, legacy

if TYPE_CHECKING:
    from modelpack.model import Model
    from modelpack.signature import Signature


def _pyspark() -> Any:
    try:
        import pyspark
    except ImportError as exc:
        raise MissingDependencyError(
            "Spark scoring needs pyspark: pip install 'modelpack[spark]'", package="pyspark"
        ) from exc
    return pyspark


# pyspark resolves the UDF's hints by name at runtime: this alias must live at module level.
_Batches = Iterator[Tuple[Union[pd.Series, pd.DataFrame], ...]]  # noqa: UP006, UP007


@functools.lru_cache(maxsize=4)
def _cached_model(path: str, trust: bool | tuple[str, ...] | None) -> Model:
    from modelpack.model import load

    return load(path, trust=trust)


def udf(
    spark: Any,
    model_uri: str | os.PathLike[str],
    result_type: Any = "double",
    *,
    columns: Sequence[str] | None = None,
    trust: TrustArg = None,
    trust_pickle: bool | None = None,
) -> Any:
    """A pandas UDF scoring its input columns with the model: ``df.select(f(*cols))``.

    Columns arrive by position and take the names in ``columns`` (default: the signature's
    input names); a single struct column keeps its field names. ``result_type`` is a Spark type
    or DDL string; a struct type gets one field per output column of the model.
    """
    _pyspark()
    from pyspark.sql.functions import pandas_udf  # type: ignore[attr-defined]
    from pyspark.sql.types import StructType

    from modelpack.descriptor import Descriptor
    from modelpack.uris import resolve

    path = resolve(Path(model_uri) if isinstance(model_uri, os.PathLike) else model_uri)
    names = list(columns) if columns else _input_names(Descriptor.read(path).model_signature)
    from modelpack.model import check_trust

    trust = legacy(trust, trust_pickle)
    check_trust(path, trust)  # refused here, on the driver, before anything is shipped
    granted = trust if trust is None or isinstance(trust, bool) else tuple(trust)
    local = str(_ship(spark, path))
    is_struct = isinstance(result_type, StructType)

    # pyspark reads the eval type from these exact hints, so one function per return kind.
    def predict_series(batches: _Batches) -> Iterator[pd.Series]:
        model = _cached_model(_executor_path(local), granted)
        for batch in batches:
            yield _score(model, _frame(batch, names)).iloc[:, 0]

    def predict_frame(batches: _Batches) -> Iterator[pd.DataFrame]:
        model = _cached_model(_executor_path(local), granted)
        for batch in batches:
            yield _score(model, _frame(batch, names))

    predict: Any = predict_frame if is_struct else predict_series
    return pandas_udf(predict, returnType=result_type)


def _input_names(signature: Signature | None) -> list[str]:
    if signature is None or signature.inputs.is_tensor:
        return []
    return [c.name for c in signature.inputs.columns]


def _ship(spark: Any, path: Path) -> str:
    # Local mode shares the driver's disk; a cluster gets the model directory via addFile.
    master = str(spark.sparkContext.master)
    if master.startswith("local"):
        return str(path)
    spark.sparkContext.addFile(str(path), recursive=True)
    return "sparkfiles:" + path.name


def _executor_path(local: str) -> str:
    if local.startswith("sparkfiles:"):
        from pyspark import SparkFiles

        return SparkFiles.get(local.removeprefix("sparkfiles:"))
    return local


def _frame(batch: Any, names: Sequence[str]) -> pd.DataFrame:
    if isinstance(batch, pd.DataFrame):
        return batch
    series = list(batch) if isinstance(batch, tuple) else [batch]
    if len(series) == 1 and isinstance(series[0], pd.DataFrame):
        return series[0]
    labels = list(names) if len(names) == len(series) else [f"_{i}" for i in range(len(series))]
    return pd.DataFrame(
        {label: s.reset_index(drop=True) for label, s in zip(labels, series, strict=True)}
    )


def _score(model: Model, frame: pd.DataFrame) -> pd.DataFrame:
    from modelpack.batch import predictions_table

    return predictions_table(model.predict(frame), len(frame)).to_pandas()


def score_files(
    model_uri: str,
    input: str,
    output: str,
    *,
    format: str | None = None,
    input_format: str | None = None,
    columns: Sequence[str] | None = None,
    passthrough: Sequence[str] = (),
    spark: Any = None,
    trust: TrustArg = None,
) -> int:
    """``modelpack batch --engine spark``: read, score with :func:`udf`, write part files."""
    from modelpack.batch import format_of
    from modelpack.descriptor import Descriptor
    from modelpack.uris import resolve

    pyspark_sql = _pyspark().sql
    in_fmt = format_of(input, input_format)
    out_fmt = format_of(output, format) or in_fmt
    if in_fmt is None:
        raise InvalidInputError(f"cannot tell the format of {input}; pass --input-format")
    session = spark or pyspark_sql.SparkSession.builder.appName("modelpack-batch").getOrCreate()
    reader = session.read.option("header", "true").option("inferSchema", "true")
    frame = reader.format(_SPARK_FORMATS[in_fmt]).load(input)
    names = (
        list(columns)
        if columns
        else _input_names(Descriptor.read(resolve(model_uri)).model_signature)
    )
    features = names or [c for c in frame.columns if c not in passthrough]
    f = udf(session, model_uri, "double", columns=features, trust=trust)
    scored = frame.select(*passthrough, f(*features).alias("prediction"))
    writer = scored.write.mode("overwrite").format(_SPARK_FORMATS[out_fmt or "parquet"])
    writer.option("header", "true").save(output)
    return int(
        session.read.format(_SPARK_FORMATS[out_fmt or "parquet"])
        .option("header", "true")
        .load(output)
        .count()
    )


_SPARK_FORMATS = {"parquet": "parquet", "csv": "csv", "jsonl": "json"}
