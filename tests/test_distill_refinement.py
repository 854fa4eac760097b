"""The refinement stage: corpus, teacher targets and the fitted table (tiny random teacher, seconds)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from app.encoder import Encoder
from app.model_format import load_model
from distill_job import corpus, sentence_targets
from distill_job.cli import main
from distill_job.errors import DistillError
from distill_job.pipeline import DistillOptions, distill
from distill_job.teacher import load_teacher
from tests.conftest import TINY_WORDS


def _tiny_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(TINY_WORDS, k=rng.randint(3, 12))) for _ in range(count)]


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir: Path):
    return load_teacher(str(tiny_teacher_dir))


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "texts.txt"
    path.write_text("\n".join(_tiny_texts(3000, seed=1)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def plain_and_refined(tiny_teacher_dir: Path, corpus_file: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("refined")
    common = {"teacher": str(tiny_teacher_dir), "pca_dims": 16, "extend_vocab": 0, "progress": False}
    distill(DistillOptions(output=root / "plain", refine_corpus=None, **common))
    summary = distill(
        DistillOptions(output=root / "refined", refine_corpus=str(corpus_file), refine_epochs=20, **common)
    )
    return root / "plain", root / "refined", summary


def test_wordnet_corpus_is_real_english_glosses_and_examples() -> None:
    texts = corpus.wordnet_texts()
    assert len(texts) > 170_000
    assert (
        "a member of the genus Canis (probably descended from the common wolf) that has been domesticated by man "
        "since prehistoric times; occurs in many breeds" not in texts
    )  # a gloss is split into its parts
    assert "the dog barked all night" in texts  # an example sentence, without its quotes
    assert any(text.startswith("a member of the genus Canis") for text in texts)
    assert "Permission to use, copy, modify and distribute" in corpus.wordnet_licence()


def test_corpus_is_unique_shuffled_reproducible_and_cut(corpus_file: Path) -> None:
    first = corpus.load_corpus(str(corpus_file), max_texts=500)
    assert first == corpus.load_corpus(str(corpus_file), max_texts=500)
    lines = [line for line in corpus_file.read_text().splitlines() if line]
    assert len(first) == 500 and len(set(first)) == 500 and set(first) <= set(lines)
    assert first != lines[:500]
    whole = corpus.load_corpus(str(corpus_file))
    assert len(whole) == len(set(lines)) and whole[:500] == first  # a shorter run is a prefix of a longer one


def test_corpus_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DistillError, match="is not a file"):
        corpus.load_corpus(str(tmp_path / "missing.txt"))
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(DistillError, match="holds no text"):
        corpus.load_corpus(str(tmp_path / "blank.txt"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DistillError, match="unreadable as UTF-8"):
        corpus.load_corpus(str(tmp_path / "latin1.txt"))


def test_teacher_targets_are_mean_pooled_unit_vectors(teacher) -> None:
    import torch

    texts = ["the cat sat on the mat", "a big red car on the road by the river in the city at night"]
    targets = sentence_targets.teacher_embeddings(teacher, texts, progress=False)
    assert sentence_targets.sentence_pooling(teacher).mode == "mean"
    with torch.inference_mode():
        for text, target in zip(texts, targets, strict=True):
            states = teacher.model(**teacher.tokenizer(text, return_tensors="pt")).last_hidden_state[0]
            expected = states.mean(0) / states.mean(0).norm()
            np.testing.assert_allclose(target, expected.numpy(), atol=1e-5)


def test_teacher_targets_are_cached_in_chunks(teacher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sentence_targets, "CACHE_CHUNK", 4)
    texts = _tiny_texts(10, seed=2)
    computed = sentence_targets.teacher_embeddings(teacher, texts, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("teacher-*.npy"))) == 3

    def no_teacher(*args: object) -> None:
        raise AssertionError("the teacher ran although every chunk was cached")

    monkeypatch.setattr(sentence_targets, "_embed", no_teacher)
    np.testing.assert_array_equal(
        sentence_targets.teacher_embeddings(teacher, texts, cache_dir=tmp_path, progress=False), computed
    )
    np.testing.assert_array_equal(  # a shorter prefix reuses the whole chunks
        sentence_targets.teacher_embeddings(teacher, texts[:8], cache_dir=tmp_path, progress=False), computed[:8]
    )


def test_refined_table_tracks_the_teacher_on_unseen_texts(plain_and_refined, teacher) -> None:
    plain_dir, refined_dir, summary = plain_and_refined
    report = summary.refinement
    assert report.texts == 3000 and report.best_epoch >= 1
    assert max(report.validation_cosine) > report.validation_cosine[0] + 0.05
    unseen = _tiny_texts(300, seed=3)
    targets = sentence_targets.teacher_embeddings(teacher, unseen, progress=False)

    def teacher_similarity_fit(model_dir: Path) -> float:
        vectors = Encoder(load_model(model_dir)).encode(unseen)
        ours, theirs = vectors @ vectors.T, targets @ targets.T
        upper = np.triu_indices(len(unseen), 1)
        return float(np.corrcoef(ours[upper], theirs[upper])[0, 1])

    assert teacher_similarity_fit(refined_dir) > teacher_similarity_fit(plain_dir) + 0.05


def test_refined_model_keeps_the_format(plain_and_refined, corpus_file: Path) -> None:
    from model2vec import StaticModel

    plain_dir, refined_dir, _ = plain_and_refined
    plain, refined = load_model(plain_dir), load_model(refined_dir)
    assert refined.embeddings.shape == plain.embeddings.shape and refined.embeddings.dtype == np.float16
    meta = json.loads((refined_dir / "config.json").read_text())["static_embed"]
    assert meta["refinement"]["corpus"] == str(corpus_file)
    assert meta["refinement"]["texts"] == 3000
    assert meta["parameters"]["refine_corpus"] == str(corpus_file)
    assert json.loads((plain_dir / "config.json").read_text())["static_embed"]["refinement"] is None
    texts = _tiny_texts(20, seed=4)
    theirs = StaticModel.from_pretrained(str(refined_dir)).encode(texts)
    ours = Encoder(refined).encode(texts)
    np.testing.assert_allclose(ours, theirs / np.linalg.norm(theirs, axis=1, keepdims=True), atol=2e-3)


def test_cli_refines_and_reports(tiny_teacher_dir: Path, corpus_file: Path, tmp_path: Path, capsys) -> None:
    argv = ["--teacher", str(tiny_teacher_dir), "-o", str(tmp_path / "m"), "--pca-dims", "8", "--no-progress"]
    cache = tmp_path / "cache"
    extra = ["--refine-corpus", str(corpus_file), "--refine-max-texts", "200", "--refine-cache", str(cache)]
    assert main([*argv, *extra]) == 0
    assert "Refined on 200 texts" in capsys.readouterr().out
    assert list(cache.glob("teacher-*.npy"))


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--refine-corpus", "/no/such/corpus.txt"], "refinement corpus /no/such/corpus.txt is not a file"),
        (["--refine-corpus", "wordnet", "--refine-max-texts", "0"], "--refine-max-texts must be at least 1"),
        (["--refine-corpus", "wordnet", "--refine-epochs", "0"], "--refine-epochs must be at least 1"),
    ],
)
def test_bad_refinement_options_are_one_line_errors(
    tiny_teacher_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], fragment: str
) -> None:
    assert main(["--teacher", str(tiny_teacher_dir), "-o", str(tmp_path / "o"), "--pca-dims", "8", *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {fragment}") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_corpus_without_known_tokens_is_a_clear_error(
    tiny_teacher_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("€€€ ¥¥¥\n@@@ ###\n", encoding="utf-8")
    argv = ["--teacher", str(tiny_teacher_dir), "-o", str(tmp_path / "o"), "--pca-dims", "8", "--no-progress"]
    assert main([*argv, "--extend-vocab", "0", "--refine-corpus", str(unknown)]) == 1
    assert "needs at least 2 texts with tokens the model knows" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
