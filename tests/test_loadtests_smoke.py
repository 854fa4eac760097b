"""The benchmark scripts keep working: each runs in seconds on a few texts and writes its JSON.

No timing is asserted (timings belong in docs/performance.md, measured on purpose); what
is asserted is that every script runs end to end, measures every peer it promises, and
reports numbers that are real (positive rates, successful requests, our vectors agreeing
with model2vec's).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests import bench_encoder, bench_http, bench_memory, plot


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("results")


def test_encoder_benchmark_measures_three_systems(default_model_dir: Path, results: Path) -> None:
    output = results / "encoder.json"
    args = ["--model-dir", str(default_model_dir), "--limit", "3", "--seconds", "0.01", "--rounds", "1"]
    assert bench_encoder.main([*args, "--output", str(output)]) == 0
    data = json.loads(output.read_text())
    cells = data["cells"]
    assert {c["system"] for c in cells} == {"ours", "model2vec", "tokenize"}
    assert {c["corpus"] for c in cells} == {"queries", "sentences", "abstracts", "long"}
    assert {c["call_size"] for c in cells} == {"1", "16", "128", "all"}
    assert all(c["texts_per_s"] > 0 and c["tokens_per_s"] > 0 for c in cells)
    assert data["corpora"]["long"]["mean_tokens"] >= 10_000
    for corpus in data["corpora"].values():
        assert corpus["min_cosine_vs_model2vec"] > 0.999
    assert len(data["targets"]) == 17


def test_http_benchmark_drives_every_local_server(default_model_dir: Path, results: Path) -> None:
    output = results / "http.json"
    args = ["--model-dir", str(default_model_dir), "--plan", "smoke", "--workers", "1", "--seconds", "1"]
    assert bench_http.main([*args, "--servers", "ours", "naive", "trivial", "--output", str(output)]) == 0
    data = json.loads(output.read_text())
    rows = data["runs"][0]["rows"]
    assert {r["server"] for r in rows} == {"ours", "naive", "trivial"}
    for row in rows:
        assert row["requests"] > 0 and row["requests_per_s"] > 0, row
        assert row["non_2xx"] == 0 and row["socket_errors"] == 0, row
        assert row["p50_ms"] <= row["p99_ms"]
    assert data["runs"][0]["in_process_16"] > 0
    assert any(pid["rss_mb"] > 0 for pid in data["runs"][0]["memory"].values())


def test_memory_benchmark_reports_every_process(default_model_dir: Path, results: Path) -> None:
    output = results / "memory.json"
    args = ["--model-dir", str(default_model_dir), "--repeats", "1", "--load-seconds", "0.5"]
    assert bench_memory.main([*args, "--output", str(output)]) == 0
    data = json.loads(output.read_text())
    by_workers = {start["workers"]: start for start in data["starts"]}
    assert sorted(r["role"] for r in by_workers[2]["processes"]).count("worker") == 2
    assert all(0 < start["ready_after_s"] < 60 for start in data["starts"])
    assert data["summary"]["worker_rss_mb_1w"] > 0


def test_plots_render_from_the_results(results: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    if not (results / "encoder.json").exists() or not (results / "http.json").exists():
        pytest.skip("needs the benchmark tests above to have run")
    assert plot.main(["--results", str(results), "--output", str(tmp_path)]) == 0
    images = sorted(p.name for p in tmp_path.glob("*.png"))
    assert images, "no plot written"
    assert all((tmp_path / name).stat().st_size > 1000 for name in images)
