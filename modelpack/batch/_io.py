"""Reading inputs as fixed-size Arrow chunks, and writing outputs to a temporary sibling.

Inputs and outputs may be local paths or ``s3://`` URIs; a directory (or an S3 prefix) of part
files is read as one dataset, in file-name order. S3 objects go through the project's boto3
client one file at a time, so memory stays bounded by the chunk size, not the object size.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from modelpack.errors import InvalidInputError

FORMATS = ("parquet", "csv", "jsonl")
_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def format_of(name: str, given: str | None = None) -> str | None:
    if given is not None:
        if given not in FORMATS:
            raise InvalidInputError(f"unknown format {given!r}; choose one of {', '.join(FORMATS)}")
        return given
    for suffix in reversed(Path(name.rstrip("/")).suffixes):
        if suffix.lower() in _SUFFIXES:
            return _SUFFIXES[suffix.lower()]
    return None


def _is_part(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return bool(base) and not base.startswith((".", "_")) and not base.endswith(".crc")


@dataclass(frozen=True)
class Source:
    """Part files of an input (local paths or S3 keys), in order, and their format."""

    uri: str
    parts: tuple[str, ...]
    fmt: str

    @property
    def on_s3(self) -> bool:
        return self.uri.startswith("s3://")


def open_source(uri: str, fmt: str | None = None) -> Source:
    parts = _s3_parts(uri) if uri.startswith("s3://") else _local_parts(uri)
    chosen = format_of(uri, fmt) or next((f for p in parts if (f := format_of(p))), None)
    if chosen is None:
        raise InvalidInputError(
            f"cannot tell the format of {uri}; pass --input-format ({', '.join(FORMATS)})"
        )
    if len(parts) > 1:  # a directory: its part files of that format only
        parts = [p for p in parts if format_of(p) in (None, chosen)]
    if not parts:
        raise InvalidInputError(f"{uri} holds no {chosen} files")
    return Source(uri, tuple(parts), chosen)


def _local_parts(uri: str) -> list[str]:
    path = Path(uri.removeprefix("file://")).expanduser()
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        raise InvalidInputError(f"input {uri} does not exist")
    found = sorted(
        str(p) for p in path.rglob("*") if p.is_file() and _is_part(p.relative_to(path).as_posix())
    )
    if not found:
        raise InvalidInputError(f"input directory {uri} holds no part files")
    return found


def _s3_parts(uri: str) -> list[str]:
    from modelpack._s3 import _client, split_uri

    bucket, prefix = split_uri(uri)
    pages = _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    exact = [k for k in keys if k == prefix]
    under = sorted(k for k in keys if k.startswith(prefix.rstrip("/") + "/") and _is_part(k))
    found = exact or under
    if not found:
        raise InvalidInputError(f"input {uri} does not exist")
    return [f"s3://{bucket}/{k}" for k in found]


@contextlib.contextmanager
def _local_copy(part: str) -> Iterator[str]:
    if not part.startswith("s3://"):
        yield part
        return
    from modelpack._s3 import _client, split_uri

    bucket, key = split_uri(part)
    with tempfile.TemporaryDirectory(prefix="modelpack-batch-") as tmp:
        dest = os.path.join(tmp, "part")
        _client().download_file(bucket, key, dest)
        yield dest


def count_rows(source: Source) -> int | None:
    """Total rows when the format says so cheaply (Parquet footers of local files)."""
    if source.fmt != "parquet" or source.on_s3:
        return None
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in source.parts)


def read_chunks(
    source: Source,
    batch_size: int,
    columns: Sequence[str] | None = None,
    text_types: Mapping[str, pa.DataType] | None = None,
) -> Iterator[pa.Table]:
    """Tables of exactly ``batch_size`` rows (the last may be shorter), across part files.

    ``text_types`` (the signature's numeric columns and their Arrow types) keep one bad cell
    from failing its column: a CSV input reads them as text, not typed by inference; a JSON
    Lines input reads them typed, and a block of lines that does not parse so is read line by
    line with those columns as the JSON text of each cell. The scorer parses text cells to the
    signature's types cell by cell, so a bad cell fails its row only.
    """
    types = dict(text_types or {})
    pending: list[pa.RecordBatch] = []
    held = 0
    for part in source.parts:
        with _local_copy(part) as path:
            for batch in _read_batches(path, source.fmt, batch_size, columns, types):
                if batch.num_rows == 0:
                    continue
                pending.append(batch)
                held += batch.num_rows
                while held >= batch_size:
                    table = _joined(pending)
                    yield table.slice(0, batch_size).combine_chunks()
                    rest = table.slice(batch_size)
                    pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield _joined(pending).combine_chunks()


def _joined(batches: list[pa.RecordBatch]) -> pa.Table:
    """One table of ``batches``, whose types may differ (JSON Lines blocks read apart)."""
    schemas = {b.schema for b in batches}
    if len(schemas) == 1:
        return pa.Table.from_batches(batches)
    # A column that is text in one block (its cells kept as JSON text) is text in all.
    text = {f.name for s in schemas for f in s if pa.types.is_string(f.type)}
    tables = []
    for batch in batches:
        table = pa.Table.from_batches([batch])
        for name in text & set(table.column_names):
            if not pa.types.is_string(table.schema.field(name).type):
                index = table.column_names.index(name)
                table = table.set_column(index, name, table.column(name).cast(pa.string()))
        tables.append(table)
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidInputError(f"the input's columns change type: {exc}") from exc


def _read_batches(
    path: str,
    fmt: str,
    batch_size: int,
    columns: Sequence[str] | None,
    text_types: Mapping[str, pa.DataType],
) -> Iterator[pa.RecordBatch]:
    cols = list(columns) if columns is not None else None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        # pre_buffer keeps every row group it has read: memory would grow with the file.
        with pq.ParquetFile(path, pre_buffer=False) as pf:
            _check_columns(path, pf.schema_arrow.names, cols)
            yield from pf.iter_batches(batch_size=batch_size, columns=cols)
        return
    if fmt == "csv":
        import pyarrow.csv as pcsv

        # Inference reads a column of numbers with one stray word as text (every row then
        # fails the signature), or fails the whole job when the word is past the first block.
        convert = pcsv.ConvertOptions(
            include_columns=cols, column_types={name: pa.string() for name in text_types}
        )
        try:
            reader = pcsv.open_csv(path, convert_options=convert)
        except pa.ArrowInvalid as exc:
            raise InvalidInputError(f"{path}: cannot read as CSV ({exc})") from exc
        yield from _guarded(reader, path)
        return
    if text_types and cols is not None:
        yield from _typed_jsonl_batches(path, cols, text_types)
        return
    yield from _jsonl_batches(path, cols)


def _guarded(reader: Any, path: str) -> Iterator[pa.RecordBatch]:
    try:
        yield from reader
    except pa.ArrowInvalid as exc:
        raise InvalidInputError(f"{path}: {str(exc).splitlines()[0]}") from exc


def _jsonl_batches(path: str, cols: list[str] | None) -> Iterator[pa.RecordBatch]:
    import pyarrow.json as pjson

    try:
        reader = pjson.open_json(path)
    except pa.ArrowInvalid as exc:
        raise InvalidInputError(f"{path}: cannot read as JSON Lines ({exc})") from exc
    for batch in _guarded(reader, path):
        if cols is not None:
            _check_columns(path, batch.schema.names, cols)
            batch = batch.select(cols)
        yield batch


# Bytes of JSON Lines parsed at once; a block with a bad cell is parsed again line by line.
JSONL_BLOCK = 4 << 20


def _typed_jsonl_batches(
    path: str, cols: list[str], types: Mapping[str, pa.DataType]
) -> Iterator[pa.RecordBatch]:
    import pyarrow.json as pjson

    parse = pjson.ParseOptions(explicit_schema=pa.schema(list(types.items())))
    with open(path, "rb") as fh:
        while block := fh.read(JSONL_BLOCK):
            if not block.endswith(b"\n"):
                block += fh.readline()  # whole lines only
            try:
                table = pjson.read_json(pa.BufferReader(block), parse_options=parse)
            except pa.ArrowInvalid:
                # A cell of another type (a word, an object) where the signature has a
                # number: this block line by line, its numeric columns as JSON text.
                table = _jsonl_block_as_text(path, block, cols, types)
            _check_columns(path, table.column_names, cols)
            yield from table.select(cols).to_batches()


def _jsonl_block_as_text(
    path: str, block: bytes, cols: list[str], types: Mapping[str, pa.DataType]
) -> pa.Table:
    import orjson

    rows = []
    for line in block.splitlines():
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidInputError(f"{path}: a line is not valid JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise InvalidInputError(f"{path}: a line is not a JSON object: {line[:60]!r}")
        rows.append(row)
    arrays: dict[str, pa.Array] = {}
    for name in cols:
        values = [row.get(name) for row in rows]
        if name in types:  # JSON text, strings quoted: "1.5" in a float column is a bad cell
            cells = [None if v is None else orjson.dumps(v).decode() for v in values]
            arrays[name] = pa.array(cells, pa.string())
            continue
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InvalidInputError(f"{path}: column {name!r} mixes types ({exc})") from exc
    return pa.table(arrays)


def _check_columns(path: str, names: Sequence[str], wanted: Sequence[str] | None) -> None:
    missing = [c for c in wanted or () if c not in names]
    if missing:
        raise InvalidInputError(
            f"{path} has no column(s) {', '.join(map(repr, missing))} "
            f"(it has: {', '.join(names)}); check --columns and --passthrough"
        )


# -- writing ---------------------------------------------------------------------------------


class ChunkWriter(Protocol):
    def write(self, table: pa.Table) -> None: ...

    def close(self) -> None: ...


class _ArrowWriter:
    """Parquet or CSV through pyarrow's writer of that format, opened on the first chunk."""

    def __init__(self, path: str, fmt: str) -> None:
        self.path = path
        self._fmt = fmt
        self._writer: Any = None
        self._schema: pa.Schema | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            self._schema = table.schema
            self._writer = self._open(table.schema)
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._writer.write_table(table)

    def _open(self, schema: pa.Schema) -> Any:
        if self._fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetWriter(self.path, schema)
        import pyarrow.csv as pcsv

        return pcsv.CSVWriter(self.path, schema)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class _JsonlWriter:
    def __init__(self, path: str) -> None:
        self._fh = open(path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, table: pa.Table) -> None:
        import orjson

        dumps, opt = orjson.dumps, orjson.OPT_SERIALIZE_NUMPY
        self._fh.write(b"".join(dumps(row, option=opt) + b"\n" for row in table.to_pylist()))

    def close(self) -> None:
        self._fh.close()


@contextlib.contextmanager
def staged_output(uri: str) -> Iterator[str]:
    """A temporary path for ``uri``, moved under the final name only when the block succeeds.

    Local outputs are a hidden sibling renamed at the end (atomic on one filesystem); S3 outputs
    are a local temporary file uploaded at the end (an S3 object appears whole or not at all).
    """
    if uri.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="modelpack-batch-") as tmp:
            staged = os.path.join(tmp, "output")
            yield staged
            if os.path.exists(staged):
                from modelpack._s3 import _client, split_uri

                bucket, key = split_uri(uri)
                _client().upload_file(staged, bucket, key)
        return
    final = Path(uri.removeprefix("file://")).expanduser()
    if final.is_dir():
        raise InvalidInputError(f"output {uri} is a directory; give a file name")
    final.parent.mkdir(parents=True, exist_ok=True)
    sibling = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield str(sibling)
        if sibling.exists():
            os.replace(sibling, final)
    finally:
        sibling.unlink(missing_ok=True)


def open_writer(path: str, fmt: str) -> ChunkWriter:
    return _JsonlWriter(path) if fmt == "jsonl" else _ArrowWriter(path, fmt)


def remove_output(uri: str) -> None:
    """Delete a stale local file (an errors file from an earlier run of the same job)."""
    if not uri.startswith("s3://"):
        Path(uri.removeprefix("file://")).expanduser().unlink(missing_ok=True)
