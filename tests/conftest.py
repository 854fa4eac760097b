"""Shared fixtures: real data, a tiny random teacher, and models distilled once per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

TINY_WORDS = (
    "the a an cat dog bird sat ran flew on under over mat rug tree hello world good bad "
    "day night red blue green big small house car road river city music book paper stock "
    "market fell rose sharply slowly quick brown fox jumps lazy"
).split()


def sts_sentences(limit: int = 300) -> list[str]:
    """Real English sentences from the STS-B dev split (tab-separated, unquoted)."""
    sentences: list[str] = []
    with (SHARED_DATA / "stsbenchmark" / "sts-dev.csv").open(encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            sentences.extend(fields[5:7])
            if len(sentences) >= limit:
                break
    return sentences[:limit]


@pytest.fixture(scope="session")
def real_sentences() -> list[str]:
    return sts_sentences()


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT with a 100-token WordPiece vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("tiny-teacher")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"[unused{i}]" for i in range(5)]
    pieces = list("abcdefghijklmnopqrstuvwxyz") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + [".", ","]
    vocab = specials + pieces + TINY_WORDS
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})
    tokenizer.save_pretrained(root)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(root)
    return root


def _distill(teacher: str | None, output: Path, **options: object) -> Path:
    from distill_job.pipeline import DistillOptions, distill

    options = {"refine_corpus": None, **options}  # refinement has its own tests (test_distill_refinement.py)
    distill(DistillOptions(teacher=teacher, output=output, progress=False, **options))
    return output


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _distill(str(tiny_teacher_dir), tmp_path_factory.mktemp("tiny") / "model", pca_dims=16)


@pytest.fixture(scope="session")
def default_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real default teacher (all-MiniLM-L6-v2), distilled once per test run (30 s to 2 min).

    Every default stage runs, but refinement sees 3,000 WordNet texts instead of all 181,000
    (the teacher's pass over all of them takes 7 to 13 minutes here).
    """
    return _distill(None, tmp_path_factory.mktemp("default") / "model", refine_corpus="wordnet", refine_max_texts=3000)


@pytest.fixture(scope="session")
def model2vec_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model2vec 0.10's own distill of the default teacher, saved by model2vec (~10 s)."""
    from model2vec.distill import distill

    from distill_job.teacher import default_teacher_path

    output = tmp_path_factory.mktemp("model2vec") / "model"
    distill(str(default_teacher_path()), pca_dims=256).save_pretrained(output)
    return output
