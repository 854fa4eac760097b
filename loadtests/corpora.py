"""Real texts for the benchmarks, read from ../shared/data (never copied into the repo).

Four lengths, as users send them: Banking77 customer queries (short), STS-B sentences,
SciFact abstracts (a few hundred tokens) and texts of about 10,000 tokens made by
concatenating SciFact abstracts in corpus order.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
LONG_TEXT_TOKENS = 10_000
CORPORA = ("queries", "sentences", "abstracts", "long")


def queries() -> list[str]:
    with (SHARED_DATA / "banking77" / "train.csv").open(encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def sentences() -> list[str]:
    """Both sentences of every STS-B train and dev pair (tab-separated, unquoted)."""
    texts: list[str] = []
    for name in ("sts-train.csv", "sts-dev.csv"):
        with (SHARED_DATA / "stsbenchmark" / name).open(encoding="utf-8") as handle:
            for line in handle:
                texts.extend(line.rstrip("\n").split("\t")[5:7])
    return texts


def abstracts() -> list[str]:
    """SciFact documents as BEIR embeds them: title, a space, the abstract."""
    with (SHARED_DATA / "scifact" / "corpus.jsonl").open(encoding="utf-8") as handle:
        return [f"{doc['title']} {doc['text']}" for doc in map(json.loads, handle)]


def long_texts(
    count_tokens: Callable[[list[str]], list[int]], target: int = LONG_TEXT_TOKENS, limit: int | None = None
) -> list[str]:
    """Abstracts joined in corpus order until each text holds at least ``target`` tokens."""
    docs = abstracts()
    if limit is not None:
        docs = docs[: limit * target // 200]  # abstracts hold over 200 tokens on average
    texts: list[str] = []
    current: list[str] = []
    tokens = 0
    for doc, size in zip(docs, count_tokens(docs), strict=True):
        current.append(doc)
        tokens += size
        if tokens >= target:
            texts.append(" ".join(current))
            current, tokens = [], 0
            if len(texts) == limit:
                break
    return texts


def load(name: str, count_tokens: Callable[[list[str]], list[int]], limit: int | None = None) -> list[str]:
    """A corpus by name; ``limit`` keeps the first texts only (quick runs)."""
    if name == "long":
        return long_texts(count_tokens, limit=limit)
    loaders = {"queries": queries, "sentences": sentences, "abstracts": abstracts}
    if name not in loaders:
        raise ValueError(f"unknown corpus {name!r}; choose from {', '.join(CORPORA)}")
    return loaders[name]()[:limit]
