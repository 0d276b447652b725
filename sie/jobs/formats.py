"""Reading Parquet, JSONL and CSV in fixed-size chunks of rows, and writing scored parts as Parquet or JSONL.

A chunk covers input rows ``[start, stop)``, numbered from 0 in file order (a CSV header and blank lines are not
rows). Its boundaries depend only on the chunk size, never on how the file happens to be laid out, so that a run
resumed at a chunk boundary scores exactly the groups of pairs an uninterrupted run would.

Parquet goes through pyarrow's batch reader. JSONL and CSV are parsed line by line with Python's ``json`` and
``csv``: pyarrow's streaming text readers infer column types from the first block and fail a whole later block that
does not fit, without naming the row, where a bad row here is caught and reported alone, with its row and line
numbers. CSV values stay text, exactly as written (an id ``007`` stays ``007``); an empty field is an empty string.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sie.errors import InvalidInputError
from sie.inputs import is_utf8_text

INPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def file_format(path: Path, formats: dict[str, str], role: str) -> str:
    """The format of ``path`` by its extension, from ``formats``."""
    found = formats.get(path.suffix.lower())
    if found is None:
        raise InvalidInputError(role, f"{path}: unknown extension {path.suffix!r}; "
                                      f"expected one of {', '.join(formats)}")
    return found


@dataclass(frozen=True)
class Reject:
    """An input row that cannot be scored: its number, its line in a text file, why, and what it held."""

    row: int
    error: str
    line: int | None = None
    record: Any = None

    def to_json(self) -> str:
        """One JSON line; non-ASCII text as itself, unless the record holds text that is not UTF-8 (a lone
        surrogate, the reason it was set aside): then escaped, as the input spelled it."""
        entry = {key: value for key, value in
                 {"row": self.row, "line": self.line, "error": self.error, "record": self.record}.items()
                 if value is not None}
        line = json.dumps(entry, ensure_ascii=False, default=json_value)
        return line if is_utf8_text(line) else json.dumps(entry, default=json_value)


class Rows(Protocol):
    """The rows of one chunk, in input order, whatever their in-memory form."""

    def __len__(self) -> int: ...
    def column(self, name: str) -> list[Any]: ...
    def take(self, indices: Sequence[int]) -> Rows: ...
    def select(self, names: Sequence[str]) -> Rows: ...
    def record(self, index: int) -> dict[str, Any]: ...
    def to_table(self) -> pa.Table: ...
    def to_records(self) -> list[dict[str, Any]]: ...


class ArrowRows:
    """Rows held as a pyarrow Table (Parquet and CSV input)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def column(self, name: str) -> list[Any]:
        return self.table.column(name).to_pylist()

    def take(self, indices: Sequence[int]) -> ArrowRows:
        return ArrowRows(self.table.take(pa.array(indices, pa.int64())))

    def select(self, names: Sequence[str]) -> ArrowRows:
        return ArrowRows(self.table.select(list(names)))

    def record(self, index: int) -> dict[str, Any]:
        return self.table.slice(index, 1).to_pylist()[0]

    def to_table(self) -> pa.Table:
        return self.table

    def to_records(self) -> list[dict[str, Any]]:
        return self.table.to_pylist()


class RecordRows:
    """Rows held as the dicts JSON gave (JSONL input): each keeps exactly its own keys and values."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def column(self, name: str) -> list[Any]:
        return [record.get(name) for record in self.records]

    def take(self, indices: Sequence[int]) -> RecordRows:
        return RecordRows([self.records[i] for i in indices])

    def select(self, names: Sequence[str]) -> RecordRows:
        return RecordRows([{name: record.get(name) for name in names} for record in self.records])

    def record(self, index: int) -> dict[str, Any]:
        return self.records[index]

    def to_table(self) -> pa.Table:
        if not self.records:
            return pa.table({})
        # pa.array infers one struct type over every record (from_pylist would keep the first record's keys only).
        return pa.Table.from_struct_array(pa.array(self.records))

    def to_records(self) -> list[dict[str, Any]]:
        return self.records


@dataclass
class Chunk:
    """Input rows ``[start, stop)``: the readable ones in ``rows`` (their numbers in ``row_numbers``, their lines in
    ``lines`` for text files) and those that could not even be parsed in ``rejects``."""

    start: int
    stop: int
    rows: Rows
    row_numbers: list[int]
    lines: list[int] | None = None
    rejects: list[Reject] = field(default_factory=list)


def columns_of(path: Path, fmt: str) -> dict[str, pa.DataType | None] | None:
    """The input's columns and their Arrow types (None: text), when the file declares them; None for JSONL."""
    if fmt == "parquet":
        try:
            schema = pq.read_schema(path)
        except pa.ArrowInvalid as error:  # not Parquet, or cut short (a file still being written)
            raise InvalidInputError("input", f"{path}: not a readable Parquet file ({error})") from None
        duplicates = sorted({name for name in schema.names if schema.names.count(name) > 1})
        if duplicates:
            raise InvalidInputError("input", f"{path}: the Parquet schema repeats column(s) {', '.join(duplicates)}")
        return {field.name: field.type for field in schema}
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as stream:
            reader = csv.reader(stream, strict=True)
            header = _csv_line(reader, path)
        if not header:
            raise InvalidInputError("input", f"{path}: a CSV file needs a header line naming its columns")
        if any(map(_undecodable, header)):
            raise InvalidInputError("input", f"{path}: the CSV header is not valid UTF-8")
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            raise InvalidInputError("input", f"{path}: the CSV header repeats column(s) {', '.join(duplicates)}")
        return dict.fromkeys(header)
    return None


def is_text_type(type_: pa.DataType | None) -> bool:
    """Whether a column of ``type_`` holds text (or nothing at all: every row is then reported missing)."""
    if type_ is None or pa.types.is_null(type_):
        return True
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    return pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_string_view(type_)


def count_rows(path: Path, fmt: str) -> int | None:
    """Rows in the input when its metadata says so (Parquet), else None: text files are not read twice."""
    return pq.ParquetFile(path).metadata.num_rows if fmt == "parquet" else None


def read_chunks(path: Path, fmt: str, chunk_rows: int, start: int = 0) -> Iterator[Chunk]:
    """Chunks of ``chunk_rows`` input rows (the last one shorter) from row ``start``, which is a chunk boundary. An
    input without rows gives one empty chunk, so that the output still has the input's columns."""
    readers = {"parquet": _parquet_chunks, "jsonl": _jsonl_chunks, "csv": _csv_chunks}
    return readers[fmt](path, chunk_rows, start)


def _parquet_chunks(path: Path, chunk_rows: int, start: int) -> Iterator[Chunk]:
    # Read each column chunk through a 1 MiB buffer, page by page: by default pyarrow pre-buffers whole column
    # chunks, so a file written as one row group would be held whole however small the batches.
    file = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    metadata = file.metadata
    if start >= metadata.num_rows:
        if metadata.num_rows == 0 and start == 0:  # an input without rows: one empty chunk, its columns
            yield Chunk(0, 0, ArrowRows(file.schema_arrow.empty_table()), [])
        return
    # Skip whole row groups before ``start`` without reading them; rows before it in its own group are dropped.
    group_starts = np.cumsum([0] + [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])
    first = int(np.searchsorted(group_starts, start, side="right")) - 1
    batches = file.iter_batches(batch_size=chunk_rows, row_groups=range(first, metadata.num_row_groups))
    row = start
    for table in _rechunk(batches, chunk_rows, skip=start - int(group_starts[first])):
        yield Chunk(row, row + table.num_rows, ArrowRows(table), list(range(row, row + table.num_rows)))
        row += table.num_rows


def _rechunk(batches: Iterable[pa.RecordBatch], size: int, skip: int) -> Iterator[pa.Table]:
    """Tables of exactly ``size`` rows (the last one shorter) from ``batches``, after dropping ``skip`` rows."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        if skip:
            dropped = min(skip, batch.num_rows)
            batch, skip = batch.slice(dropped), skip - dropped
        pending.append(batch)
        held += batch.num_rows
        while held >= size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, size)
            rest = table.slice(size)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending)


class _TextChunks:
    """Gathers the parsed rows of a text file, chunk by chunk."""

    def __init__(self, chunk_rows: int, start: int) -> None:
        self.chunk_rows = chunk_rows
        self._open(start)

    def _open(self, start: int) -> None:
        self.start = start
        self.records: list[Any] = []
        self.row_numbers: list[int] = []
        self.lines: list[int] = []
        self.rejects: list[Reject] = []

    def add(self, row: int, line: int, record: Any) -> None:
        self.records.append(record)
        self.row_numbers.append(row)
        self.lines.append(line)

    def reject(self, row: int, line: int, error: str, record: Any) -> None:
        self.rejects.append(Reject(row, error, line, record))

    def full(self, row: int) -> bool:
        """Whether ``row`` is the last row of the open chunk."""
        return row + 1 - self.start == self.chunk_rows

    def close(self, stop: int, rows: Rows) -> Chunk:
        """The chunk ``[start, stop)`` with ``rows`` built from the records; the next one opens at ``stop``."""
        chunk = Chunk(self.start, stop, rows, self.row_numbers, self.lines, self.rejects)
        self._open(stop)
        return chunk


def _jsonl_chunks(path: Path, chunk_rows: int, start: int) -> Iterator[Chunk]:
    chunks = _TextChunks(chunk_rows, start)
    row = -1
    with open(path, "rb") as stream:
        for line, text in enumerate(stream, 1):
            if not text.strip():
                continue
            row += 1
            if row < start:
                continue
            try:
                record = json.loads(text)
            except ValueError as error:  # UnicodeDecodeError included
                chunks.reject(row, line, f"is not valid JSON ({error})", text.decode("utf-8", "replace").rstrip("\n"))
            else:
                if isinstance(record, dict):
                    chunks.add(row, line, record)
                else:
                    chunks.reject(row, line, f"is not a JSON object, got {type(record).__name__}", record)
            if chunks.full(row):
                yield chunks.close(row + 1, RecordRows(chunks.records))
    if row + 1 > chunks.start or (row < 0 and start == 0):  # an input without rows: one empty chunk
        yield chunks.close(row + 1, RecordRows(chunks.records))


def _csv_chunks(path: Path, chunk_rows: int, start: int) -> Iterator[Chunk]:
    # A document may be a whole web page: lift the csv module's 128 KiB limit on one field.
    csv.field_size_limit(sys.maxsize)
    chunks = _TextChunks(chunk_rows, start)
    row = -1
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as stream:
        reader = csv.reader(stream, strict=True)
        header = _csv_line(reader, path)
        first_line = reader.line_num + 1
        while (fields := _csv_line(reader, path)) is not None:
            line, first_line = first_line, reader.line_num + 1
            if not fields:
                continue
            row += 1
            if row < start:
                continue
            if any(map(_undecodable, fields)):
                chunks.reject(row, line, "is not valid UTF-8",
                              [field.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for field in fields])
            elif len(fields) == len(header):
                chunks.add(row, line, fields)
            else:
                chunks.reject(row, line, f"has {len(fields)} fields where the header has {len(header)}", fields)
            if chunks.full(row):
                yield chunks.close(row + 1, _csv_rows(header, chunks.records))
    if row + 1 > chunks.start or (row < 0 and start == 0):  # an input without rows: one empty chunk, its columns
        yield chunks.close(row + 1, _csv_rows(header, chunks.records))


def _csv_line(reader: Any, path: Path) -> list[str] | None:
    """The next record of ``reader`` (a strict ``csv.reader``), None at the end; InvalidInputError naming the line
    where the file stops being CSV (an unbalanced quote would otherwise swallow the rows after it)."""
    try:
        return next(reader, None)
    except csv.Error as error:
        raise InvalidInputError("input", f"{path}: line {reader.line_num}: not valid CSV ({error}); a quote that "
                                         "is never closed?") from None


def _undecodable(text: str) -> bool:
    """Whether ``text`` holds bytes that were not UTF-8 (read with ``errors="surrogateescape"``)."""
    return any("\udc80" <= character <= "\udcff" for character in text)


def _csv_rows(header: list[str], records: list[list[str]]) -> ArrowRows:
    columns = zip(*records, strict=True) if records else [[] for _ in header]
    return ArrowRows(pa.table({name: pa.array(values, pa.string())
                               for name, values in zip(header, columns, strict=True)}))


def json_value(value: Any) -> Any:
    """JSON for what Arrow gives that ``json`` cannot write: dates and times in ISO 8601, anything else as text."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


class PartFormat(Protocol):
    """How scored parts of one output format are written and joined into the output file."""

    suffix: str

    def write(self, path: Path, rows: Rows, scores: np.ndarray, score_column: str) -> None: ...
    def unify(self, schema: pa.Schema | None, part: Path) -> pa.Schema | None: ...
    def combine(self, parts: Sequence[Path], path: Path, score_column: str) -> None: ...


class ParquetParts:
    suffix = ".parquet"

    def write(self, path: Path, rows: Rows, scores: np.ndarray, score_column: str) -> None:
        try:
            table = rows.to_table().append_column(score_column, pa.array(scores, pa.float32()))
            pq.write_table(table, path)
        except (pa.ArrowException, OverflowError) as error:
            # JSON allows what Parquet does not: mixed types in a column, integers past 64 bits, empty objects.
            raise InvalidInputError("rows", f"these JSON values do not fit Parquet columns ({error}); write JSONL "
                                    "output (OUTPUT ending in .jsonl) to keep them as they are") from None

    def unify(self, schema: pa.Schema | None, part: Path) -> pa.Schema:
        """``schema`` (the parts' before ``part``, None for none) unified with ``part``'s: checked as each part is
        written, so that a type no Parquet column can share with an earlier part's (an id a number in one chunk
        of JSONL input, text in another) stops the run there, not once every row is scored."""
        return _unified([*([schema] if schema is not None else []), pq.read_schema(part)])

    def combine(self, parts: Sequence[Path], path: Path, score_column: str) -> None:
        """One Parquet file holding every part in order, read one part at a time.

        Parts of JSONL input may differ in their columns (a key no row of a chunk has) or types (a column null in
        one chunk): every part is conformed to the union of their schemas.
        """
        if not parts:
            pq.write_table(pa.table({score_column: pa.array([], pa.float32())}), path)
            return
        schema = _unified([pq.read_schema(part) for part in parts])
        # The score stays the last column even when a later part brings a column the first ones lacked.
        schema = pa.schema([*(f for f in schema if f.name != score_column), schema.field(score_column)],
                           metadata=schema.metadata)
        with pq.ParquetWriter(path, schema) as writer:
            for part in parts:
                writer.write_table(_conform(pq.read_table(part), schema))


def _unified(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for tables of ``schemas``; InvalidInputError, asking for JSONL output, where it cannot be."""
    try:
        return pa.unify_schemas(list(schemas), promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise InvalidInputError("rows", f"a column holds values of types that do not fit one Parquet column "
                                f"({error}); write JSONL output to keep them as they are") from None


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order: missing columns null, others cast to the unified type."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


class JsonlParts:
    suffix = ".jsonl"

    def write(self, path: Path, rows: Rows, scores: np.ndarray, score_column: str) -> None:
        with open(path, "w", encoding="utf-8") as stream:
            for record, score in zip(rows.to_records(), scores.tolist(), strict=True):
                stream.write(_json_line({**record, score_column: score}))
                stream.write("\n")

    def unify(self, schema: pa.Schema | None, part: Path) -> None:
        """Nothing to check: JSON lines need no common types."""

    def combine(self, parts: Sequence[Path], path: Path, score_column: str) -> None:
        with open(path, "wb") as stream:
            concatenate(parts, stream)


def _json_line(record: dict[str, Any]) -> str:
    """``record`` as one line of JSON. NaN and infinities, which Parquet floats may hold and JSON has no words for
    (``json`` would write ``NaN``, which most JSON readers refuse), become null."""
    try:
        return json.dumps(record, ensure_ascii=False, default=json_value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(record), ensure_ascii=False, default=json_value, allow_nan=False)


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite, at any depth of lists and maps, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def concatenate(parts: Sequence[Path], stream: BinaryIO) -> None:
    """The bytes of ``parts`` one after another into ``stream``."""
    for part in parts:
        with open(part, "rb") as source:
            shutil.copyfileobj(source, stream)


PART_FORMATS: dict[str, PartFormat] = {"parquet": ParquetParts(), "jsonl": JsonlParts()}
