"""Readers for the development data in ``../shared/data`` (see its README for the layouts).

Every reader takes ``limit``: the number of pairs, examples or queries to keep, for quick
runs. Subsets are the first ``limit`` items in file order (or per label, for
classification), so a limited run is deterministic.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BANKING_HELD_OUT_FRACTION = 0.2
BANKING_SPLIT_SEED = 77


class DataError(Exception):
    """The data directory is missing or a file is not in the expected layout."""


@dataclass(frozen=True)
class SimilarityPairs:
    """Sentence pairs with a gold similarity score."""

    first: list[str]
    second: list[str]
    scores: np.ndarray


@dataclass(frozen=True)
class Classification:
    """Labelled texts: a training pool to sample from and a test split."""

    train_texts: list[str]
    train_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray


@dataclass(frozen=True)
class Retrieval:
    """Queries, documents, and graded relevance ``qrels[query_id][doc_id]``."""

    queries: dict[str, str]
    documents: dict[str, str]
    qrels: dict[str, dict[str, int]]


def require(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path} is missing; pass --data-dir pointing at the shared data folder")
    return path


def read_stsb(path: Path, limit: int | None = None) -> SimilarityPairs:
    """STS-B: tab-separated, unquoted; fields 4, 5, 6 are score and the two sentences."""
    first, second, scores = [], [], []
    with require(path).open(encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 7:
                continue
            scores.append(float(fields[4]))
            first.append(fields[5])
            second.append(fields[6])
    return _pairs(first, second, scores, limit)


def read_sts12(path: Path, limit: int | None = None) -> SimilarityPairs:
    """STS12: tab-separated with a header ``subset score sentence1 sentence2``."""
    first, second, scores = [], [], []
    with require(path).open(encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if header[:4] != ["subset", "score", "sentence1", "sentence2"]:
            raise DataError(f"{path}: unexpected header {header}")
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 4:
                continue
            scores.append(float(fields[1]))
            first.append(fields[2])
            second.append(fields[3])
    return _pairs(first, second, scores, limit)


def _pairs(first: list[str], second: list[str], scores: list[float], limit: int | None) -> SimilarityPairs:
    end = len(scores) if limit is None else limit
    return SimilarityPairs(first[:end], second[:end], np.asarray(scores[:end], dtype=np.float64))


def read_banking77(path: Path, limit: int | None = None) -> Classification:
    """Banking77 train.csv split once, stratified, with a fixed seed: 80% pool, 20% test.

    The published test split is held out from this project, so a fixed part of train
    stands in for it; the same rows are held out in every run.
    """
    with require(path).open(encoding="utf-8", newline="") as handle:
        rows = [(row["text"], row["category"]) for row in csv.DictReader(handle)]
    texts = [text for text, _ in rows]
    labels = _label_ids([label for _, label in rows])
    rng = np.random.default_rng(BANKING_SPLIT_SEED)
    test_mask = np.zeros(len(rows), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen = rng.choice(members, size=round(len(members) * BANKING_HELD_OUT_FRACTION), replace=False)
        test_mask[chosen] = True
    train_idx, test_idx = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    return _classification(texts, labels, train_idx, test_idx, limit)


def read_amazon_counterfactual(train_path: Path, valid_path: Path, limit: int | None = None) -> Classification:
    """Amazon counterfactual (en): fit on EN_train, score on EN_valid."""
    train_texts, train_labels = _read_tsv_labelled(train_path)
    test_texts, test_labels = _read_tsv_labelled(valid_path)
    texts = train_texts + test_texts
    labels = np.asarray(train_labels + test_labels, dtype=np.int64)
    train_idx = np.arange(len(train_texts))
    test_idx = np.arange(len(train_texts), len(texts))
    return _classification(texts, labels, train_idx, test_idx, limit)


def _read_tsv_labelled(path: Path) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with require(path).open(encoding="utf-8") as handle:
        handle.readline()  # header: sentence, is_counterfactual
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) >= 2 and fields[-1].strip():
                texts.append("\t".join(fields[:-1]))
                labels.append(int(fields[-1]))
    return texts, labels


def _label_ids(names: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(sorted(set(names)))}
    return np.asarray([index[name] for name in names], dtype=np.int64)


def _classification(
    texts: list[str], labels: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray, limit: int | None
) -> Classification:
    if limit is not None:  # keep every label present: the first items of each label, round robin
        train_idx = _first_per_label(train_idx, labels, limit)
        test_idx = _first_per_label(test_idx, labels, limit)
    return Classification(
        [texts[i] for i in train_idx], labels[train_idx], [texts[i] for i in test_idx], labels[test_idx]
    )


def _first_per_label(indices: np.ndarray, labels: np.ndarray, limit: int) -> np.ndarray:
    """The first ``limit`` of ``indices`` taken round robin over labels (first of each, then second...)."""
    rank_within_label = np.empty(len(indices), dtype=np.int64)
    for label in np.unique(labels[indices]):
        members = labels[indices] == label
        rank_within_label[members] = np.arange(int(members.sum()))
    order = np.lexsort((indices, rank_within_label))
    return np.sort(indices[order][:limit])


def read_scifact(root: Path, limit: int | None = None) -> Retrieval:
    """SciFact in BEIR layout; documents are ``title + " " + text``, queries those in train qrels.

    With ``limit``, the first ``limit`` queries are kept and the corpus is cut to their
    relevant documents plus the first ``limit * 4`` others, so ranking is still a choice.
    """
    qrels: dict[str, dict[str, int]] = {}
    with require(root / "qrels" / "train.tsv").open(encoding="utf-8") as handle:
        handle.readline()
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) == 3:
                qrels.setdefault(fields[0], {})[fields[1]] = int(fields[2])
    all_queries = {}
    with require(root / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            entry = json.loads(line)
            all_queries[str(entry["_id"])] = entry["text"]
    documents = {}
    with require(root / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            entry = json.loads(line)
            documents[str(entry["_id"])] = (entry.get("title", "") + " " + entry.get("text", "")).strip()
    query_ids = [qid for qid in qrels if qid in all_queries]
    if limit is not None:
        query_ids = query_ids[:limit]
        relevant = {doc for qid in query_ids for doc in qrels[qid]}
        others = set([doc for doc in documents if doc not in relevant][: limit * 4])
        documents = {doc: text for doc, text in documents.items() if doc in relevant or doc in others}
    return Retrieval({qid: all_queries[qid] for qid in query_ids}, documents, {qid: qrels[qid] for qid in query_ids})
