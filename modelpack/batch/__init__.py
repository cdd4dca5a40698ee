"""Batch scoring: stream CSV, Parquet or JSON Lines of any size through a model, in chunks."""

from __future__ import annotations

from modelpack.batch._io import format_of
from modelpack.batch._job import DEFAULT_BATCH_SIZE, ERRORS_SUFFIX, BatchSummary, score
from modelpack.batch._scoring import predictions_table

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ERRORS_SUFFIX",
    "BatchSummary",
    "format_of",
    "predictions_table",
    "score",
]
