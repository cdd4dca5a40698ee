"""A batch job: read chunks, score them in this process or in N workers, write them in order."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import pyarrow as pa

from modelpack.batch import _io
from modelpack.batch._lanes import Plan, scored_chunks
from modelpack.batch._progress import Progress
from modelpack.batch._scoring import ON_ERROR, TEXT_TARGETS
from modelpack.errors import InvalidInputError
from modelpack.trust import TrustArg, legacy

DEFAULT_BATCH_SIZE = 65_536
ERRORS_SUFFIX = ".errors.jsonl"


@dataclass(frozen=True)
class BatchSummary:
    """What a batch job did: ``rows`` read, ``scored_rows`` written, ``failed_rows`` skipped."""

    rows: int
    scored_rows: int
    failed_rows: int
    seconds: float
    output: str
    errors_output: str | None
    workers: int
    chunks: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def score(
    model_uri: str | os.PathLike[str],
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    format: str | None = None,
    input_format: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 1,
    columns: Sequence[str] | None = None,
    passthrough: Sequence[str] = (),
    on_error: str = "fail",
    progress: bool = False,
    trust: TrustArg = None,
    trust_pickle: bool | None = None,
) -> BatchSummary:
    """Score ``input`` (file, directory of parts, or ``s3://``) into ``output``, chunk by chunk.

    ``workers`` processes score (this one and ``workers - 1`` spawned helpers), each with its
    own copy of the model. At most ``4 * workers`` chunks of ``batch_size`` rows are between
    reading and writing at once: at most 2 per process being scored or queued, the rest scored
    (their output columns only) and waiting for an earlier chunk to be written.
    """
    from modelpack.descriptor import Descriptor
    from modelpack.uris import resolve

    if on_error not in ON_ERROR:
        raise InvalidInputError(f"unknown --on-error {on_error!r}; choose fail or skip")
    if batch_size < 1 or workers < 1:
        raise InvalidInputError("--batch-size and --workers must be at least 1")
    source = _io.open_source(str(input), input_format)
    out = str(output)
    out_format = _io.format_of(out, format) or source.fmt
    model_path = resolve(Path(model_uri) if isinstance(model_uri, os.PathLike) else model_uri)
    signature = Descriptor.read(model_path).model_signature
    features = list(columns) if columns else _signature_columns(signature)
    trust = legacy(trust, trust_pickle)
    text_types = _text_types(signature, features) if source.fmt in ("csv", "jsonl") else {}
    plan = Plan(
        str(model_path), features, list(passthrough), on_error, _picklable(trust), text_types
    )
    wanted = None if features is None else list(dict.fromkeys([*features, *passthrough]))
    errors_uri = out + ERRORS_SUFFIX
    started = time.perf_counter()
    totals = [0, 0, 0, 0]  # rows, scored, failed, chunks
    with contextlib.ExitStack() as stack:
        stack.enter_context(_terminate_as_interrupt())
        staged = stack.enter_context(_io.staged_output(out))
        staged_errors = stack.enter_context(_io.staged_output(errors_uri))
        writer = _io.open_writer(staged, out_format)
        stack.callback(writer.close)
        arrow_types = {name: TEXT_TARGETS[dtype] for name, dtype in text_types.items()}
        chunks = _io.read_chunks(source, batch_size, wanted, arrow_types)
        results = stack.enter_context(contextlib.closing(scored_chunks(plan, chunks, workers)))
        bar = stack.enter_context(
            Progress(_io.count_rows(source)) if progress else contextlib.nullcontext()
        )
        errors_fh = None
        for result in results:
            if result.table is not None and result.table.num_rows:
                writer.write(result.table)
            if result.errors:
                if errors_fh is None:
                    errors_fh = stack.enter_context(open(staged_errors, "wb"))
                errors_fh.write(b"".join(orjson.dumps(e) + b"\n" for e in result.errors))
            totals[0] += result.rows
            totals[1] += result.table.num_rows if result.table is not None else 0
            totals[2] += len(result.errors)
            totals[3] += 1
            if bar is not None:
                bar.advance(result.rows)
        if totals[1] == 0:
            writer.write(_empty_output(plan))
        if errors_fh is None:
            _io.remove_output(errors_uri)
    rows, scored, failed, count = totals
    return BatchSummary(
        rows=rows,
        scored_rows=scored,
        failed_rows=failed,
        seconds=time.perf_counter() - started,
        output=out,
        errors_output=errors_uri if failed else None,
        workers=workers,
        chunks=count,
    )


def _signature_columns(signature: Any) -> list[str] | None:
    if signature is None or signature.inputs.is_tensor:
        return None
    return [c.name for c in signature.inputs.columns]


def _text_types(signature: Any, features: Sequence[str] | None) -> dict[str, str]:
    # The numeric inputs of a column signature: read as text, parsed by the scorer.
    if signature is None or signature.inputs.is_tensor or features is None:
        return {}
    return {
        c.name: c.dtype
        for c in signature.inputs.columns
        if c.dtype in TEXT_TARGETS and c.name in features
    }


def _empty_output(plan: Plan) -> pa.Table:
    # An input without rows (or with every row skipped) still gets an output file with a header.
    return pa.table({name: pa.array([], pa.null()) for name in [*plan.passthrough, "prediction"]})


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    # SIGTERM unwinds like Ctrl-C, so the staged output is removed before the process exits.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _picklable(trust: TrustArg) -> bool | list[str] | None:
    # The plan travels to worker processes: a list, not whatever iterable the caller gave.
    return trust if trust is None or isinstance(trust, bool) else list(trust)
