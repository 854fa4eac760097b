"""The five development tasks and how one embedder is scored on each (MTEB's protocols).

Scores are on a 0-100 scale: Spearman x 100 for STS, accuracy x 100 for classification,
nDCG@10 x 100 for retrieval, so one average across tasks means something.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill_job.evaluation import datasets

Embed = Callable[[Sequence[str]], np.ndarray]

DEFAULT_EXPERIMENTS = 10  # MTEB's n_experiments for classification
LOGISTIC_MAX_ITER = 100  # MTEB's logistic regression setting


@dataclass(frozen=True)
class Task:
    name: str
    metric: str
    score: Callable[[Embed], float]


def sts_spearman(pairs: datasets.SimilarityPairs, embed: Embed) -> float:
    """Spearman correlation between the pairs' cosine similarity and the gold scores."""
    from scipy.stats import spearmanr

    first, second = _unit(embed(pairs.first)), _unit(embed(pairs.second))
    cosine = np.sum(first * second, axis=1)
    return float(spearmanr(cosine, pairs.scores).statistic) * 100


def classification_accuracy(
    data: datasets.Classification, embed: Embed, samples_per_label: int, experiments: int = DEFAULT_EXPERIMENTS
) -> float:
    """Mean test accuracy of logistic regression fitted on small per-label training samples.

    As MTEB does: each experiment draws ``samples_per_label`` training texts of every
    label (seeded by the experiment number), fits ``LogisticRegression(max_iter=100)``
    on their embeddings and scores the whole test split.
    """
    from sklearn.linear_model import LogisticRegression

    train, test = embed(data.train_texts), embed(data.test_texts)
    accuracies = []
    for seed in range(experiments):
        chosen = _sample_per_label(data.train_labels, samples_per_label, seed)
        classifier = LogisticRegression(max_iter=LOGISTIC_MAX_ITER, random_state=seed)
        classifier.fit(train[chosen], data.train_labels[chosen])
        accuracies.append(float(np.mean(classifier.predict(test) == data.test_labels)))
    return float(np.mean(accuracies)) * 100


def _sample_per_label(labels: np.ndarray, per_label: int, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(len(labels))
    taken: dict[int, int] = {}
    chosen = []
    for index in order:
        label = int(labels[index])
        if taken.get(label, 0) < per_label:
            taken[label] = taken.get(label, 0) + 1
            chosen.append(index)
    return np.asarray(chosen, dtype=np.int64)


def retrieval_ndcg(data: datasets.Retrieval, embed: Embed, k: int = 10) -> float:
    """Mean nDCG@k over queries, ranking every document by cosine similarity (gain = grade)."""
    query_ids, doc_ids = list(data.queries), list(data.documents)
    queries = _unit(embed([data.queries[q] for q in query_ids]))
    documents = _unit(embed([data.documents[d] for d in doc_ids]))
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for row, query_id in enumerate(query_ids):
        scores = documents @ queries[row]
        top = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        grades = data.qrels[query_id]
        gains = np.array([grades.get(doc_ids[i], 0) for i in top], dtype=np.float64)
        ideal = np.sort(np.array(list(grades.values()), dtype=np.float64))[::-1][:k]
        ideal_dcg = float(ideal @ discounts[: len(ideal)])
        values.append(float(gains @ discounts[: len(gains)]) / ideal_dcg if ideal_dcg > 0 else 0.0)
    return float(np.mean(values)) * 100


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def load_tasks(data_dir: Path, limit: int | None = None, experiments: int = DEFAULT_EXPERIMENTS) -> list[Task]:
    """Read every dataset once; each task then scores any embedder on the same data."""
    stsb = datasets.read_stsb(data_dir / "stsbenchmark" / "sts-dev.csv", limit)
    sts12 = datasets.read_sts12(data_dir / "sts12" / "sts12.train.tsv", limit)
    banking = datasets.read_banking77(data_dir / "banking77" / "train.csv", limit)
    amazon = datasets.read_amazon_counterfactual(
        data_dir / "amazon-counterfactual-en" / "EN_train.tsv",
        data_dir / "amazon-counterfactual-en" / "EN_valid.tsv",
        limit,
    )
    scifact = datasets.read_scifact(data_dir / "scifact", limit)
    return [
        Task("STSB-dev", "spearman", lambda embed: sts_spearman(stsb, embed)),
        Task("STS12-train", "spearman", lambda embed: sts_spearman(sts12, embed)),
        # MTEB samples 8 texts per label for Banking77 and 32 for Amazon counterfactual.
        Task("Banking77-heldout", "accuracy", lambda embed: classification_accuracy(banking, embed, 8, experiments)),
        Task("AmazonCF-valid", "accuracy", lambda embed: classification_accuracy(amazon, embed, 32, experiments)),
        Task("SciFact-train", "ndcg@10", lambda embed: retrieval_ndcg(scifact, embed)),
    ]
