"""Faults at startup: ``python -m app`` on a broken model directory exits non-zero with one clear
line on stderr (no traceback) and never listens. Optional SHA-256 verification of the table.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.model_format import CONFIG_FILE, TABLE_FILE, TOKENIZER_FILE, read_safetensors_header
from tests.api_server import ROOT, free_port, server_env
from tests.reliability_server import start


def run_app(model_dir: Path, **settings: str) -> tuple[int, str, str, int]:
    port = free_port()
    completed = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=server_env(model_dir, port, settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return completed.returncode, completed.stdout, completed.stderr, port


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _table_data(model_dir: Path) -> tuple[int, int]:
    """(offset of the embeddings' bytes in the file, their length)."""
    tensors, data_start = read_safetensors_header(model_dir / TABLE_FILE)
    info = tensors["embeddings"]
    return data_start + info.start, info.end - info.start


def _truncate(model_dir: Path) -> None:
    path = model_dir / TABLE_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage_header(model_dir: Path) -> None:
    path = model_dir / TABLE_FILE
    raw = bytearray(path.read_bytes())
    raw[8:40] = b"\x00\xff" * 16
    path.write_bytes(bytes(raw))


def _nan_rows(model_dir: Path) -> None:
    offset, size = _table_data(model_dir)
    path = model_dir / TABLE_FILE
    raw = bytearray(path.read_bytes())
    middle = offset + size // 2 // 8 * 8
    raw[middle : middle + 32] = np.full(16, np.nan, "<f2").tobytes()  # NaN read as F16 or as F32
    assert len(raw) == path.stat().st_size
    path.write_bytes(bytes(raw))


def _write_table(model_dir: Path, dtype: str, array: np.ndarray) -> None:
    header = json.dumps({"embeddings": {"dtype": dtype, "shape": list(array.shape), "data_offsets": [0, array.nbytes]}})
    raw = header.encode() + b" " * (-len(header) % 8)
    (model_dir / TABLE_FILE).write_bytes(struct.pack("<Q", len(raw)) + raw + array.tobytes())


def _table(model_dir: Path) -> np.ndarray:
    offset, size = _table_data(model_dir)
    tensors, _ = read_safetensors_header(model_dir / TABLE_FILE)
    raw = (model_dir / TABLE_FILE).read_bytes()[offset : offset + size]
    dtype = {"F32": "<f4", "F16": "<f2"}[tensors["embeddings"].dtype]
    return np.frombuffer(raw, dtype).reshape(tensors["embeddings"].shape)


def _fewer_rows(model_dir: Path) -> None:
    _write_table(model_dir, "F32", _table(model_dir)[:-3].astype("<f4"))


def _float64_table(model_dir: Path) -> None:
    _write_table(model_dir, "F64", _table(model_dir).astype("<f8"))


def _bfloat16_table(model_dir: Path) -> None:
    _write_table(model_dir, "BF16", np.zeros(_table(model_dir).shape, "<u2"))


def _tokenizer_garbage(model_dir: Path) -> None:
    (model_dir / TOKENIZER_FILE).write_text('{"version": "1.0", "model": {"type": "Nonsense"', encoding="utf-8")


def _tokenizer_not_a_file(model_dir: Path) -> None:
    (model_dir / TOKENIZER_FILE).unlink()
    (model_dir / TOKENIZER_FILE).mkdir()


def _config_garbage(model_dir: Path) -> None:
    (model_dir / CONFIG_FILE).write_bytes(b"\xff\xfe not json")


def _remove(name: str) -> Callable[[Path], None]:
    return lambda model_dir: (model_dir / name).unlink()


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "table missing": (_remove(TABLE_FILE), "model.safetensors is missing"),
    "table truncated to half": (_truncate, "runs past the end of the file"),
    "table header corrupted": (_garbage_header, "model.safetensors: "),
    "table holds NaN (corrupted data)": (_nan_rows, "NaN or infinite values"),
    "table rows do not match the tokenizer": (_fewer_rows, "rows but the tokenizer has"),
    "table dtype float64": (_float64_table, "table dtype F64 is not one of F32, F16, I8"),
    "table dtype bfloat16": (_bfloat16_table, "unsupported dtype BF16"),
    "tokenizer.json unreadable": (_tokenizer_garbage, "tokenizer.json: not a readable tokenizers file"),
    "tokenizer.json is a directory": (_tokenizer_not_a_file, "tokenizer.json is missing"),
    "config.json not JSON": (_config_garbage, "config.json: not readable JSON"),
}


def _assert_one_clear_line(code: int, stdout: str, stderr: str, port: int, says: str) -> None:
    assert code != 0
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines
    assert says in lines[0], lines
    assert "Traceback" not in stderr
    with socket.socket() as sock:  # it never listened
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_missing_model_directory_is_one_line(tmp_path: Path) -> None:
    code, out, err, port = run_app(tmp_path / "nowhere")
    _assert_one_clear_line(code, out, err, port, "does not exist or is not a directory")


@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
def test_a_broken_model_is_refused_with_one_line(fault: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path / "model")
    damage, says = FAULTS[fault]
    damage(model_dir)
    code, out, err, port = run_app(model_dir)
    _assert_one_clear_line(code, out, err, port, says)
    assert code == 1


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("max_queue_inputs", "lots", "EMBED_MAX_QUEUE_INPUTS must be an integer"),
        ("workers", "0", "EMBED_WORKERS must be at least 1"),
        ("log_level", "verbose", "EMBED_LOG_LEVEL must be one of"),
        ("verify_checksum", "maybe", "EMBED_VERIFY_CHECKSUM must be true or false"),
    ],
)
def test_a_bad_setting_is_one_line(tiny_model_dir: Path, setting: str, value: str, says: str) -> None:
    code, out, err, port = run_app(tiny_model_dir, **{setting: value})
    _assert_one_clear_line(code, out, err, port, says)
    assert code == 2


def test_checksum_verification_refuses_a_silently_changed_table(tiny_model_dir: Path, tmp_path: Path) -> None:
    """One flipped byte keeps every value finite: only the recorded SHA-256 can tell."""
    model_dir = _copy(tiny_model_dir, tmp_path / "model")
    offset, _ = _table_data(model_dir)
    path = model_dir / TABLE_FILE
    raw = bytearray(path.read_bytes())
    raw[offset + 100] ^= 0x01  # lowest mantissa bit of one component
    path.write_bytes(bytes(raw))
    code, out, err, port = run_app(model_dir, verify_checksum="true")
    _assert_one_clear_line(code, out, err, port, "does not match")


def test_checksum_verification_needs_a_recorded_checksum(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_model_dir, tmp_path / "model")
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    config["static_embed"].pop("table_sha256")
    (model_dir / CONFIG_FILE).write_text(json.dumps(config))
    code, out, err, port = run_app(model_dir, verify_checksum="true")
    _assert_one_clear_line(code, out, err, port, "records no table_sha256")


def test_an_intact_model_with_checksum_verification_serves(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = start(tiny_model_dir, tmp_path / "server.log", verify_checksum="true")
    try:
        response = httpx.post(f"{server.url}/v1/embeddings", json={"input": "the cat sat", "model": "m"}, timeout=10)
        assert response.status_code == 200
    finally:
        server.stop()


def test_a_port_in_use_fails_without_a_traceback(tiny_model_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        completed = subprocess.run(
            [sys.executable, "-m", "app"],
            cwd=ROOT,
            env=server_env(tiny_model_dir, port, {}),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert "address already in use" in completed.stderr.lower(), completed.stderr
