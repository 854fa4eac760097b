"""What a bulk run is asked to do; shared by the local runner and the Ray job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

INPUT_FORMATS = ("jsonl", "csv", "parquet")
OUTPUT_FORMATS = ("parquet", "npy")
OUTPUT_DTYPES = ("float32", "float16")

_SUFFIX_FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class BulkError(Exception):
    """A problem the user can fix (bad input, bad option, mismatched output); message says how."""


@dataclass(frozen=True)
class BulkOptions:
    input: Path
    output: Path
    model_dir: Path
    input_format: str
    text_field: str = "text"
    id_field: str = "id"
    delimiter: str = ","
    output_format: str = "parquet"
    dimensions: int | None = None
    dtype: str = "float32"
    batch_size: int = 4096  # texts per encoder call: small enough to stay in cache
    chunk_size: int = 50_000  # rows per output part: the unit of progress and of resume
    threads: int = 2
    skip_bad_rows: bool = False
    overwrite: bool = False
    progress: bool = True


def infer_input_format(path: Path) -> str:
    """The input format implied by a file name, or a BulkError asking for --input-format."""
    found = _SUFFIX_FORMATS.get(path.suffix.lower())
    if found:
        return found
    raise BulkError(f"cannot tell the format of {path} from its name; pass --input-format ({', '.join(INPUT_FORMATS)})")


def default_delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","
