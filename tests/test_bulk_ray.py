"""python -m app.bulk --ray on a local Ray instance started here: same options, same vectors."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.bulk.cli import main
from app.bulk.manifest import MANIFEST_FILE
from app.encoder import Encoder
from app.model_format import load_model
from tests.conftest import sts_sentences

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder(load_model(tiny_model_dir))


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return sts_sentences(2000)


def _bulk_on_ray(*args: object) -> int:
    return main([str(arg) for arg in args] + ["--ray", "--no-progress"])


def _vectors_by_id(output: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(output)
    vectors = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = vectors.reshape(table.num_rows, -1)
    return dict(zip(table.column("id").to_pylist(), vectors, strict=True))


def _ids_in_order(output: Path) -> list[str]:
    return pq.read_table(output).column("id").to_pylist()


def test_jsonl_with_bad_rows_skipped_and_reported(tmp_path: Path, tiny_model_dir: Path, encoder: Encoder, sentences):
    lines = [json.dumps({"id": f"s{n}", "text": text}) for n, text in enumerate(sentences)]
    lines[17] = "{not json"
    lines[1500] = json.dumps({"id": "s1500", "text": None})
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out"
    args = ["--model-dir", tiny_model_dir, "--chunk-size", 500, "--batch-size", 128, "--skip-bad-rows"]
    assert _bulk_on_ray(source, "-o", output, *args) == 0
    kept = [n for n in range(len(sentences)) if n not in {17, 1500}]
    assert len(list(output.glob("part-*.parquet"))) >= 4, "the input was cut into several chunks"
    assert _ids_in_order(output) == [f"s{n}" for n in kept], "parts are numbered in input order"
    got = _vectors_by_id(output)
    np.testing.assert_array_equal(np.stack([got[f"s{n}"] for n in kept]), encoder.encode([sentences[n] for n in kept]))
    report = [json.loads(line) for line in (output / "_bad_rows.jsonl").read_text().splitlines()]
    assert [entry["line"] for entry in report] == [18, 1501], "lines counted across chunks read by different actors"
    assert report[0]["error"].startswith("not valid JSON")
    assert report[1]["error"] == "'text' is missing or null"


def test_csv_with_dimensions_and_float16(tmp_path: Path, tiny_model_dir: Path, encoder: Encoder, sentences) -> None:
    texts = [*sentences[:600], "a text\nover two lines, with a comma"]
    source = tmp_path / "in.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text", "id"], *((text, n) for n, text in enumerate(texts))])
    output = tmp_path / "out"
    args = ["--model-dir", tiny_model_dir, "--dimensions", 8, "--dtype", "float16", "--chunk-size", 200]
    assert _bulk_on_ray(source, "-o", output, *args) == 0
    assert _ids_in_order(output) == [str(n) for n in range(len(texts))]
    got = _vectors_by_id(output)
    assert pq.read_schema(next(output.glob("*.parquet"))).field("vector").type.value_type == pa.float16()
    expected = encoder.encode(texts, dimensions=8).astype(np.float16)
    np.testing.assert_array_equal(np.stack([got[str(n)] for n in range(len(texts))]), expected)


def test_parquet_bad_row_stops_the_job_then_skip_resumes(
    tmp_path: Path, tiny_model_dir: Path, encoder, sentences, capsys
):
    texts: list[str | None] = list(sentences[:800])
    texts[333] = None
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"key": list(range(800)), "body": texts}), source, row_group_size=150)
    output = tmp_path / "out"
    args = ["--model-dir", tiny_model_dir, "--id-field", "key", "--text-field", "body", "--chunk-size", 100]
    assert _bulk_on_ray(source, "-o", output, *args) == 2
    assert f"{source} row 334: 'body' is missing or null; fix it, or pass --skip-bad-rows" in capsys.readouterr().err
    assert _bulk_on_ray(source, "-o", output, *args, "--skip-bad-rows") == 0
    kept = [n for n in range(800) if n != 333]
    assert _ids_in_order(output) == [str(n) for n in kept]
    got = _vectors_by_id(output)
    np.testing.assert_array_equal(np.stack([got[str(n)] for n in kept]), encoder.encode([texts[n] for n in kept]))
    entries = [json.loads(line) for line in (output / MANIFEST_FILE).read_text().splitlines()[1:]]
    assert sorted(entry["chunk"] for entry in entries if "chunk" in entry) == list(range(8)), "each chunk done once"
    assert json.loads((output / "_bad_rows.jsonl").read_text()) == {"row": 334, "error": "'body' is missing or null"}


def test_interrupted_job_resumes_only_the_missing_chunks(
    tmp_path: Path, tiny_model_dir: Path, encoder, sentences, capsys
):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": n, "text": t}) + "\n" for n, t in enumerate(sentences)))
    output = tmp_path / "out"
    args = ["--model-dir", tiny_model_dir, "--chunk-size", 250]
    assert _bulk_on_ray(source, "-o", output, *args) == 0
    # As if the driver had been killed after six chunks: the others' lines and parts are missing.
    manifest = output / MANIFEST_FILE
    lines = manifest.read_text().splitlines()
    entries = [json.loads(line) for line in lines[1:-1]]
    kept = [line for line, entry in zip(lines[1:-1], entries, strict=True) if entry["chunk"] < 6]
    manifest.write_text("\n".join([lines[0], *kept]) + "\n")
    for entry in entries:
        if entry["chunk"] >= 6:
            (output / f"part-{entry['chunk']:06d}.parquet").unlink()
    before = {path.name: path.stat().st_mtime_ns for path in output.glob("part-*.parquet")}
    assert len(before) == 6

    assert _bulk_on_ray(source, "-o", output, *args) == 0
    assert {name: (output / name).stat().st_mtime_ns for name in before} == before, "finished chunks not redone"
    resumed = [json.loads(line) for line in manifest.read_text().splitlines()[1 + len(kept) :]]
    missing = sorted(entry["chunk"] for entry in entries if entry["chunk"] >= 6)
    assert sorted(entry["chunk"] for entry in resumed if "chunk" in entry) == missing
    assert _ids_in_order(output) == [str(n) for n in range(len(sentences))]
    got = _vectors_by_id(output)
    np.testing.assert_array_equal(np.stack([got[str(n)] for n in range(len(sentences))]), encoder.encode(sentences))
    # A local run on a Ray output says what differs instead of mixing the two.
    assert main([str(source), "-o", str(output), "--model-dir", str(tiny_model_dir), "--no-progress"]) == 2
    assert "runner: was 'ray', now None" in capsys.readouterr().err
