"""Write vectors with their ids, one part file per chunk, then assemble the result.

Each part is written to a temporary name and renamed into place, so a part file that
exists is always complete; the manifest (``manifest.py``) records it afterwards.

* Parquet: a directory of ``part-NNNNNN.parquet`` files with columns ``id`` (string) and
  ``vector`` (fixed-size list of float32 or float16). pyarrow, pandas, DuckDB, Spark and
  Ray read the directory as one table; they skip the ``_manifest.jsonl`` and
  ``_bad_rows.jsonl`` files because of their leading underscore.
* npy: parts are ``part-NNNNNN.npy`` plus ``part-NNNNNN.ids.txt`` while running; at the
  end they are concatenated into ``vectors.npy`` (rows in input order) and ``ids.txt``
  (one id per line, same order), and the parts are removed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from app.bulk.options import BulkError

VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.txt"
_COPY_ROWS = 65_536  # rows copied at a time when assembling vectors.npy (flat memory)


class PartWriter(Protocol):
    def write_part(self, index: int, ids: Sequence[str], vectors: np.ndarray) -> None: ...

    def finish(self, indexes: Sequence[int], dimensions: int, dtype: str) -> list[Path]:
        """Assemble the parts into the final output and return its files."""
        ...

    def remove_parts(self, indexes: Sequence[int]) -> None:
        """Delete parts that ``finish`` has copied elsewhere (after the manifest says done)."""
        ...


def part_name(index: int) -> str:
    return f"part-{index:06d}"


def make_writer(output_format: str, output: Path) -> PartWriter:
    if output_format == "parquet":
        return ParquetParts(output)
    if output_format == "npy":
        return NpyParts(output)
    raise BulkError(f"unknown output format {output_format!r} (use parquet or npy)")


def vectors_table(ids: Sequence[str], vectors: np.ndarray):  # -> pyarrow.Table
    """An Arrow table (id: string, vector: fixed-size list); also what the Ray job emits.

    Both columns are built from buffers: the vectors are the numpy array itself (no copy),
    the ids one joined UTF-8 string plus offsets, so no Python object is made per row
    (and pyarrow does not import pandas, a fifth of a second, to inspect Python values).
    """
    import pyarrow as pa

    if vectors.dtype != np.float16:
        vectors = vectors.astype(np.float32, copy=False)
    flat = np.ascontiguousarray(vectors).reshape(-1)
    value_type = pa.float16() if flat.dtype == np.float16 else pa.float32()
    values = pa.Array.from_buffers(value_type, len(flat), [None, pa.py_buffer(flat)])
    # Declared non-null: Parquet then stores no definition level per float (a third less write time).
    vector_type = pa.list_(pa.field("element", value_type, nullable=False), vectors.shape[1])
    schema = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("vector", vector_type, nullable=False)])
    columns = [string_array(ids), pa.FixedSizeListArray.from_arrays(values, type=vector_type)]
    return pa.Table.from_arrays(columns, schema=schema)


def string_array(values: Sequence[str]):  # -> pyarrow.StringArray
    """An Arrow string array from Python strings, built from one joined buffer and numpy offsets."""
    import pyarrow as pa

    joined = "".join(values)
    data = joined.encode()
    if len(data) == len(joined):  # ASCII: a byte per character, so lengths are string lengths
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    else:
        lengths = np.fromiter((len(value.encode()) for value in values), dtype=np.int64, count=len(values))
    if len(data) >= 2**31:
        raise BulkError("the ids of one chunk exceed 2 GB (a string column's limit); lower --chunk-size")
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


class ParquetParts:
    def __init__(self, output: Path) -> None:
        # Only looked up here: the import itself waits for the first part, when it overlaps with encoding.
        if importlib.util.find_spec("pyarrow") is None:
            raise BulkError(
                "Parquet output needs pyarrow: pip install 'static-embed[parquet]', or pass --output-format npy"
            )
        self.output = output

    def write_part(self, index: int, ids: Sequence[str], vectors: np.ndarray) -> None:
        import pyarrow.parquet

        final = self.output / f"{part_name(index)}.parquet"
        temporary = final.with_name(f".{final.name}.tmp")
        # Unit vectors are nearly random floats: compression, dictionaries and statistics only cost time.
        pyarrow.parquet.write_table(
            vectors_table(ids, vectors), temporary, compression="none", use_dictionary=False, write_statistics=False
        )
        os.replace(temporary, final)

    def finish(self, indexes: Sequence[int], dimensions: int, dtype: str) -> list[Path]:
        if not indexes:  # an input without rows still yields a readable table with the right schema
            self.write_part(0, [], np.zeros((0, dimensions), dtype=dtype))
            indexes = [0]
        return [self.output / f"{part_name(index)}.parquet" for index in indexes]

    def remove_parts(self, indexes: Sequence[int]) -> None:
        """The parts are the output: nothing to remove."""


class NpyParts:
    def __init__(self, output: Path) -> None:
        self.output = output

    def write_part(self, index: int, ids: Sequence[str], vectors: np.ndarray) -> None:
        name = part_name(index)
        _replace_with(self.output / f"{name}.ids.txt", "".join(f"{record_id}\n" for record_id in ids).encode())
        temporary = self.output / f".{name}.tmp.npy"
        np.save(temporary, vectors)
        os.replace(temporary, self.output / f"{name}.npy")  # the vectors land last: they mark the part done

    def finish(self, indexes: Sequence[int], dimensions: int, dtype: str) -> list[Path]:
        parts = [self.output / part_name(index) for index in sorted(indexes)]
        shapes = [np.load(f"{part}.npy", mmap_mode="r").shape[0] for part in parts]
        vectors_tmp = self.output / f".{VECTORS_FILE}.tmp.npy"
        ids_tmp = self.output / f".{IDS_FILE}.tmp"
        if sum(shapes):
            combined = np.lib.format.open_memmap(vectors_tmp, mode="w+", dtype=dtype, shape=(sum(shapes), dimensions))
        else:  # a zero-length memory map is not possible
            np.save(vectors_tmp, np.zeros((0, dimensions), dtype=dtype))
            combined = np.zeros((0, dimensions), dtype=dtype)
        row = 0
        with ids_tmp.open("wb") as ids_out:
            for part, rows in zip(parts, shapes, strict=True):
                source = np.load(f"{part}.npy", mmap_mode="r")
                for first in range(0, rows, _COPY_ROWS):
                    block = source[first : first + _COPY_ROWS]
                    combined[row + first : row + first + len(block)] = block
                row += rows
                with open(f"{part}.ids.txt", "rb") as ids_in:
                    while block := ids_in.read(1 << 20):
                        ids_out.write(block)
        if isinstance(combined, np.memmap):
            combined.flush()
        del combined
        os.replace(vectors_tmp, self.output / VECTORS_FILE)
        os.replace(ids_tmp, self.output / IDS_FILE)
        return [self.output / VECTORS_FILE, self.output / IDS_FILE]

    def remove_parts(self, indexes: Sequence[int]) -> None:
        for index in indexes:
            for suffix in (".npy", ".ids.txt"):
                (self.output / f"{part_name(index)}{suffix}").unlink(missing_ok=True)


def _replace_with(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
