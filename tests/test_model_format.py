"""The model directory reader refuses every broken directory with one clear line."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from app.model_format import ModelFormatError, file_sha256, load_model, read_safetensors_header, write_model


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


def _rewrite_table(model_dir: Path, table: np.ndarray, **extra: np.ndarray) -> None:
    from app.model_format import _write_safetensors

    _write_safetensors(model_dir / "model.safetensors", {"embeddings": table, **extra})


def test_loads_memory_mapped_without_copy(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    assert isinstance(model.embeddings, np.memmap)
    assert model.embeddings.shape == (model.tokenizer.get_vocab_size(), 16)
    assert model.metadata["table_sha256"] == file_sha256(tiny_model_dir / "model.safetensors")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="does not exist"):
        load_model(tmp_path / "nope")


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json", "config.json"])
def test_missing_file(model_copy: Path, name: str) -> None:
    (model_copy / name).unlink()
    with pytest.raises(ModelFormatError, match=re.escape(f"{name} is missing")):
        load_model(model_copy)


def test_truncated_table(model_copy: Path) -> None:
    path = model_copy / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelFormatError, match="truncated"):
        load_model(model_copy)


def test_file_shorter_than_header_length(model_copy: Path) -> None:
    (model_copy / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(ModelFormatError, match="shorter than the 8-byte header"):
        load_model(model_copy)


def test_corrupted_header(model_copy: Path) -> None:
    path = model_copy / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"\xff" * 12
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        load_model(model_copy)


def test_absurd_header_length(model_copy: Path) -> None:
    path = model_copy / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 1 << 40) + data[8:])
    with pytest.raises(ModelFormatError, match="invalid header length"):
        load_model(model_copy)


def test_wrong_dtype(model_copy: Path) -> None:
    rows = load_model(model_copy).vocab_size
    _rewrite_table(model_copy, np.zeros((rows, 16), dtype=np.float64))
    with pytest.raises(ModelFormatError, match="F64 is not one of F32, F16, I8"):
        load_model(model_copy)


def test_row_count_must_match_tokenizer(model_copy: Path) -> None:
    rows = load_model(model_copy).vocab_size
    _rewrite_table(model_copy, np.zeros((rows - 3, 16), dtype=np.float32))
    with pytest.raises(ModelFormatError, match=f"{rows - 3} rows but the tokenizer has {rows} ids"):
        load_model(model_copy)


def test_table_must_be_2d(model_copy: Path) -> None:
    _rewrite_table(model_copy, np.zeros(10, dtype=np.float32))
    with pytest.raises(ModelFormatError, match="not a non-empty 2-D matrix"):
        load_model(model_copy)


def test_missing_embeddings_tensor(model_copy: Path) -> None:
    from app.model_format import _write_safetensors

    _write_safetensors(model_copy / "model.safetensors", {"something": np.zeros((3, 3), dtype=np.float32)})
    with pytest.raises(ModelFormatError, match="no tensor named 'embeddings'"):
        load_model(model_copy)


def test_int8_needs_row_scales(model_copy: Path) -> None:
    rows = load_model(model_copy).vocab_size
    _rewrite_table(model_copy, np.zeros((rows, 16), dtype=np.int8))
    with pytest.raises(ModelFormatError, match="int8 table needs per-row scales"):
        load_model(model_copy)


def test_unreadable_tokenizer(model_copy: Path) -> None:
    (model_copy / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFormatError, match="not a readable tokenizers file"):
        load_model(model_copy)


def test_unreadable_config(model_copy: Path) -> None:
    (model_copy / "config.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ModelFormatError, match=r"config\.json: not readable JSON"):
        load_model(model_copy)


def test_checksum_verification(model_copy: Path) -> None:
    assert load_model(model_copy, verify_checksum=True).vocab_size > 0
    config = json.loads((model_copy / "config.json").read_text())
    config["static_embed"]["table_sha256"] = "0" * 64
    (model_copy / "config.json").write_text(json.dumps(config))
    load_model(model_copy)  # not verified unless asked
    with pytest.raises(ModelFormatError, match="does not match"):
        load_model(model_copy, verify_checksum=True)


def test_header_parser_rejects_overlapping_ranges(model_copy: Path) -> None:
    path = model_copy / "model.safetensors"
    tensors, _ = read_safetensors_header(path)
    info = tensors["embeddings"]
    header = {"embeddings": {"dtype": info.dtype, "shape": [info.shape[0] * 2, info.shape[1]], "data_offsets": [0, 8]}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    with pytest.raises(ModelFormatError, match="does not fit its shape"):
        load_model(model_copy)


def test_write_then_load_round_trip(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = load_model(tiny_model_dir)
    table = np.asarray(source.embeddings, dtype=np.float32)
    written = write_model(tmp_path / "copy", table, source.tokenizer, {"normalize": True})
    loaded = load_model(written, verify_checksum=True)
    np.testing.assert_array_equal(np.asarray(loaded.embeddings), table)
    assert loaded.config["embedding_dtype"] == "float32"
