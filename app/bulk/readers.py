"""Stream (id, text) rows out of JSONL, CSV or Parquet files, one chunk at a time.

Only one chunk of rows is in memory at once, whatever the file's size. Every chunk
carries the position where it starts and ends (a byte offset for text files, a row
index for Parquet) so that an interrupted run can seek past finished chunks instead
of reading them again. A row that cannot be used becomes a ``BadRow`` naming its line;
the caller decides whether that stops the run or is reported.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from app.bulk.options import BulkError, BulkOptions

_BOM = b"\xef\xbb\xbf"
_MAX_CSV_FIELD = 2**31 - 1  # the csv module's default (128 KiB) is too small for documents


@dataclass(frozen=True)
class Position:
    """Where the next record starts: byte offset (text files) or row index (Parquet), and its 1-based line."""

    offset: int
    line: int


START = Position(0, 1)


@dataclass(frozen=True)
class BadRow:
    unit: str  # "line" (JSONL, CSV: where the record starts) or "row" (Parquet, 1-based)
    number: int
    error: str

    @property
    def where(self) -> str:
        return f"{self.unit} {self.number}"


@dataclass
class Chunk:
    index: int
    start: Position
    end: Position = START
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)

    @property
    def records(self) -> int:
        return len(self.ids) + len(self.bad_rows)


class RowError(ValueError):
    """One row cannot be embedded; the message says why (without the location)."""


def checked_row(record_id: Any, text: Any, id_field: str, text_field: str) -> tuple[str, str]:
    """The row's id as a string and its text, or a RowError saying what is wrong."""
    if not isinstance(text, str):
        if text is None:
            raise RowError(f"{text_field!r} is missing or null")
        raise RowError(f"{text_field!r} must be a string, got {type(text).__name__}")
    if isinstance(record_id, bool) or not isinstance(record_id, (str, int)):
        if record_id is None:
            raise RowError(f"{id_field!r} is missing or null")
        raise RowError(f"{id_field!r} must be a string or an integer, got {type(record_id).__name__}")
    record_id = str(record_id)
    if not record_id:
        raise RowError(f"{id_field!r} is empty")
    if "\n" in record_id or "\r" in record_id:
        raise RowError(f"{id_field!r} contains a line break")
    return record_id, text


def parse_json_line(raw: bytes | str, id_field: str, text_field: str) -> tuple[str, str]:
    """One JSONL record to (id, text); shared with the Ray job so both judge rows alike."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RowError(f"not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise RowError(f"expected a JSON object, got {type(record).__name__}")
    return checked_row(record.get(id_field), record.get(text_field), id_field, text_field)


def checked_columns(ids: list[Any], texts: list[Any]) -> list[str] | None:
    """The ids as strings if every row of a block is fine, else None (judge those rows one by one).

    The common case, every row good, is checked with a few C-level passes over the
    block instead of a Python call per row; ``checked_row`` then only runs on blocks
    that hold a bad row, to name it.
    """
    if texts and set(map(type, texts)) != {str}:
        return None
    id_types = set(map(type, ids))
    if id_types <= {str}:
        joined = "".join(ids)
        if "\n" in joined or "\r" in joined or not all(ids):
            return None
        return ids
    if id_types == {int}:  # not bool: type() is exact
        return list(map(str, ids))
    return None


def parse_json_lines(lines: list[bytes], id_field: str, text_field: str) -> tuple[list[str], list[str]] | None:
    """(ids, texts) of a block of non-blank JSONL lines if every line is a good record, else None."""
    try:
        records = list(map(orjson.loads, lines))
        texts = [record.get(text_field) for record in records]  # AttributeError: a line that is not an object
        ids = [record.get(id_field) for record in records]
    except (orjson.JSONDecodeError, AttributeError):
        return None
    checked = checked_columns(ids, texts)
    return None if checked is None else (checked, texts)


def read_chunks(options: BulkOptions, start: Position = START, first_index: int = 0) -> Iterator[Chunk]:
    """Chunks of ``options.chunk_size`` records from ``start`` on, numbered from ``first_index``."""
    if options.input_format == "jsonl":
        return _jsonl_chunks(options, start, first_index)
    if options.input_format == "csv":
        return _csv_chunks(options, start, first_index)
    if options.input_format == "parquet":
        return _parquet_chunks(options, start, first_index)
    raise BulkError(f"unknown input format {options.input_format!r}")


def input_extent(options: BulkOptions) -> int:
    """The end position's offset: file size for text files, row count for Parquet (for the ETA)."""
    if options.input_format == "parquet":
        return _open_parquet(options).metadata.num_rows
    return options.input.stat().st_size


def _jsonl_chunks(options: BulkOptions, start: Position, first_index: int) -> Iterator[Chunk]:
    size = options.chunk_size
    with open_input(options.input) as handle:
        handle.seek(start.offset)
        position, index = start, first_index
        while True:
            # Whole lines up to ``size`` records (blank lines hold none), read by the C line iterator.
            lines: list[bytes] = []
            records = 0
            while records < size:
                block = list(itertools.islice(handle, size - records))
                if not block:
                    break
                lines += block
                records += len(block) - sum(1 for raw in block if raw.isspace())
            if not records:
                return
            chunk = _jsonl_chunk(options, index, position, lines)
            yield chunk
            position, index = chunk.end, index + 1


def read_jsonl_span(options: BulkOptions, index: int, start: Position, end_offset: int) -> Chunk:
    """The records of the JSONL lines from ``start`` up to byte ``end_offset`` (a line boundary), as one chunk."""
    with open_input(options.input) as handle:
        handle.seek(start.offset)
        data = handle.read(end_offset - start.offset)
    return _jsonl_chunk(options, index, start, list(io.BytesIO(data)))


def _jsonl_chunk(options: BulkOptions, index: int, position: Position, lines: list[bytes]) -> Chunk:
    """Parse whole JSONL lines starting at ``position`` into a chunk."""
    id_field, text_field = options.id_field, options.text_field
    end = Position(position.offset + sum(map(len, lines)), position.line + len(lines))
    if position.offset == 0 and lines:  # a UTF-8 byte order mark some editors write
        lines[0] = lines[0].removeprefix(_BOM)
    chunk = Chunk(index, position, end)
    parsed = parse_json_lines([raw for raw in lines if not raw.isspace()], id_field, text_field)
    if parsed is not None:
        chunk.ids, chunk.texts = parsed
        return chunk
    for number, raw in enumerate(lines, start=position.line):  # some line is bad: judge them one by one
        if raw.isspace():
            continue
        try:
            record_id, text = parse_json_line(raw, id_field, text_field)
        except RowError as exc:
            chunk.bad_rows.append(BadRow("line", number, str(exc)))
        else:
            chunk.ids.append(record_id)
            chunk.texts.append(text)
    return chunk


class _CountedLines:
    """Decoded lines of a binary file that remember how many bytes and lines were consumed.

    The csv module pulls exactly one line at a time, so after each record these counters
    are the position of the next one. Lines that are not UTF-8 are remembered, decoded
    with replacement characters, and their record reported as bad.
    """

    def __init__(self, handle: IO[bytes], start: Position) -> None:
        self.handle = handle
        self.offset = start.offset
        self.lines_read = start.line - 1
        self.undecodable: set[int] = set()

    def __iter__(self) -> Iterator[str]:
        for raw in self.handle:
            self.offset += len(raw)
            self.lines_read += 1
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.undecodable.add(self.lines_read)
                yield raw.decode("utf-8", "replace")

    @property
    def position(self) -> Position:
        return Position(self.offset, self.lines_read + 1)


def _csv_header(options: BulkOptions) -> tuple[int, int, int, Position]:
    """Column count, id and text column indexes, and where the first data row starts."""
    with open_input(options.input) as handle:
        lines = _CountedLines(handle, START)
        header = next(csv.reader(lines, delimiter=options.delimiter), None)
        if not header:
            raise BulkError(f"{options.input} line 1: expected a header row naming the columns, found nothing")
        header[0] = header[0].removeprefix("\ufeff")
        for name, flag in ((options.id_field, "--id-field"), (options.text_field, "--text-field")):
            if name not in header:
                raise BulkError(
                    f"{options.input} line 1: the header has no column {name!r} (columns: {', '.join(header)}); "
                    f"name the right one with {flag}"
                )
        return len(header), header.index(options.id_field), header.index(options.text_field), lines.position


def _csv_chunks(options: BulkOptions, start: Position, first_index: int) -> Iterator[Chunk]:
    csv.field_size_limit(_MAX_CSV_FIELD)
    width, id_column, text_column, data_start = _csv_header(options)
    resume_at = data_start if start == START else start  # the first chunk owns the header's bytes
    id_field, text_field, size = options.id_field, options.text_field, options.chunk_size
    with open_input(options.input) as handle:
        handle.seek(resume_at.offset)
        lines = _CountedLines(handle, resume_at)
        chunk = Chunk(first_index, start)
        record_line = resume_at.line
        try:
            for row in csv.reader(lines, delimiter=options.delimiter, strict=True):
                first_line, record_line = record_line, lines.lines_read + 1
                bad_bytes = bool(lines.undecodable) and any(
                    number in lines.undecodable for number in range(first_line, record_line)
                )
                if not row:
                    continue  # a blank line
                if bad_bytes:
                    chunk.bad_rows.append(BadRow("line", first_line, "not valid UTF-8"))
                elif len(row) != width:
                    error = f"expected {width} fields like the header, got {len(row)}"
                    chunk.bad_rows.append(BadRow("line", first_line, error))
                else:
                    try:
                        record_id, text = checked_row(row[id_column], row[text_column], id_field, text_field)
                    except RowError as exc:
                        chunk.bad_rows.append(BadRow("line", first_line, str(exc)))
                    else:
                        chunk.ids.append(record_id)
                        chunk.texts.append(text)
                if chunk.records >= size:
                    chunk.end = lines.position
                    yield chunk
                    chunk = Chunk(chunk.index + 1, chunk.end)
        except csv.Error as exc:
            # The csv module cannot resynchronise after a broken quote: nothing after it can be trusted.
            raise BulkError(
                f"{options.input} line {record_line}: malformed CSV ({exc}); rows after it cannot be read, fix the file"
            ) from None
        if chunk.records:
            chunk.end = lines.position
            yield chunk


def _open_parquet(options: BulkOptions) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BulkError("reading Parquet needs pyarrow: pip install 'static-embed[parquet]'") from None
    try:
        return pq.ParquetFile(options.input)
    except (OSError, ValueError) as exc:
        raise BulkError(f"{options.input}: not a readable Parquet file ({exc})") from None


def _parquet_chunks(options: BulkOptions, start: Position, first_index: int) -> Iterator[Chunk]:
    import pyarrow as pa

    parquet = _open_parquet(options)
    schema = parquet.schema_arrow
    for name, flag in ((options.id_field, "--id-field"), (options.text_field, "--text-field")):
        if name not in schema.names:
            raise BulkError(
                f"{options.input}: no column {name!r} (columns: {', '.join(schema.names)}); name it with {flag}"
            )
    text_type = schema.field(options.text_field).type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise BulkError(f"{options.input}: column {options.text_field!r} holds {text_type}, not strings")

    # Start at the row group holding the first unfinished row, then drop the rows before it.
    groups, skip, first_row = [], 0, 0
    for group in range(parquet.metadata.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        if first_row + rows > start.offset:
            if not groups:
                skip = start.offset - first_row
            groups.append(group)
        first_row += rows
    if not groups:
        return  # every row was read by an earlier run
    row = start.offset
    chunk = Chunk(first_index, start)
    id_field, text_field, size = options.id_field, options.text_field, options.chunk_size
    batches = parquet.iter_batches(batch_size=size, row_groups=groups, columns=[id_field, text_field])
    for batch in batches:
        if skip:
            dropped = min(skip, batch.num_rows)
            batch, skip = batch.slice(dropped), skip - dropped
        while batch.num_rows:
            piece, batch = batch.slice(0, size - chunk.records), batch.slice(size - chunk.records)
            ids = piece.column(id_field)
            try:
                ids = ids if pa.types.is_string(ids.type) else ids.cast(pa.string())
            except pa.ArrowInvalid as exc:
                problem = f"{options.input}: column {id_field!r} ({ids.type}) cannot be read as ids ({exc})"
                raise BulkError(problem) from None
            id_values, texts = ids.to_pylist(), piece.column(text_field).to_pylist()
            checked = checked_columns(id_values, texts)
            if checked is not None:  # every row fine: no Python call per row
                chunk.ids += checked
                chunk.texts += texts
                row += len(texts)
                id_values = texts = []
            for record_id, text in zip(id_values, texts, strict=True):
                row += 1
                try:
                    record_id, text = checked_row(record_id, text, id_field, text_field)
                except RowError as exc:
                    chunk.bad_rows.append(BadRow("row", row, str(exc)))
                else:
                    chunk.ids.append(record_id)
                    chunk.texts.append(text)
            if chunk.records >= size:
                chunk.end = Position(row, row + 1)
                yield chunk
                chunk = Chunk(chunk.index + 1, chunk.end)
    if chunk.records:
        chunk.end = Position(row, row + 1)
        yield chunk


def open_input(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as exc:
        raise BulkError(f"cannot read {path} ({exc.strerror})") from None
