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


def test_jsonl_with_bad_rows_skipped_and_reported(tmp_path: Path, tiny_model_dir: Path, encoder: Encoder, sentences):
    lines = [json.dumps({"id": f"s{n}", "text": text}) for n, text in enumerate(sentences)]
    lines[17] = "{not json"
    lines[1500] = json.dumps({"id": "s1500", "text": None})
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out"
    args = ["--model-dir", tiny_model_dir, "--chunk-size", 500, "--batch-size", 128, "--skip-bad-rows"]
    assert _bulk_on_ray(source, "-o", output, *args) == 0
    got = _vectors_by_id(output)
    kept = [n for n in range(len(sentences)) if n not in {17, 1500}]
    assert sorted(got) == sorted(f"s{n}" for n in kept)
    expected = encoder.encode([sentences[n] for n in kept])
    np.testing.assert_array_equal(np.stack([got[f"s{n}"] for n in kept]), expected)
    report = [json.loads(line) for line in (output / "_bad_rows.jsonl").read_text().splitlines()]
    assert len(report) == 2
    by_row = {entry["row"]: entry["error"] for entry in report}
    assert by_row["line '{not json'"].startswith("not valid JSON")
    assert by_row[f"line {lines[1500]!r}"] == "'text' is missing or null"


def test_csv_with_dimensions_and_float16(tmp_path: Path, tiny_model_dir: Path, encoder: Encoder, sentences) -> None:
    texts = [*sentences[:600], "a text\nover two lines, with a comma"]
    source = tmp_path / "in.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text", "id"], *((text, n) for n, text in enumerate(texts))])
    output = tmp_path / "out"
    args = ["--model-dir", tiny_model_dir, "--dimensions", 8, "--dtype", "float16"]
    assert _bulk_on_ray(source, "-o", output, *args) == 0
    got = _vectors_by_id(output)
    assert pq.read_schema(next(output.glob("*.parquet"))).field("vector").type.value_type == pa.float16()
    expected = encoder.encode(texts, dimensions=8).astype(np.float16)
    np.testing.assert_array_equal(np.stack([got[str(n)] for n in range(len(texts))]), expected)


def test_parquet_input_and_a_bad_row_stops_the_job(tmp_path: Path, tiny_model_dir: Path, encoder, sentences, capsys):
    texts: list[str | None] = list(sentences[:800])
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"key": list(range(800)), "body": texts}), source, row_group_size=200)
    output = tmp_path / "out"
    fields = ["--id-field", "key", "--text-field", "body"]
    assert _bulk_on_ray(source, "-o", output, "--model-dir", tiny_model_dir, *fields) == 0
    got = _vectors_by_id(output)
    np.testing.assert_array_equal(np.stack([got[str(n)] for n in range(800)]), encoder.encode(sentences[:800]))

    texts[333] = None
    pq.write_table(pa.table({"key": list(range(800)), "body": texts}), source)
    assert _bulk_on_ray(source, "-o", output, "--model-dir", tiny_model_dir, *fields) == 2
    assert "is not empty; a Ray run starts over: pass --overwrite" in capsys.readouterr().err
    assert _bulk_on_ray(source, "-o", output, "--model-dir", tiny_model_dir, *fields, "--overwrite") == 2
    assert f"{source} row with id 333: 'body' is missing or null; fix it, or pass --skip-bad-rows" in (
        capsys.readouterr().err
    )
