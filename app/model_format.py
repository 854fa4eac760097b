"""Read and write the model directory shared by the distill job and the service.

The layout is model2vec's (``model.safetensors`` with the table under ``embeddings``,
``tokenizer.json``, ``config.json``) so that directories move freely between the two
projects. Our own facts (teacher, parameters, table checksum) live under the
``static_embed`` key of ``config.json``, which model2vec ignores.

The table is memory-mapped, never read into private memory: several worker processes
then share one copy in the page cache.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

TABLE_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
EMBEDDINGS_KEY = "embeddings"
# model2vec multiplies each gathered row by ``weights[token_id]``; we use it for the
# per-row scales of int8 tables, so model2vec decodes them exactly as we do.
WEIGHTS_KEY = "weights"
METADATA_KEY = "static_embed"

_SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I8": np.dtype("i1"),
    "F64": np.dtype("<f8"),
}
_TABLE_DTYPES = {"F32", "F16", "I8"}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class ModelFormatError(Exception):
    """A model directory that cannot be served; the message says what is wrong and where."""


@dataclass(frozen=True)
class StaticModel:
    """A loaded model directory: the memory-mapped table and what is needed to use it."""

    path: Path
    embeddings: np.ndarray
    row_scales: np.ndarray | None
    tokenizer: Tokenizer
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def dimensions(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def vocab_size(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def metadata(self) -> dict[str, Any]:
        """Our own metadata block (empty for directories made by model2vec)."""
        value = self.config.get(METADATA_KEY)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], int]:
    """Parse and validate a safetensors header; return tensors and the data offset."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ModelFormatError(f"{path}: file is truncated (shorter than the 8-byte header length)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len == 0 or header_len > _MAX_HEADER_BYTES or 8 + header_len > size:
                raise ModelFormatError(f"{path}: invalid header length {header_len} for a file of {size} bytes")
            raw_header = handle.read(header_len)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        header = json.loads(raw_header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ModelFormatError(f"{path}: header is not a JSON object")
    data_start = 8 + header_len
    data_size = size - data_start
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(entry["dtype"])
            shape = tuple(int(dim) for dim in entry["shape"])
            start, end = (int(offset) for offset in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"{path}: malformed header entry for tensor {name!r}") from exc
        if dtype not in _SAFETENSORS_DTYPES:
            raise ModelFormatError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        expected = int(np.prod(shape, dtype=np.int64)) * _SAFETENSORS_DTYPES[dtype].itemsize
        if not 0 <= start <= end <= data_size or end - start != expected:
            raise ModelFormatError(
                f"{path}: tensor {name!r} byte range {start}..{end} does not fit its shape {list(shape)} "
                f"and dtype {dtype}, or runs past the end of the file (truncated?)"
            )
        tensors[name] = TensorInfo(dtype, shape, start, end)
    return tensors, data_start


def _memmap(path: Path, info: TensorInfo, data_start: int) -> np.ndarray:
    return np.memmap(
        path, dtype=_SAFETENSORS_DTYPES[info.dtype], mode="r", offset=data_start + info.start, shape=info.shape
    )


def load_model(path: str | Path, verify_checksum: bool = False) -> StaticModel:
    """Open a model directory, validating everything the encoder relies on.

    Raises ModelFormatError with a one-line message on any problem, so a server can
    refuse to start instead of serving wrong vectors.
    """
    root = Path(path)
    if not root.is_dir():
        raise ModelFormatError(f"model directory {root} does not exist or is not a directory")
    table_path = root / TABLE_FILE
    if not table_path.is_file():
        raise ModelFormatError(f"{table_path} is missing")
    config = _read_config(root / CONFIG_FILE)
    tokenizer = _read_tokenizer(root / TOKENIZER_FILE)

    tensors, data_start = read_safetensors_header(table_path)
    info = tensors.get(EMBEDDINGS_KEY)
    if info is None:
        raise ModelFormatError(f"{table_path}: no tensor named {EMBEDDINGS_KEY!r} (found {sorted(tensors)})")
    if "mapping" in tensors:
        raise ModelFormatError(f"{table_path}: vocabulary-quantized models (a 'mapping' tensor) are not supported")
    if info.dtype not in _TABLE_DTYPES:
        raise ModelFormatError(f"{table_path}: table dtype {info.dtype} is not one of F32, F16, I8")
    if len(info.shape) != 2 or info.shape[0] == 0 or info.shape[1] == 0:
        raise ModelFormatError(f"{table_path}: table shape {list(info.shape)} is not a non-empty 2-D matrix")
    rows = info.shape[0]
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    if rows != vocab:
        raise ModelFormatError(
            f"{table_path}: table has {rows} rows but the tokenizer has {vocab} ids; they must match one to one"
        )
    embeddings = _memmap(table_path, info, data_start)

    row_scales = None
    scales_info = tensors.get(WEIGHTS_KEY)
    if scales_info is not None:
        if scales_info.shape != (rows,) or scales_info.dtype not in {"F32", "F16", "F64"}:
            raise ModelFormatError(
                f"{table_path}: {WEIGHTS_KEY!r} must be a float vector of {rows} values, "
                f"got {scales_info.dtype} {list(scales_info.shape)}"
            )
        row_scales = np.asarray(_memmap(table_path, scales_info, data_start), dtype=np.float32)
    elif info.dtype == "I8":
        raise ModelFormatError(f"{table_path}: an int8 table needs per-row scales under {WEIGHTS_KEY!r}")

    if verify_checksum:
        _verify_checksum(table_path, config)
    return StaticModel(root, embeddings, row_scales, tokenizer, config)


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFormatError(f"{path} is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelFormatError(f"{path}: expected a JSON object")
    return config


def _read_tokenizer(path: Path) -> Tokenizer:
    if not path.is_file():
        raise ModelFormatError(f"{path} is missing")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on any parse error
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFormatError(f"{path}: not a readable tokenizers file ({first_line})") from exc


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_checksum(table_path: Path, config: dict[str, Any]) -> None:
    expected = (config.get(METADATA_KEY) or {}).get("table_sha256")
    if not expected:
        raise ModelFormatError(
            f"{table_path}: checksum verification asked for, but config.json records no table_sha256"
        )
    actual = file_sha256(table_path)
    if actual != expected:
        raise ModelFormatError(f"{table_path}: SHA-256 {actual} does not match {expected} recorded in config.json")


def write_model(
    path: str | Path,
    embeddings: np.ndarray,
    tokenizer: Tokenizer,
    config: dict[str, Any],
    row_scales: np.ndarray | None = None,
) -> Path:
    """Write a model directory; records the table's SHA-256 in the metadata block."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    if embeddings.dtype.str.lstrip("<|") not in {"f4", "f2", "i1"}:
        raise ValueError(f"table dtype {embeddings.dtype} is not float32, float16 or int8")
    tensors = {EMBEDDINGS_KEY: np.ascontiguousarray(embeddings)}
    if row_scales is not None:
        tensors[WEIGHTS_KEY] = np.ascontiguousarray(row_scales, dtype=np.float32)
    table_path = root / TABLE_FILE
    _write_safetensors(table_path, tensors)
    tokenizer.save(str(root / TOKENIZER_FILE), pretty=False)
    full_config = dict(config)
    full_config["embedding_dtype"] = np.dtype(embeddings.dtype).name
    full_config["hidden_dim"] = int(embeddings.shape[1])
    metadata = dict(full_config.get(METADATA_KEY) or {})
    metadata["table_sha256"] = file_sha256(table_path)
    full_config[METADATA_KEY] = metadata
    (root / CONFIG_FILE).write_text(json.dumps(full_config, indent=2) + "\n", encoding="utf-8")
    return root


_NUMPY_TO_SAFETENSORS = {"f4": "F32", "f2": "F16", "i1": "I8", "f8": "F64"}


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Write little-endian tensors in the safetensors layout (no torch needed)."""
    header: dict[str, Any] = {"__metadata__": {"format": "np"}}
    offset = 0
    for name, array in tensors.items():
        code = _NUMPY_TO_SAFETENSORS[array.dtype.str.lstrip("<|")]
        header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned, as safetensors does
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        for array in tensors.values():
            handle.write(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    tmp.replace(path)
