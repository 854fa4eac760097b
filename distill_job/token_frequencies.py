"""Token probabilities for SIF weighting, from real English word frequencies.

Source: the ``wordfreq`` package (PyPI, MIT code; data CC BY-SA 4.0), whose ``large``
English list gives the frequency of ~320,000 words pooled over Wikipedia, subtitles, news,
books, web text, Twitter and Reddit. A token's probability is the frequency mass of the
words it occurs in:

    count(t) = sum over words w of freq(w) * (occurrences of t in tokenize(w))
    p(t)     = count(t) / sum over tokens of count(t)

wordfreq has no punctuation, digits-only strings or symbols, so a token no word reaches
keeps the Zipf-rank estimate of ``reduction.zipf_probabilities`` instead.
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

from distill_job.errors import DistillError

WORDLIST = "large"


def english_word_frequencies() -> dict[str, float]:
    """Word -> frequency (a fraction of all words), most frequent first."""
    try:
        from wordfreq import get_frequency_dict
    except ImportError as exc:
        raise DistillError(
            "--token-frequencies wordfreq needs the 'wordfreq' package (pip install -e '.[distill]')"
        ) from exc
    return get_frequency_dict("en", wordlist=WORDLIST)


def top_words(frequencies: dict[str, float], n: int) -> list[str]:
    return sorted(frequencies, key=frequencies.__getitem__, reverse=True)[:n]


def token_probabilities(tokenizer: Tokenizer, frequencies: dict[str, float], fallback: np.ndarray) -> np.ndarray:
    """p(t) for every id of ``tokenizer`` (see the module docstring); ``fallback`` for ids no word reaches."""
    words = list(frequencies)
    encodings = tokenizer.encode_batch_fast(words, add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int64, count=int(lengths.sum()))
    mass = np.repeat(np.fromiter(frequencies.values(), dtype=np.float64, count=len(words)), lengths)
    counts = np.zeros(len(fallback), dtype=np.float64)
    np.add.at(counts, ids, mass)
    unk = _unknown_id(tokenizer)
    if unk is not None:
        counts[unk] = 0.0
    probabilities = counts / counts.sum()
    return np.where(counts > 0, probabilities, fallback)


def _unknown_id(tokenizer: Tokenizer) -> int | None:
    import json

    model = json.loads(tokenizer.to_str())["model"]
    token = model.get("unk_token")
    return tokenizer.token_to_id(token) if token else None
