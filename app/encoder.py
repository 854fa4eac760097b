"""The hot path: texts to unit vectors with one vectorized call per batch.

Tokenize the whole batch at once (the Rust tokenizer uses its own threads and releases
the GIL), flatten the ids, gather the rows, sum each text's rows, then L2-normalize.
There is no Python loop over tokens or texts.

Policies, chosen to match model2vec's ``encode`` so that vectors agree:

* Special tokens are not added, and the tokenizer's unknown token is dropped before
  pooling: it carries no meaning of its own.
* A text with no known token (the empty string, or only unknown characters) gets the
  zero vector. It is the only way a vector is not of unit norm.
* Nothing is truncated here. Callers see every text's token count in ``TokenBatch`` and
  decide (the service rejects or truncates by its configured limit, visibly).
* A text's vector does not depend on the other texts in its batch, bit for bit: each
  text's rows are added one after the other in float32, in token order, whatever the
  batch (texts longer than the ~2 MB block: float32 sums per block, added in float64), so
  a server may batch requests together and still answer exactly what ``encode([text])``
  gives.

How it is fast (see docs/performance.md for the measurements):

* Sums run on a float32 copy of the table. numpy converts float16 slowly (and very
  slowly for the subnormal values PCA'd tables are full of), so a float16 or int8 table
  is converted once; the copy is a file in the temp directory, memory-mapped, so that
  worker processes share one copy in the page cache as they share the stored table.
* Texts are sorted by token count and cut into blocks of about 2 MB of rows; a block's
  rows are gathered (shorter texts padded with zero rows) into a reused buffer, which
  stays in cache and never page-faults, and summed by one numpy call over a
  ``(k, L, dims)`` array, whose inner loop runs along the contiguous ``dims``.
* Large batches are split across two threads: numpy releases the GIL while it gathers
  and sums.
* With a BERT-like tokenizer, printable ASCII texts are tokenized word by word from a
  cache (``app/word_cache_tokenizer.py``): the same ids at 2-5x the Rust call's speed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import mmap
import os
import stat
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, normalizers

from app.model_format import TABLE_FILE, StaticModel
from app.word_cache_tokenizer import WordCacheTokenizer

# Rows gathered per numpy call: 2048 rows x 256 dims x 4 bytes = 2 MiB, about the L2 cache.
_BLOCK_BYTES = 2 << 20
# Below this many tokens a batch is pooled on the calling thread alone.
_PARALLEL_MIN_TOKENS = 32_768
_POOL_THREADS = 2
# Texts at least this long that are not plain ASCII are tokenized in runs of words.
_SPLIT_MIN_CHARS = 1000
# Converted tables kept in the temp directory (30 MB each for the default model).
_KEEP_CONVERTED_TABLES = 4


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of several texts, flattened: text i owns ``ids[offsets[i]:offsets[i+1]]``."""

    ids: np.ndarray  # int64, every text's ids one after the other
    lengths: np.ndarray  # int64, tokens per text, counted before unknown tokens are dropped

    @classmethod
    def from_id_lists(cls, id_lists: Sequence[Sequence[int]]) -> TokenBatch:
        if len(id_lists) == 1:  # the common single-input request: skip the chaining machinery
            ids = np.array(id_lists[0], dtype=np.int64).reshape(-1)
            return cls(ids, np.array([len(ids)], dtype=np.int64))
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

    def without(self, token_id: int) -> TokenBatch:
        """The same texts with every ``token_id`` dropped (the unknown token pools as nothing)."""
        known = self.ids != token_id
        if known.all():
            return self
        owner = np.repeat(np.arange(len(self.lengths)), self.lengths)
        lengths = self.lengths - np.bincount(owner[~known], minlength=len(self.lengths))
        return TokenBatch(self.ids[known], lengths)


class Encoder:
    """Encodes texts or token ids with a loaded static model."""

    def __init__(self, model: StaticModel) -> None:
        self.model = model
        self.table = model.embeddings  # as stored (float32, float16 or int8)
        self.row_scales = model.row_scales
        self.tokenizer = _inference_tokenizer(model.tokenizer)
        self.unk_id = _unknown_token_id(model.tokenizer)
        self._plain_tokenizer = _plain_text_tokenizer(self.tokenizer)
        # Plain texts word by word from a cache when the tokenizer is BERT's: ~5x the Rust call.
        self._word_cache = WordCacheTokenizer.for_tokenizer(self.tokenizer) if self._plain_tokenizer else None
        # What rows are summed from: float32, scales applied, maybe with a zero row appended for padding.
        self._sum_table, self._zero_row = float32_table(model)

    @property
    def dimensions(self) -> int:
        return self.model.dimensions

    @property
    def vocab_size(self) -> int:
        return self.model.vocab_size

    def tokenize(self, texts: Sequence[str], *, parallel: bool = True) -> TokenBatch:
        """Token ids of every text; ``parallel=False`` keeps all the work on the calling thread.

        The batch call hands the texts to the tokenizer's Rust thread pool (releasing the
        GIL): good for large batches, but for a few short texts the hand-off to another
        thread, and the wait for it to be scheduled on a busy machine, cost more than the
        tokenizing. Both give the same ids.
        """
        batch = texts if isinstance(texts, list) else list(texts)
        ids = _batch_ids if parallel else _serial_ids
        plain = self._plain_tokenizer
        if plain is None:
            return TokenBatch.from_id_lists(ids(self.tokenizer, batch))
        word_cache = self._word_cache
        ids_of_plain = word_cache.id_lists if word_cache is not None else functools.partial(ids, plain)
        is_plain = [_is_plain(text) for text in batch]
        if all(is_plain):
            return TokenBatch.from_id_lists(ids_of_plain(batch))
        # Mixed batch: plain texts through the cheap normalizer, the rest through the full one.
        # Long texts that are not plain are cut at spaces into runs of plain and other words:
        # BERT's pre-tokenizer splits at spaces anyway, so the ids are the same.
        plain_pieces: list[str] = []
        other_pieces: list[str] = []
        layouts: list[list[tuple[bool, int]]] = []
        for text, flag in zip(batch, is_plain, strict=True):
            if flag or len(text) < _SPLIT_MIN_CHARS:
                pieces = plain_pieces if flag else other_pieces
                layouts.append([(flag, len(pieces))])
                pieces.append(text)
                continue
            layout = []
            for run_is_plain, words in itertools.groupby(text.split(" "), key=_is_plain):
                pieces = plain_pieces if run_is_plain else other_pieces
                layout.append((run_is_plain, len(pieces)))
                pieces.append(" ".join(words))
            layouts.append(layout)
        plain_ids = ids_of_plain(plain_pieces)
        other_ids = ids(self.tokenizer, other_pieces)
        id_lists = [
            (plain_ids if layout[0][0] else other_ids)[layout[0][1]]
            if len(layout) == 1
            else list(itertools.chain.from_iterable((plain_ids if f else other_ids)[i] for f, i in layout))
            for layout in layouts
        ]
        return TokenBatch.from_id_lists(id_lists)

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
        if len(ids):
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= self.vocab_size:
                bad = low if low < 0 else high
                raise IndexError(f"token id {bad} is out of range for a vocabulary of {self.vocab_size}")
            if self.unk_id is not None and low <= self.unk_id <= high:
                known = batch.without(self.unk_id)
                ids, lengths = known.ids, known.lengths
        table = self._sum_table if width == self.dimensions else self._sum_table[:, :width]
        out = _sum_rows(table, ids, lengths, self._zero_row)
        norms = np.sqrt(np.add.reduce(np.square(out), axis=1))[:, None]
        np.divide(out, norms, out=out, where=norms > 0)
        return out


def _batch_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [encoding.ids for encoding in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def _serial_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    encode = tokenizer.encode
    return [encode(text, add_special_tokens=False).ids for text in texts]


def _sum_rows(table: np.ndarray, ids: np.ndarray, lengths: np.ndarray, zero_row: int | None) -> np.ndarray:
    """Per text, the float32 sum of its rows, added in token order (zero for empty texts)."""
    count, width = len(lengths), table.shape[1]
    out = np.zeros((count, width), dtype=np.float32)
    if not len(ids):
        return out
    block_rows = max(1, _BLOCK_BYTES // (4 * width))
    if count * int(lengths.max()) <= block_rows:  # a small batch: one padded block, nothing to sort
        _sum_block(table, ids, lengths, out, block_rows, zero_row)
        return out
    # Sorted by length, neighbouring texts pad to nearly the same length.
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[order]
    starts = np.cumsum(lengths) - lengths
    sorted_starts = np.cumsum(sorted_lengths) - sorted_lengths
    sorted_ids = ids[np.repeat(starts[order] - sorted_starts, sorted_lengths) + np.arange(len(ids))]
    sorted_out = np.zeros_like(out)
    token_start = np.append(sorted_starts, len(ids))
    blocks = _plan_blocks(sorted_lengths, block_rows)

    def run(part: list[tuple[int, int]]) -> None:
        for a, b in part:
            block_ids = sorted_ids[token_start[a] : token_start[b]]
            _sum_block(table, block_ids, sorted_lengths[a:b], sorted_out[a:b], block_rows, zero_row)

    halves = _split_by_tokens(blocks, token_start) if len(ids) >= _PARALLEL_MIN_TOKENS else [blocks]
    if len(halves) == 1:
        run(halves[0])
    else:
        helper = _pool().submit(run, halves[1])
        run(halves[0])
        helper.result()
    out[order] = sorted_out
    return out


def _sum_block(
    table: np.ndarray, ids: np.ndarray, lengths: np.ndarray, out: np.ndarray, block_rows: int, zero_row: int | None
) -> None:
    """Sum a block of texts (ids consecutive) into ``out``: one gather, one reduction.

    Shorter texts are padded with zero rows at their end (the table's extra zero row, or
    rows zeroed after the gather); adding zeros after a text's last row leaves its sum
    unchanged, bit for bit.
    """
    count, longest, width = len(lengths), int(lengths.max()), table.shape[1]
    buffer = _buffer(block_rows * width)
    if longest > block_rows:  # one long text, summed a buffer at a time
        _sum_long_text(table, ids, out[0], buffer[: block_rows * width].reshape(block_rows, width))
        return
    rows = buffer[: count * longest * width].reshape(count, longest, width)
    if int(lengths.min()) == longest:
        np.take(table, ids, axis=0, out=rows.reshape(-1, width), mode="clip")
    else:
        filled = np.arange(longest) < lengths[:, None]
        padded = np.full((count, longest), 0 if zero_row is None else zero_row, dtype=ids.dtype)
        padded[filled] = ids
        np.take(table, padded.reshape(-1), axis=0, out=rows.reshape(-1, width), mode="clip")
        if zero_row is None:
            rows[~filled] = 0.0
    np.add.reduce(rows, axis=1, out=out)


def _sum_long_text(table: np.ndarray, ids: np.ndarray, total: np.ndarray, rows: np.ndarray) -> None:
    """Rows of one text longer than the buffer: float32 sums per buffer, added up in float64.

    A float32 running sum over tens of thousands of rows drifts by ~1e-5; per-buffer sums
    of at most a few thousand rows, carried in float64, stay near 1e-6.
    """
    size = len(rows)
    carried = np.zeros(len(total), dtype=np.float64)
    for offset in range(0, len(ids), size):
        chunk = ids[offset : offset + size]
        part = rows[: len(chunk)]
        np.take(table, chunk, axis=0, out=part, mode="clip")
        np.add.reduce(part, axis=0, out=total)
        carried += total
    total[:] = carried


def _plan_blocks(sorted_lengths: np.ndarray, block_rows: int) -> list[tuple[int, int]]:
    """Cut texts sorted by length into ranges whose padded size fits the buffer.

    A range takes in longer texts only while the padding that adds stays under a quarter
    of the buffer; texts longer than the buffer are ranges of their own. Empty texts
    (sorted first) are left out: their sums stay zero.
    """
    edges = np.flatnonzero(np.diff(sorted_lengths)) + 1
    runs = zip(np.concatenate(([0], edges)).tolist(), np.append(edges, len(sorted_lengths)).tolist(), strict=True)
    blocks: list[tuple[int, int]] = []
    start: int | None = None
    for a, b in runs:
        length = int(sorted_lengths[a])
        if length == 0:
            continue
        if length > block_rows:
            if start is not None:
                blocks.append((start, a))
                start = None
            blocks.extend((i, i + 1) for i in range(a, b))
            continue
        if start is not None and (a - start) * (length - int(sorted_lengths[start])) > block_rows // 4:
            blocks.append((start, a))
            start = None
        capacity = block_rows // length
        i = a
        while i < b:
            if start is None:
                start = i
            end = min(b, start + capacity)
            if end <= i:  # the open range is full at this length
                blocks.append((start, i))
                start = None
                continue
            i = end
            if end - start == capacity:
                blocks.append((start, end))
                start = None
    if start is not None:
        blocks.append((start, len(sorted_lengths)))
    return blocks


def _split_by_tokens(blocks: list[tuple[int, int]], token_start: np.ndarray) -> list[list[tuple[int, int]]]:
    """Two runs of whole blocks with about half the tokens each, for two threads."""
    sizes = np.cumsum([token_start[b] - token_start[a] for a, b in blocks])
    cut = int(np.searchsorted(sizes, sizes[-1] / 2)) + 1
    return [part for part in (blocks[:cut], blocks[cut:]) if part]


_local = threading.local()


def _buffer(size: int) -> np.ndarray:
    """A per-thread scratch buffer, reused so that gathering never allocates or page-faults."""
    buffer = getattr(_local, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _local.buffer = np.empty(size, dtype=np.float32)
    return buffer


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(_POOL_THREADS - 1, thread_name_prefix="embed-pool")
        return _executor


def float32_table(model: StaticModel) -> tuple[np.ndarray, int | None]:
    """The table as float32 with row scales applied, shared between processes where possible,
    and the id of an all-zero row appended to it (None if there is none).

    A float32 table without scales is the stored memory map itself. Otherwise the
    converted table is written once to a private directory under the temp directory and
    memory-mapped, so that every worker serving the same file maps the same pages; if that
    directory cannot be used the copy stays in this process's memory.
    """
    stored = np.asarray(model.embeddings)  # a plain ndarray view of the map: no np.memmap overhead per call
    if stored.dtype == np.float32 and model.row_scales is None:
        return stored, None
    try:
        table = _cached_float32_table(model)
    except OSError:
        table = _convert(model)
    _release_stored_pages(model.embeddings)
    return table, model.vocab_size


def _release_stored_pages(stored: np.ndarray) -> None:
    """Drop the stored table's pages from this process once it has its float32 copy.

    Sums never read the stored table again, but the checks and the conversion at startup
    touched all of it: without this its pages would count in the process's RSS for its
    whole life (28 MB for the default float16 table). They stay in the page cache, so a
    later read of ``model.embeddings`` just maps them again.
    """
    mapping = stored.base if isinstance(stored, np.memmap) else None
    if isinstance(mapping, mmap.mmap) and not stored.flags.writeable and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):
            mapping.madvise(mmap.MADV_DONTNEED)


def _convert(model: StaticModel) -> np.ndarray:
    """Float32 rows with scales applied, and one zero row after the last."""
    table = np.zeros((model.vocab_size + 1, model.dimensions), dtype=np.float32)
    table[:-1] = model.embeddings
    if model.row_scales is not None:
        table[:-1] *= model.row_scales[:, None].astype(np.float32)
    return table


def _cached_float32_table(model: StaticModel) -> np.ndarray:
    directory = Path(tempfile.gettempdir()) / f"static-embed-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{directory} is not a private directory of this user")
    table_file = model.path / TABLE_FILE
    source = table_file.stat()
    key = json.dumps(
        [
            str(table_file.resolve()),
            source.st_dev,
            source.st_ino,
            source.st_size,
            source.st_mtime_ns,
            list(model.embeddings.shape),
            str(model.embeddings.dtype),
            "zero row",
        ]
    )
    path = directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".f32")
    shape = (model.vocab_size + 1, model.dimensions)
    if not path.is_file() or path.stat().st_size != 4 * shape[0] * shape[1]:
        converted = _convert(model)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            converted.tofile(partial)
            os.replace(partial, path)  # atomic: a concurrent reader sees no file or a whole one
        except OSError:
            partial.unlink(missing_ok=True)  # a full temp directory must not keep half a table
            raise
        _forget_old_tables(directory, keep=path)
    return np.asarray(np.memmap(path, dtype=np.float32, mode="r", shape=shape))


def _forget_old_tables(directory: Path, keep: Path) -> None:
    """Keep the newest few converted tables: every new model file (each test run's, say) makes one.

    Deleting a file that another process maps is safe: its pages live until unmapped.
    """
    tables = sorted(directory.glob("*.f32"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in tables[_KEEP_CONVERTED_TABLES:]:
        if old != keep:
            old.unlink(missing_ok=True)


def _is_plain(text: str) -> bool:
    """Printable ASCII: BERT's normalizer only lowercases it."""
    return text.isascii() and text.isprintable()


_PLAIN_SAMPLES = (
    "The quick brown fox jumps over the lazy dog.",
    "Hello, WORLD! It's 3.14 o'clock; [CLS] x [SEP] y [UNK] [MASK] ~`@#$%^&*()_+-={}|:<>?",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "",
)


def _plain_text_tokenizer(tokenizer: Tokenizer) -> Tokenizer | None:
    """A tokenizer for printable ASCII texts, with the same ids and a cheaper normalizer (None if none applies).

    BERT's normalizer removes control characters, decomposes to NFD to strip accents,
    spaces out CJK characters and lowercases. On printable ASCII text all but the
    lowercasing do nothing, yet cost about a third of the tokenizer's time; most texts
    sent to an English model are printable ASCII. Checked on samples before use.
    """
    normalizer = tokenizer.normalizer
    if not isinstance(normalizer, normalizers.BertNormalizer):
        return None
    cheap = normalizers.Lowercase() if normalizer.lowercase else normalizers.Sequence([])
    plain = _tokenizer_sharing_model(tokenizer, cheap) or _tokenizer_copy(tokenizer)
    plain.normalizer = cheap
    samples = list(_PLAIN_SAMPLES)  # text by text: building an encoder must not start the Rust thread pool
    if _serial_ids(tokenizer, samples) != _serial_ids(plain, samples):
        return None
    return plain


def _inference_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """One that neither pads nor truncates: we pool every token we are given.

    The model's own tokenizer is used as is when it already does neither.
    """
    if tokenizer.padding is None and tokenizer.truncation is None:
        return tokenizer
    return _tokenizer_sharing_model(tokenizer, tokenizer.normalizer) or _tokenizer_copy(tokenizer)


def _tokenizer_sharing_model(tokenizer: Tokenizer, normalizer: normalizers.Normalizer | None) -> Tokenizer | None:
    """A tokenizer over the same model object (the vocabulary shared, not copied), with
    ``normalizer``, the same pre-tokenizer and added tokens, that neither pads nor
    truncates; None if an added token would get another id.

    A copy through ``to_str``/``from_str`` builds the vocabulary again: about 7 MB per
    worker for the default model's 54,528 tokens (docs/performance.md, "Memory").
    """
    shared = Tokenizer(tokenizer.model)
    if normalizer is not None:
        shared.normalizer = normalizer
    for part in ("pre_tokenizer", "post_processor", "decoder"):
        value = getattr(tokenizer, part)
        if value is not None:
            setattr(shared, part, value)
    added = sorted(tokenizer.get_added_tokens_decoder().items())
    for _, token in added:  # in id order: a token missing from the vocabulary gets the next id, as it did
        (shared.add_special_tokens if token.special else shared.add_tokens)([token])
    if any(shared.token_to_id(token.content) != token_id for token_id, token in added):
        return None
    return shared


def _tokenizer_copy(tokenizer: Tokenizer) -> Tokenizer:
    """A full, independent copy (its own vocabulary) that neither pads nor truncates."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy


def _unknown_token_id(tokenizer: Tokenizer) -> int | None:
    token = getattr(tokenizer.model, "unk_token", None)
    if token is not None:  # WordPiece, BPE, WordLevel
        return tokenizer.token_to_id(token)
    model = json.loads(tokenizer.to_str()).get("model", {})
    if model.get("unk_id") is not None:  # Unigram stores the id
        return int(model["unk_id"])
    token = model.get("unk_token")
    return tokenizer.token_to_id(token) if token else None
