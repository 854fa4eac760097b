"""The encoder's contract: model2vec's vectors, its documented edge cases, exact truncation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.encoder import Encoder, TokenBatch
from app.model_format import load_model


@pytest.fixture(scope="module")
def encoder(default_model_dir: Path) -> Encoder:
    return Encoder(load_model(default_model_dir))


@pytest.fixture(scope="session")
def default_encoder(default_model_dir: Path) -> Encoder:
    """Session-scoped, as hypothesis wants for fixtures shared by its examples."""
    return Encoder(load_model(default_model_dir))


def _reference_vector(encoder: Encoder, text: str) -> np.ndarray:
    """Slow, obvious version: tokenize, drop [UNK], mean of float rows, normalize."""
    ids = [i for i in encoder.tokenize([text]).ids.tolist() if i != encoder.unk_id]
    rows = np.asarray(encoder.table, dtype=np.float64)[ids]
    total = rows.sum(axis=0)
    return total / np.linalg.norm(total)


def test_unit_vectors_matching_the_obvious_computation(encoder: Encoder, real_sentences: list[str]) -> None:
    vectors = encoder.encode(real_sentences[:50])
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for text, vector in zip(real_sentences[:50], vectors, strict=True):
        np.testing.assert_allclose(vector, _reference_vector(encoder, text), atol=1e-5)


def test_batch_equals_one_by_one(encoder: Encoder, real_sentences: list[str]) -> None:
    texts = ["", *real_sentences[:20], "\U0001f9ff", "x" * 300]
    batch = encoder.encode(texts)
    singles = np.vstack([encoder.encode([text]) for text in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-6)


def test_similar_sentences_are_closer(encoder: Encoder) -> None:
    a, b, c = encoder.encode(["A man is playing a guitar.", "A person plays the guitar.", "Stock markets fell."])
    assert a @ b > a @ c + 0.2


def test_empty_and_unknown_only_texts_give_zero_vectors(encoder: Encoder) -> None:
    unknown = "\U0001f9ff \U0001f9ff"
    assert encoder.tokenize([unknown]).ids.tolist() == [encoder.unk_id] * 2
    vectors = encoder.encode(["", unknown, "hello"])
    assert not vectors[0].any() and not vectors[1].any()
    assert np.isclose(np.linalg.norm(vectors[2]), 1.0)


def test_unknown_tokens_are_ignored_in_the_mean(encoder: Encoder) -> None:
    plain, with_unknown = encoder.encode(["the cat sat", "the \U0001f9ff cat sat"])
    np.testing.assert_allclose(plain, with_unknown, atol=1e-6)


def test_long_text_is_not_truncated(encoder: Encoder, real_sentences: list[str]) -> None:
    text = " ".join(real_sentences * 10)
    batch = encoder.tokenize([text])
    assert batch.total_tokens > 10_000
    np.testing.assert_allclose(encoder.encode([text])[0], _reference_vector(encoder, text), atol=1e-5)
    tail_changed = encoder.encode([text + " zebra zebra zebra zebra zebra zebra zebra zebra"])[0]
    assert not np.allclose(tail_changed, encoder.encode([text])[0], atol=1e-7)


def test_dimensions_truncate_then_renormalize(encoder: Encoder, real_sentences: list[str]) -> None:
    texts = real_sentences[:10]
    batch = encoder.tokenize(texts)
    for k in (1, 32, 255):
        short = encoder.embed(batch, dimensions=k)
        assert short.shape == (10, k)
        expected = np.vstack([_reference_unnormalized(encoder, t)[:k] for t in texts])
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        np.testing.assert_allclose(short, expected, atol=1e-5)


def _reference_unnormalized(encoder: Encoder, text: str) -> np.ndarray:
    ids = [i for i in encoder.tokenize([text]).ids.tolist() if i != encoder.unk_id]
    return np.asarray(encoder.table, dtype=np.float64)[ids].sum(axis=0)


@pytest.mark.parametrize("bad", [0, -1, 257])
def test_dimensions_out_of_range(encoder: Encoder, bad: int) -> None:
    with pytest.raises(ValueError, match="dimensions must be between 1 and 256"):
        encoder.encode(["hello"], dimensions=bad)


def test_token_ids_give_the_same_vectors_as_text(encoder: Encoder, real_sentences: list[str]) -> None:
    texts = real_sentences[:5]
    ids = [encoder.tokenize([t]).ids.tolist() for t in texts]
    np.testing.assert_allclose(encoder.embed(TokenBatch.from_id_lists(ids)), encoder.encode(texts), atol=1e-7)


def test_token_batch_truncate_keeps_leading_tokens() -> None:
    batch = TokenBatch.from_id_lists([[1, 2, 3, 4], [], [5], [6, 7, 8]])
    cut = batch.truncate(2)
    assert cut.ids.tolist() == [1, 2, 5, 6, 7]
    assert cut.lengths.tolist() == [2, 0, 1, 2]
    assert batch.truncate(10) is batch


def test_empty_batch(encoder: Encoder) -> None:
    assert encoder.encode([]).shape == (0, 256)


@pytest.mark.parametrize(("dtype", "min_cosine"), [("float32", 0.99999), ("int8", 0.999)])
def test_stored_dtypes_decode_to_the_same_vectors(
    dtype: str, min_cosine: float, encoder: Encoder, tmp_path: Path, real_sentences: list[str]
) -> None:
    """int8 tables keep per-row scales, so they decode to nearly the float vectors."""
    from app.model_format import write_model
    from distill_job.storage import to_stored_dtype

    table, scales = to_stored_dtype(np.asarray(encoder.table, dtype=np.float32), dtype)
    write_model(tmp_path / dtype, table, encoder.model.tokenizer, dict(encoder.model.config), row_scales=scales)
    converted = Encoder(load_model(tmp_path / dtype))
    cosines = (converted.encode(real_sentences) * encoder.encode(real_sentences)).sum(axis=1)
    assert cosines.min() >= min_cosine


def _full_tokenizer_ids(encoder: Encoder, text: str) -> list[int]:
    return encoder.tokenizer.encode(text, add_special_tokens=False).ids


def test_fast_tokenization_paths_give_the_tokenizers_own_ids(encoder: Encoder, real_sentences: list[str]) -> None:
    """Plain-ASCII and word-run shortcuts must give exactly the model tokenizer's ids."""
    mixed = [
        "Café déjà vu — naïve coöperation, 東京 and Zürich!\tTabs\nnewlines\x00NUL \u200b zero-width",
        "ÀÉÎÕÜ ÿ ß ﬁ ligature ½ ² Ⅻ \U0001f9ff emoji",
    ]
    long_mixed = " ".join(real_sentences[:40] + mixed * 20)  # over the word-run threshold
    texts = [*real_sentences[:20], *mixed, long_mixed, long_mixed.upper(), "  leading and  double  spaces  "]
    batch = encoder.tokenize(texts)
    offsets = np.concatenate([[0], np.cumsum(batch.lengths)])
    for i, text in enumerate(texts):
        assert batch.ids[offsets[i] : offsets[i + 1]].tolist() == _full_tokenizer_ids(encoder, text), text[:80]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=1500), min_size=1, max_size=4))
def test_tokenize_matches_the_tokenizer_on_any_text(default_encoder: Encoder, texts: list[str]) -> None:
    batch = default_encoder.tokenize(texts)
    offsets = np.concatenate([[0], np.cumsum(batch.lengths)])
    for i, text in enumerate(texts):
        assert batch.ids[offsets[i] : offsets[i + 1]].tolist() == _full_tokenizer_ids(default_encoder, text)
