"""The distill job end to end: tiny random teacher (fast), the real teacher, model2vec both ways."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.encoder import Encoder
from app.model_format import file_sha256, load_model
from distill_job.cli import main
from tests.conftest import ROOT


def test_tiny_pipeline_writes_a_complete_model(tiny_model_dir: Path, tiny_teacher_dir: Path) -> None:
    assert {p.name for p in tiny_model_dir.iterdir()} >= {"model.safetensors", "tokenizer.json", "config.json"}
    model = load_model(tiny_model_dir, verify_checksum=True)
    vocab = model.tokenizer.get_vocab()
    assert not [token for token in vocab if token.startswith("[unused")]
    assert sorted(vocab.values()) == list(range(model.vocab_size))
    tokenizer_spec = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    assert tokenizer_spec["post_processor"] is None and tokenizer_spec["truncation"] is None

    config = json.loads((tiny_model_dir / "config.json").read_text())
    meta = config["static_embed"]
    assert meta["teacher"] == str(tiny_teacher_dir)
    assert meta["parameters"]["pca_dims"] == 16 and meta["parameters"]["dtype"] == "float16"
    assert meta["table_sha256"] == file_sha256(tiny_model_dir / "model.safetensors")
    assert meta["created_at"].endswith("+00:00")
    assert config["model_type"] == "model2vec" and config["hidden_dim"] == 16


def test_tiny_rows_follow_pca_variance_order(tiny_model_dir: Path) -> None:
    table = np.asarray(load_model(tiny_model_dir).embeddings, dtype=np.float32)
    variances = table.var(axis=0)
    assert variances[:4].mean() > variances[-4:].mean()


def test_cli_int8_output_loads_in_our_encoder_and_model2vec(tiny_teacher_dir: Path, tmp_path: Path) -> None:
    from model2vec import StaticModel

    out = tmp_path / "int8"
    argv = ["--teacher", str(tiny_teacher_dir), "--output", str(out), "--pca-dims", "8", "--dtype", "int8"]
    assert main([*argv, "--refine-corpus", "none"]) == 0
    ours = Encoder(load_model(out)).encode(["the cat sat on the mat", "quick brown fox"])
    theirs = StaticModel.from_pretrained(out).encode(["the cat sat on the mat", "quick brown fox"])
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distill_job", "--no-progress", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


def _assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and fragment in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_missing_teacher_directory(tmp_path: Path) -> None:
    _assert_one_line_error(
        _run_cli("--teacher", str(tmp_path / "missing"), "-o", str(tmp_path / "o")), "does not exist"
    )


def test_unreadable_teacher(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    _assert_one_line_error(_run_cli("--teacher", str(broken), "-o", str(tmp_path / "o")), "cannot load the teacher")


def test_pca_dims_larger_than_teacher(tiny_teacher_dir: Path, tmp_path: Path) -> None:
    result = _run_cli("--teacher", str(tiny_teacher_dir), "-o", str(tmp_path / "o"), "--pca-dims", "64")
    _assert_one_line_error(result, "--pca-dims 64 is larger than the teacher's width 32")


def test_existing_output_needs_force(tiny_teacher_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "exists"
    out.mkdir()
    _assert_one_line_error(_run_cli("--teacher", str(tiny_teacher_dir), "-o", str(out)), "pass --force")
    result = _run_cli(
        "--teacher", str(tiny_teacher_dir), "-o", str(out), "--pca-dims", "8", "--force", "--refine-corpus", "none"
    )
    assert result.returncode == 0, result.stderr
    assert "8 dims" in result.stdout and "MB on disk" in result.stdout
    assert load_model(out).dimensions == 8


def test_teacher_without_fast_tokenizer(tiny_teacher_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers 5 converts most tokenizers to fast ones; older ones may hand back a slow one."""
    import transformers

    from distill_job.errors import DistillError
    from distill_job.teacher import load_teacher

    class SlowTokenizer:
        is_fast = False

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: SlowTokenizer())
    with pytest.raises(DistillError, match="has no fast tokenizer"):
        load_teacher(str(tiny_teacher_dir))


def test_help_lists_the_options() -> None:
    result = _run_cli("--help")
    assert result.returncode == 0
    for option in ("--teacher", "--pca-dims", "--dtype", "--force", "--sif-coefficient"):
        assert option in result.stdout


@pytest.mark.slow
def test_real_teacher_model_loads_in_model2vec_with_the_same_vectors(
    default_model_dir: Path, real_sentences: list[str]
) -> None:
    from model2vec import StaticModel

    model = load_model(default_model_dir)
    assert model.dimensions == 256 and model.vocab_size > 29_000
    ours = Encoder(model).encode(real_sentences)
    theirs = StaticModel.from_pretrained(default_model_dir).encode(real_sentences).astype(np.float64)
    cosines = (ours * theirs).sum(axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosines.min() >= 0.9999


@pytest.mark.slow
def test_our_encoder_reads_model2vec_distill_with_the_same_vectors(
    model2vec_model_dir: Path, real_sentences: list[str]
) -> None:
    from model2vec import StaticModel

    ours = Encoder(load_model(model2vec_model_dir)).encode(real_sentences)
    theirs = StaticModel.from_pretrained(model2vec_model_dir).encode(real_sentences).astype(np.float64)
    cosines = (ours * theirs).sum(axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosines.min() >= 0.9999


@pytest.mark.slow
def test_real_teacher_static_model_tracks_the_teacher(default_model_dir: Path) -> None:
    """Pairs the teacher finds similar stay similar; pairs it finds unrelated stay apart."""
    encoder = Encoder(load_model(default_model_dir))
    pairs = [
        ("A man is playing a guitar.", "A man plays the guitar."),
        ("The stock market fell sharply today.", "Shares dropped steeply on Wall Street."),
    ]
    for left, right in pairs:
        a, b, unrelated = encoder.encode([left, right, "A kitten sleeps on a warm blanket."])
        assert a @ b > a @ unrelated + 0.15


def test_distilled_model_copies_are_independent(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Copying a model directory elsewhere keeps it servable (no absolute paths inside)."""
    copy = tmp_path / "moved"
    shutil.copytree(tiny_model_dir, copy)
    assert load_model(copy, verify_checksum=True).vocab_size == load_model(tiny_model_dir).vocab_size
