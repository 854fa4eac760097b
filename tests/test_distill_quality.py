"""The quality stages of the distill job, on the tiny random teacher (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from app.encoder import Encoder
from app.model_format import load_model
from distill_job import reduction, token_frequencies, token_pass
from distill_job.cli import main
from distill_job.errors import DistillError
from distill_job.pipeline import DistillOptions, distill
from distill_job.teacher import load_teacher
from distill_job.vocabulary import build_vocabulary, extend_vocabulary

SENTENCES = ["the cat sat on the mat", "have you seen this house", "music and books about people", "zzz qqq"]


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir: Path):
    return load_teacher(str(tiny_teacher_dir))


@pytest.fixture(scope="module")
def extended_dir(tiny_teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("extended") / "model"
    options = DistillOptions(
        teacher=str(tiny_teacher_dir), output=out, pca_dims=16, extend_vocab=200, refine_corpus=None, progress=False
    )
    distill(options)
    return out


def test_frame_is_found_even_when_the_tokenizer_pads(teacher) -> None:
    padded = Tokenizer.from_str(teacher.tokenizer.backend_tokenizer.to_str())
    padded.enable_padding(length=32)
    cls, sep = padded.token_to_id("[CLS]"), padded.token_to_id("[SEP]")
    assert token_pass.special_frame(padded) == ([cls], [sep])


def test_sequences_pool_as_the_teacher_sees_them(teacher) -> None:
    import torch

    ids = [teacher.tokenizer.convert_tokens_to_ids(t) for t in ("c", "##a", "##t")]
    cls, sep = teacher.tokenizer.cls_token_id, teacher.tokenizer.sep_token_id
    with torch.inference_mode():
        states = teacher.model(input_ids=torch.tensor([[cls, *ids, sep]])).last_hidden_state[0].numpy()
    for pooling, expected in (("mean", states.mean(0)), ("inner", states[1:-1].mean(0)), ("first", states[0])):
        # A short and a long sequence share a padded batch: padding must not leak into either.
        rows = token_pass.embed_sequences(teacher.model, teacher.tokenizer, [ids, ids[:1]], pooling, progress=False)
        np.testing.assert_allclose(rows[0], expected, atol=1e-4)
        single = token_pass.embed_tokens(teacher.model, teacher.tokenizer, ids[:1], pooling, progress=False)
        np.testing.assert_allclose(single[0], rows[1], atol=1e-5)


def test_extension_adds_whole_words_after_the_teacher_tokens(teacher) -> None:
    base = build_vocabulary(teacher.tokenizer.backend_tokenizer.to_str())
    extended = extend_vocabulary(base, ["The", "cat", "have", "this", "have", "don't", "x"], max_new=10)
    # "cat" is already a token, "x" one piece, "don't" splits at the apostrophe, "have" is a duplicate.
    assert extended.added_words == ("have", "this")
    assert extended.tokens[: len(base.tokens)] == base.tokens
    ids = extended.tokenizer.encode("have this", add_special_tokens=False).ids
    assert ids == [len(base.tokens), len(base.tokens) + 1]


def test_extension_refuses_non_wordpiece(teacher) -> None:
    base = build_vocabulary(teacher.tokenizer.backend_tokenizer.to_str())
    spec = json.loads(base.tokenizer.to_str())
    spec["model"] = {"type": "WordLevel", "vocab": spec["model"]["vocab"], "unk_token": "[UNK]"}
    wordlevel = type(base)(Tokenizer.from_str(json.dumps(spec)), base.teacher_ids, base.tokens)
    with pytest.raises(DistillError, match="WordPiece"):
        extend_vocabulary(wordlevel, ["have"], 5)


def test_extended_model_loads_in_model2vec_with_the_same_vectors(extended_dir: Path) -> None:
    from model2vec import StaticModel

    model = load_model(extended_dir)
    assert model.vocab_size > 100  # the tiny teacher's 90 kept tokens plus whole words
    assert model.tokenizer.encode("people", add_special_tokens=False).tokens == ["people"]
    ours = Encoder(model).encode(SENTENCES)
    theirs = StaticModel.from_pretrained(extended_dir).encode(SENTENCES)
    cosine = np.sum(ours * theirs, axis=1) / np.maximum(np.linalg.norm(theirs, axis=1), 1e-12)
    assert np.all(cosine[np.linalg.norm(ours, axis=1) > 0] > 0.9999)


def test_wordfreq_probabilities_follow_word_mass(teacher) -> None:
    vocab = build_vocabulary(teacher.tokenizer.backend_tokenizer.to_str())
    fallback = reduction.zipf_probabilities(len(vocab.tokens))
    probabilities = token_frequencies.token_probabilities(
        vocab.tokenizer, {"the": 0.6, "cat": 0.3, "ca": 0.1}, fallback
    )
    the, cat, c, a = (vocab.tokenizer.token_to_id(t) for t in ("the", "cat", "c", "##a"))
    assert probabilities[the] == pytest.approx(0.6 / 1.1) and probabilities[cat] == pytest.approx(0.3 / 1.1)
    assert probabilities[c] == pytest.approx(0.1 / 1.1) and probabilities[a] == pytest.approx(0.1 / 1.1)
    dog = vocab.tokenizer.token_to_id("dog")
    assert probabilities[dog] == fallback[dog]  # no word reaches it


def test_real_wordfreq_list_is_english_and_ordered() -> None:
    frequencies = token_frequencies.english_word_frequencies()
    assert token_frequencies.top_words(frequencies, 3) == ["the", "to", "and"]
    assert len(frequencies) > 100_000


def test_pca_whitening_and_dropping_the_top_component() -> None:
    vectors = np.random.default_rng(0).normal(size=(500, 12)) * np.linspace(5, 1, 12)
    plain = reduction.fit_pca(vectors, 6)
    dropped = reduction.fit_pca(vectors, 5, drop_top=1)
    np.testing.assert_allclose(np.abs(dropped), np.abs(plain[:, 1:]), atol=1e-4)
    half = reduction.fit_pca(vectors, 6, whiten=0.5)
    np.testing.assert_allclose(half.std(0), plain.std(0) ** 0.5, rtol=1e-4)
    assert np.all(np.diff(half.std(0)) <= 0)  # still in order of variance: truncation stays meaningful
    np.testing.assert_allclose(np.linalg.norm(reduction.unit_rows(vectors), axis=1), 1.0, rtol=1e-6)


def test_wordfreq_sif_is_recorded(tiny_teacher_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "wf"
    argv = [
        "--teacher",
        str(tiny_teacher_dir),
        "-o",
        str(out),
        "--pca-dims",
        "8",
        "--no-progress",
        "--refine-corpus",
        "none",
    ]
    assert main([*argv, "--token-frequencies", "wordfreq", "--extend-vocab", "0", "--pooling", "mean"]) == 0
    meta = json.loads((out / "config.json").read_text())["static_embed"]
    assert meta["token_frequencies"].startswith("wordfreq en large")
    assert meta["parameters"]["token_frequencies"] == "wordfreq" and meta["parameters"]["pooling"] == "mean"


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [("--pca-whiten", "2", "--pca-whiten"), ("--extend-vocab", "-1", "--extend-vocab"), ("--pca-drop-top", "-1", "")],
)
def test_bad_quality_options_are_one_line_errors(
    tiny_teacher_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, fragment: str
) -> None:
    assert main(["--teacher", str(tiny_teacher_dir), "-o", str(tmp_path / "o"), flag, value]) == 1
    assert capsys.readouterr().err.startswith(f"error: {fragment or '--pca-drop-top'}")
