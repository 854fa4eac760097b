"""Word-cache tokenizing of plain ASCII texts must give exactly the model tokenizer's ids."""

from __future__ import annotations

import csv
import string

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from app.encoder import Encoder
from app.model_format import load_model
from app.word_cache_tokenizer import WordCacheTokenizer
from tests.conftest import SHARED_DATA, sts_sentences


@pytest.fixture(scope="session", params=["tiny_model_dir", "default_model_dir"])
def encoder(request: pytest.FixtureRequest) -> Encoder:
    """Session-scoped, as hypothesis wants for fixtures shared by its examples."""
    return Encoder(load_model(request.getfixturevalue(request.param)))


@pytest.fixture(scope="session")
def real_texts() -> list[str]:
    """Every Banking77 train query and every STS-B dev sentence."""
    with (SHARED_DATA / "banking77" / "train.csv").open(encoding="utf-8", newline="") as handle:
        queries = [row["text"] for row in csv.DictReader(handle)]
    sentences = sts_sentences(limit=10**9)
    assert len(queries) > 10_000 and len(sentences) == 3000
    return queries + sentences


def _full_ids(encoder: Encoder, texts: list[str]) -> list[list[int]]:
    return [encoder.tokenizer.encode(text, add_special_tokens=False).ids for text in texts]


def _split(batch_ids: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    return [part.tolist() for part in np.split(batch_ids, np.cumsum(lengths)[:-1])] if len(lengths) else []


def test_the_word_cache_is_used_for_bert_tokenizers(encoder: Encoder) -> None:
    assert isinstance(encoder._word_cache, WordCacheTokenizer)


def test_real_texts_give_the_tokenizers_ids(encoder: Encoder, real_texts: list[str]) -> None:
    expected = _full_ids(encoder, real_texts)
    batch = encoder.tokenize(real_texts)
    assert _split(batch.ids, batch.lengths) == expected
    assert batch.lengths.tolist() == [len(ids) for ids in expected]
    for size in (1, 16, 128):  # the cache is warm now: hits must give the same ids as misses did
        for start in range(0, 600, size):
            part = encoder.tokenize(real_texts[start : start + size], parallel=False)
            assert _split(part.ids, part.lengths) == expected[start : start + size]


_ASCII = "".join(map(chr, range(128)))
_WORD = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=12)
_LONG_WORD = st.text(alphabet=string.ascii_letters + string.digits, min_size=95, max_size=210)
_GAP = st.text(alphabet=" \t\n\r\x0b\x0c" + string.punctuation, min_size=1, max_size=3)
_WORDY_TEXT = st.lists(st.tuples(st.one_of(_WORD, _WORD, _LONG_WORD), _GAP), max_size=30).map(
    lambda parts: "".join(word + gap for word, gap in parts)
)
_ANY_ASCII = st.one_of(st.text(alphabet=_ASCII, max_size=300), _WORDY_TEXT, st.just(""))


@settings(max_examples=150, deadline=None)
@given(st.lists(_ANY_ASCII, min_size=1, max_size=6))
def test_any_ascii_text_gives_the_tokenizers_ids(encoder: Encoder, texts: list[str]) -> None:
    expected = _full_ids(encoder, texts)
    batch = encoder.tokenize(texts)
    assert _split(batch.ids, batch.lengths) == expected
    printable = [i for i, text in enumerate(texts) if text.isprintable()]
    assert encoder._word_cache.id_lists([texts[i] for i in printable]) == [expected[i] for i in printable]


def test_added_tokens_long_words_and_case(encoder: Encoder) -> None:
    texts = [
        "a [CLS] b [SEP][MASK] [UNK] c [unk] [Cls] [PAD]",
        "x" * 99 + " " + "y" * 100 + " " + "z" * 101 + "." + "Q" * 500,
        'MiXeD CaSe, ApOsTrOpHe\'s & 3.14159 ~~ [brackets] {braces} (parens) "quotes" back\\slash',
        " ",
        "",
        "!" * 50,
    ]
    batch = encoder.tokenize(texts)
    assert _split(batch.ids, batch.lengths) == _full_ids(encoder, texts)


def test_the_cache_stays_bounded_and_correct(encoder: Encoder, real_texts: list[str]) -> None:
    """A cache far smaller than the texts' pieces fills, overflows and starts afresh: same ids throughout."""
    small = WordCacheTokenizer(encoder.tokenizer, max_cached=50)
    texts = real_texts[:400]
    expected = _full_ids(encoder, texts)
    sizes = []
    for start in range(0, len(texts), 2):
        assert small.id_lists(texts[start : start + 2]) == expected[start : start + 2]
        sizes.append(len(small._cache))
    assert max(sizes) <= 50 and min(sizes[sizes.index(max(sizes)) :]) < max(sizes)  # it was cleared
    assert small.id_lists(texts) == expected  # more new pieces in one call than the cache holds


def _bert_like(normalizer: normalizers.Normalizer, pre_tokenizer: pre_tokenizers.PreTokenizer) -> Tokenizer:
    vocab = {"[UNK]": 0, "the": 1, "cat": 2, "##s": 3, ".": 4}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    return tokenizer


def test_only_bert_like_tokenizers_get_a_word_cache() -> None:
    bert = _bert_like(normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer())
    assert WordCacheTokenizer.for_tokenizer(bert) is not None
    cased = _bert_like(normalizers.BertNormalizer(lowercase=False), pre_tokenizers.BertPreTokenizer())
    assert WordCacheTokenizer.for_tokenizer(cased) is None  # "The" would be looked up as "the"
    spaces_only = _bert_like(normalizers.BertNormalizer(lowercase=True), pre_tokenizers.WhitespaceSplit())
    assert WordCacheTokenizer.for_tokenizer(spaces_only) is None  # "cats." is one piece there
    padded = _bert_like(normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer())
    padded.enable_padding(length=8)
    assert WordCacheTokenizer.for_tokenizer(padded) is None
    bpe = Tokenizer(models.BPE({"[UNK]": 0, "a": 1}, [], unk_token="[UNK]"))
    bpe.normalizer = normalizers.BertNormalizer(lowercase=True)
    bpe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    assert WordCacheTokenizer.for_tokenizer(bpe) is None
