"""The hot path: texts to unit vectors with one vectorized call per batch.

Tokenize the whole batch at once (the Rust tokenizer uses its own threads and releases
the GIL), flatten the ids, gather the rows, sum each text's rows with one
``np.add.reduceat``, then L2-normalize. There is no Python loop over tokens.

Policies, chosen to match model2vec's ``encode`` so that vectors agree:

* Special tokens are not added, and the tokenizer's unknown token is dropped before
  pooling: it carries no meaning of its own.
* A text with no known token (the empty string, or only unknown characters) gets the
  zero vector. It is the only way a vector is not of unit norm.
* Nothing is truncated here. Callers see every text's token count in ``TokenBatch`` and
  decide (the service rejects or truncates by its configured limit, visibly).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from app.model_format import StaticModel


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of several texts, flattened: text i owns ``ids[offsets[i]:offsets[i+1]]``."""

    ids: np.ndarray  # int64, every text's ids one after the other
    lengths: np.ndarray  # int64, tokens per text, counted before unknown tokens are dropped

    @classmethod
    def from_id_lists(cls, id_lists: Sequence[Sequence[int]]) -> TokenBatch:
        lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
        ids = np.fromiter(itertools.chain.from_iterable(id_lists), dtype=np.int64, count=int(lengths.sum()))
        return cls(ids, lengths)

    @property
    def total_tokens(self) -> int:
        return int(self.lengths.sum())

    def truncate(self, max_tokens: int) -> TokenBatch:
        """Keep the first ``max_tokens`` ids of each text."""
        if not len(self.lengths) or int(self.lengths.max()) <= max_tokens:
            return self
        starts = np.cumsum(self.lengths) - self.lengths
        new_lengths = np.minimum(self.lengths, max_tokens)
        position = np.arange(len(self.ids)) - np.repeat(starts, self.lengths)
        keep = position < np.repeat(new_lengths, self.lengths)
        return TokenBatch(self.ids[keep], new_lengths)


class Encoder:
    """Encodes texts or token ids with a loaded static model."""

    def __init__(self, model: StaticModel) -> None:
        self.model = model
        self.table = model.embeddings
        self.row_scales = model.row_scales
        self.tokenizer = _inference_tokenizer(model.tokenizer)
        self.unk_id = _unknown_token_id(model.tokenizer)

    @property
    def dimensions(self) -> int:
        return self.model.dimensions

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        encodings = self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return TokenBatch.from_id_lists([encoding.ids for encoding in encodings])

    def encode(self, texts: Sequence[str], dimensions: int | None = None) -> np.ndarray:
        """Unit vectors (float32, one row per text) for a batch of texts."""
        return self.embed(self.tokenize(texts), dimensions)

    def embed(self, batch: TokenBatch, dimensions: int | None = None) -> np.ndarray:
        """Pool token ids into unit vectors, keeping the first ``dimensions`` components.

        PCA orders the table's columns by explained variance, so truncating before
        normalizing is a real dimensionality reduction.
        """
        width = self.dimensions if dimensions is None else dimensions
        if not 1 <= width <= self.dimensions:
            raise ValueError(f"dimensions must be between 1 and {self.dimensions}, got {width}")
        ids, lengths = batch.ids, batch.lengths
        if self.unk_id is not None and len(ids):
            known = ids != self.unk_id
            if not known.all():
                lengths = _segment_sums(known.astype(np.int64), lengths)
                ids = ids[known]
        out = np.zeros((len(lengths), width), dtype=np.float32)
        if len(ids):
            rows = self.table[ids, :width] if width < self.dimensions else self.table[ids]
            if self.row_scales is not None:
                rows = rows * self.row_scales[ids, None]
            nonempty = lengths > 0
            starts = (np.cumsum(lengths) - lengths)[nonempty]
            out[nonempty] = np.add.reduceat(rows, starts, axis=0, dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


def _segment_sums(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Sum of ``values`` over each segment; zero for empty segments."""
    sums = np.zeros(len(lengths), dtype=values.dtype)
    nonempty = lengths > 0
    if nonempty.any():
        starts = (np.cumsum(lengths) - lengths)[nonempty]
        sums[nonempty] = np.add.reduceat(values, starts)
    return sums


def _inference_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """A copy that neither pads nor truncates: we pool every token we are given."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy


def _unknown_token_id(tokenizer: Tokenizer) -> int | None:
    model = json.loads(tokenizer.to_str()).get("model", {})
    if model.get("unk_id") is not None:  # Unigram stores the id
        return int(model["unk_id"])
    token = model.get("unk_token")
    return tokenizer.token_to_id(token) if token else None
