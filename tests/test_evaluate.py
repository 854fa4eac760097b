"""The evaluation command: real development data, small subsets, seconds not minutes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distill_job import evaluate
from distill_job.evaluation import datasets, tasks
from tests.conftest import SHARED_DATA

# Tiny subsets give logistic regression fewer samples than labels; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:The number of unique classes:UserWarning")

TASK_NAMES = ["STSB-dev", "STS12-train", "Banking77-heldout", "AmazonCF-valid", "SciFact-train"]


def _run(tmp_path: Path, *argv: str) -> dict:
    output = tmp_path / "results.json"
    assert evaluate.main([*argv, "--limit", "60", "--experiments", "2", "--output", str(output)]) == 0
    return json.loads(output.read_text())


def test_json_has_every_task_and_sane_scores(tiny_model_dir: Path, tmp_path: Path) -> None:
    results = _run(tmp_path, str(tiny_model_dir))
    assert [task["name"] for task in results["tasks"]] == TASK_NAMES
    assert results["settings"]["limit"] == 60
    (row,) = results["results"]
    assert row["kind"] == "static" and row["path"] == str(tiny_model_dir)
    assert set(row["scores"]) == set(TASK_NAMES)
    for name, score in row["scores"].items():
        assert np.isfinite(score), name
        low = -100.0 if name.startswith("STS") else 0.0  # a random teacher may anti-correlate
        assert low <= score <= 100.0, (name, score)
    assert row["average"] == pytest.approx(np.mean(list(row["scores"].values())))


def test_teacher_and_model2vec_rows_come_first(tiny_model_dir: Path, tiny_teacher_dir: Path, tmp_path: Path) -> None:
    m2v_dir = tmp_path / "m2v"
    results = _run(
        tmp_path,
        str(tiny_model_dir),
        "--teacher",
        str(tiny_teacher_dir),
        "--compare-model2vec",
        "--model2vec-dir",
        str(m2v_dir),
    )
    assert [row["kind"] for row in results["results"]] == ["teacher", "model2vec", "static"]
    assert json.loads((m2v_dir / "config.json").read_text())["hidden_dim"] == 16  # same width as ours
    for row in results["results"]:
        assert all(np.isfinite(v) for v in row["scores"].values())


def test_table_lists_every_system(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate.main([str(tiny_model_dir), "--limit", "30", "--experiments", "1"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in TASK_NAMES)
    assert f"| {tiny_model_dir.name} |" in table


def test_missing_model_or_data_is_one_line_error(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert evaluate.main([str(tmp_path / "nope")]) == 1
    assert evaluate.main([str(tiny_model_dir), "--data-dir", str(tmp_path)]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert "--data-dir" in errors[1]


def test_banking_split_is_fixed_disjoint_and_stratified() -> None:
    first = datasets.read_banking77(SHARED_DATA / "banking77" / "train.csv")
    second = datasets.read_banking77(SHARED_DATA / "banking77" / "train.csv")
    assert first.test_texts == second.test_texts
    assert len(first.train_texts) + len(first.test_texts) == 10003
    assert 0.19 < len(first.test_texts) / 10003 < 0.21
    assert len(np.unique(first.test_labels)) == 77


def test_limited_classification_keeps_every_label() -> None:
    data = datasets.read_amazon_counterfactual(
        SHARED_DATA / "amazon-counterfactual-en" / "EN_train.tsv",
        SHARED_DATA / "amazon-counterfactual-en" / "EN_valid.tsv",
        limit=10,
    )
    assert len(data.train_texts) == 10 and set(data.train_labels.tolist()) == {0, 1}


def test_sts_scores_a_perfect_embedder_at_100() -> None:
    pairs = datasets.read_stsb(SHARED_DATA / "stsbenchmark" / "sts-dev.csv", limit=200)
    angles = (5.0 - pairs.scores) / 5.0  # lower gold -> wider angle

    def embed(texts: list[str]) -> np.ndarray:
        if texts is pairs.first:
            return np.tile([1.0, 0.0], (len(texts), 1))
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)

    assert tasks.sts_spearman(pairs, embed) > 99.9


def test_retrieval_scores_an_oracle_at_100_and_noise_low() -> None:
    data = datasets.read_scifact(SHARED_DATA / "scifact", limit=40)
    doc_ids = list(data.documents)
    home = {data.documents[d]: i for i, d in enumerate(doc_ids)}
    for query_id, text in data.queries.items():
        home[text] = doc_ids.index(next(iter(data.qrels[query_id])))

    def oracle(texts: list[str]) -> np.ndarray:
        return np.eye(len(doc_ids))[[home[t] for t in texts]]

    def noise(texts: list[str]) -> np.ndarray:
        return np.random.default_rng(0).normal(size=(len(texts), 32))

    # Queries with several relevant documents cap the oracle below 100 when only one is found.
    assert tasks.retrieval_ndcg(data, oracle) > 90
    assert tasks.retrieval_ndcg(data, noise) < 30


def test_classification_separable_embeddings_score_full_accuracy() -> None:
    data = datasets.read_banking77(SHARED_DATA / "banking77" / "train.csv", limit=400)
    label_of = dict(zip(data.train_texts + data.test_texts, [*data.train_labels, *data.test_labels], strict=True))

    def embed(texts: list[str]) -> np.ndarray:
        return np.eye(77)[[label_of[t] for t in texts]]

    assert tasks.classification_accuracy(data, embed, samples_per_label=2, experiments=2) == pytest.approx(100.0)
