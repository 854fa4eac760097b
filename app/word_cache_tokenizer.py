"""Token ids of plain ASCII texts for BERT-like tokenizers, word by word from a cache.

For a short text the Rust tokenizer spends most of its time outside WordPiece: building
an ``Encoding`` (offsets, type ids, masks, words) and crossing into Python. On printable
ASCII, BERT's pipeline is simple enough to do in Python with one regex: lowercase, split
at spaces, and make every other non-alphanumeric character a piece of its own; WordPiece
then works on each piece alone, so a piece's ids do not depend on its neighbours. Those
ids are cached per piece, and most words of real text are hits. Misses are tokenized
together by the Rust tokenizer, as pre-tokenized words, so the ids stay right as long as
every piece is made of whole BERT pre-tokens (never a part of one).

Only used when the tokenizer is exactly BERT's (``BertNormalizer`` lowercasing,
``BertPreTokenizer``, ``WordPiece``) and gives the same ids on samples; texts holding an
added token's text (``[CLS]`` and the like, matched before normalizing) go to the Rust
tokenizer whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

# After lowercasing: runs of letters and digits, or any other character but the space.
_PIECES = re.compile(r"[a-z0-9]+|[^a-z0-9 ]")
# Distinct pieces cached: ~170-190 bytes a piece of real text (~6 MB full),
# ~310 for random letters (~10 MB); a one-worker RSS under 150 MB has room for that.
_MAX_CACHED_PIECES = 32_768

_SAMPLES = (
    "The quick brown fox jumps over the lazy dog.",
    "Hello, WORLD! It's 3.14 o'clock; x [SEP] y [unk] [MASK]~`@#$%^&*()_+-={}|:<>?/\\\"",
    "a" * 99 + " " + "b" * 100 + " " + "c" * 101 + " unaffable antidisestablishmentarianism",
    "  leading and trailing spaces  ",
    "",
)


class WordCacheTokenizer:
    """Token ids of printable ASCII texts (``str.isascii() and str.isprintable()``), as ``tokenizer`` gives them."""

    def __init__(self, tokenizer: Tokenizer, max_cached: int = _MAX_CACHED_PIECES) -> None:
        self._tokenizer = tokenizer
        self._max_cached = max_cached
        self._cache: dict[str, tuple[int, ...]] = {}
        self._missed_while_full = 0
        added = [token.content for token in tokenizer.get_added_tokens_decoder().values()]
        self._added = re.compile("|".join(map(re.escape, added)), re.IGNORECASE) if added else None

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer) -> WordCacheTokenizer | None:
        """One for a BERT-like tokenizer that neither pads nor truncates, checked on samples; else None."""
        if not (
            isinstance(tokenizer.normalizer, normalizers.BertNormalizer)
            and tokenizer.normalizer.lowercase
            and isinstance(tokenizer.pre_tokenizer, pre_tokenizers.BertPreTokenizer)
            and isinstance(tokenizer.model, models.WordPiece)
            and tokenizer.padding is None
            and tokenizer.truncation is None
        ):
            return None
        fast = cls(tokenizer)
        samples = list(_SAMPLES)
        expected = [tokenizer.encode(text, add_special_tokens=False).ids for text in samples]
        if fast.id_lists(samples) != expected:
            return None
        fast._cache.clear()
        return fast

    def id_lists(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text (printable ASCII only: other characters are not normalized here).

        Pieces missing from the cache are tokenized together, in one call of the Rust
        tokenizer, so a cold cache costs about what tokenizing the texts would.
        """
        get = self._cache.get
        added = self._added
        out: list[list[int]] = []
        waiting: list[tuple[int, list[str]]] = []  # texts with a piece not in the cache yet
        for text in texts:
            if added is not None and added.search(text):
                out.append(self._tokenizer.encode(text, add_special_tokens=False).ids)
                continue
            pieces = _PIECES.findall(text.lower())
            ids: list[int] = []
            for piece in pieces:
                piece_ids = get(piece)
                if piece_ids is None:
                    waiting.append((len(out), pieces))
                    break
                ids += piece_ids
            out.append(ids)
        if waiting:
            # Every piece these texts need, read before the cache may be cleared for the new ones.
            needed = {piece: get(piece) for _, pieces in waiting for piece in pieces}
            needed.update(self._look_up([piece for piece, piece_ids in needed.items() if piece_ids is None]))
            for index, pieces in waiting:
                ids = []
                for piece in pieces:
                    ids += needed[piece]
                out[index] = ids
        return out

    def _look_up(self, pieces: list[str]) -> dict[str, tuple[int, ...]]:
        """Ids of each piece, from one call of the Rust tokenizer, added to the cache."""
        encoding = self._tokenizer.encode(pieces, is_pretokenized=True, add_special_tokens=False)
        found: dict[str, list[int]] = {piece: [] for piece in pieces}
        for token_id, word in zip(encoding.ids, encoding.word_ids, strict=True):
            found[pieces[word]].append(token_id)
        result = {piece: tuple(ids) for piece, ids in found.items()}
        cache = self._cache
        if len(cache) + len(result) > self._max_cached:
            # Full: the pieces cached first are mostly the frequent ones, so keep them a while
            # (rare pieces just miss), and start afresh once as many more have missed.
            self._missed_while_full += len(result)
            if self._missed_while_full < self._max_cached:
                return result
            cache.clear()
            self._missed_while_full = 0
        if len(result) <= self._max_cached:
            cache.update(result)
        return result
