"""python -m app.bulk: round trips in every format, resume after interruption, bad rows."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.bulk.cli import main
from app.bulk.local_job import available_cores, run_local
from app.bulk.manifest import MANIFEST_FILE
from app.bulk.options import BulkOptions
from app.bulk.planning import plan_chunks, read_planned_chunk
from app.bulk.progress import ProgressLine
from app.bulk.readers import read_chunks
from app.bulk.writers import ParquetParts
from app.encoder import Encoder
from app.model_format import load_model
from tests.conftest import ROOT, sts_sentences


@pytest.fixture(scope="module")
def encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder(load_model(tiny_model_dir))


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return sts_sentences(3000)


def _write_jsonl(path: Path, ids: list, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts, strict=True)))
    return path


def _read_parquet_output(output: Path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(output)
    vectors = np.asarray(table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False))
    return table.column("id").to_pylist(), vectors.reshape(table.num_rows, -1)


def _bulk(*args: object) -> int:
    return main([str(arg) for arg in args] + ["--no-progress"])


def test_jsonl_to_parquet_round_trip(tmp_path: Path, tiny_model_dir: Path, encoder: Encoder, sentences) -> None:
    texts = sentences[:2500]
    ids = [f"doc-{n}" for n in range(len(texts))]
    source = _write_jsonl(tmp_path / "in.jsonl", ids, texts)
    output = tmp_path / "out"
    code = _bulk(source, "-o", output, "--model-dir", tiny_model_dir, "--chunk-size", 700, "--batch-size", 256)
    assert code == 0
    assert sorted(p.name for p in output.glob("*.parquet")) == [f"part-00000{n}.parquet" for n in range(4)]
    got_ids, vectors = _read_parquet_output(output)
    assert got_ids == ids
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, encoder.encode(texts))
    # A rerun of a finished output does nothing and says so.
    assert _bulk(source, "-o", output, "--model-dir", tiny_model_dir, "--chunk-size", 700) == 0


def test_csv_with_quotes_and_newlines_to_npy(tmp_path: Path, tiny_model_dir: Path, encoder: Encoder, sentences) -> None:
    texts = [*sentences[:400], 'a "quoted", comma text', "two\nlines of text", ""]
    source = tmp_path / "in.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["category", "text", "id"])
        writer.writerows(["x", text, 1000 + n] for n, text in enumerate(texts))
    output = tmp_path / "out"
    args = ["--model-dir", tiny_model_dir, "--output-format", "npy", "--dimensions", 8, "--dtype", "float16"]
    assert _bulk(source, "-o", output, *args, "--chunk-size", 150) == 0
    vectors = np.load(output / "vectors.npy")
    assert vectors.dtype == np.float16 and vectors.shape == (len(texts), 8)
    assert (output / "ids.txt").read_text().splitlines() == [str(1000 + n) for n in range(len(texts))]
    expected = encoder.encode(texts, dimensions=8).astype(np.float16)
    np.testing.assert_array_equal(vectors, expected)
    assert not list(output.glob("part-*")), "parts are removed once vectors.npy is assembled"


def test_parquet_with_integer_ids_and_named_columns(tmp_path: Path, tiny_model_dir: Path, encoder: Encoder, sentences):
    texts = sentences[:1000]
    source = tmp_path / "in.parquet"
    table = pa.table({"doc": pa.array(range(len(texts)), pa.int64()), "body": texts, "other": [1.0] * len(texts)})
    pq.write_table(table, source, row_group_size=300)
    output = tmp_path / "out"
    fields = ["--id-field", "doc", "--text-field", "body"]
    assert _bulk(source, "-o", output, "--model-dir", tiny_model_dir, *fields, "--chunk-size", 400) == 0
    got_ids, vectors = _read_parquet_output(output)
    assert got_ids == [str(n) for n in range(len(texts))]
    np.testing.assert_array_equal(vectors, encoder.encode(texts))


class _FailingParts(ParquetParts):
    """A writer that dies on its n-th part, like a full disk or a killed node."""

    def __init__(self, output: Path, fail_on_call: int) -> None:
        super().__init__(output)
        self.calls = 0
        self.fail_on_call = fail_on_call

    def write_part(self, index, ids, vectors) -> None:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise OSError(28, "No space left on device")
        super().write_part(index, ids, vectors)


class _CountingParts(ParquetParts):
    def __init__(self, output: Path) -> None:
        super().__init__(output)
        self.written: list[int] = []

    def write_part(self, index, ids, vectors) -> None:
        self.written.append(index)
        super().write_part(index, ids, vectors)


def _write_input(path: Path, input_format: str, texts: list[str]) -> Path:
    ids = [f"r{n}" for n in range(len(texts))]
    if input_format == "jsonl":
        return _write_jsonl(path.with_suffix(".jsonl"), ids, texts)
    if input_format == "csv":
        target = path.with_suffix(".csv")
        with target.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([["id", "text"], *zip(ids, texts, strict=True)])
        return target
    target = path.with_suffix(".parquet")
    pq.write_table(pa.table({"id": ids, "text": texts}), target, row_group_size=250)
    return target


@pytest.mark.parametrize("input_format", ["jsonl", "csv", "parquet"])
def test_resume_after_a_failure_redoes_only_the_missing_chunks(
    tmp_path: Path, tiny_model_dir: Path, encoder: Encoder, sentences, input_format: str
) -> None:
    texts = sentences[:1000]
    source = _write_input(tmp_path / "in", input_format, texts)
    output = tmp_path / "out"
    options = BulkOptions(
        source, output, tiny_model_dir, input_format, chunk_size=100, batch_size=64, threads=1, progress=False
    )
    with pytest.raises(OSError, match="No space left"):
        run_local(options, writer=_FailingParts(output, fail_on_call=4))
    finished_before = {path.name: path.stat().st_mtime_ns for path in output.glob("part-*.parquet")}
    assert sorted(finished_before) == [f"part-00000{n}.parquet" for n in range(3)]

    resumed = _CountingParts(output)
    summary = run_local(options, writer=resumed)
    assert resumed.written == list(range(3, 10)), "only the chunks that were not finished are embedded again"
    assert summary.chunks_this_run == 7 and summary.rows == 1000
    assert {name: (output / name).stat().st_mtime_ns for name in finished_before} == finished_before
    got_ids, vectors = _read_parquet_output(output)
    assert got_ids == [f"r{n}" for n in range(1000)]
    np.testing.assert_array_equal(vectors, encoder.encode(texts))


@pytest.mark.parametrize("input_format", ["jsonl", "parquet"])
def test_killed_while_assembling_reassembles_without_embedding(
    tmp_path: Path, tiny_model_dir: Path, sentences, input_format
):
    source = _write_input(tmp_path / "in", input_format, sentences[:500])
    output = tmp_path / "out"
    options = BulkOptions(source, output, tiny_model_dir, input_format, chunk_size=100, progress=False)
    run_local(options)
    manifest = output / MANIFEST_FILE
    lines = manifest.read_text().splitlines()
    assert '"done"' in lines[-1]
    manifest.write_text("\n".join(lines[:-1]) + "\n")  # as if killed before the run was marked done
    counting = _CountingParts(output)
    summary = run_local(options, writer=counting)
    assert counting.written == [] and summary.chunks_this_run == 0 and summary.rows == 500
    assert pq.read_table(output).column("id").to_pylist() == [f"r{n}" for n in range(500)]


def test_resume_after_the_process_is_killed(tmp_path: Path, tiny_model_dir: Path, encoder: Encoder, sentences) -> None:
    texts = (sentences * 20)[:50_000]
    source = _write_jsonl(tmp_path / "in.jsonl", list(range(len(texts))), texts)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "app.bulk", str(source), "-o", str(output), "--model-dir", str(tiny_model_dir)]
    command += ["--chunk-size", "500", "--no-progress"]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE)
    manifest = output / MANIFEST_FILE
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if manifest.is_file() and len(manifest.read_bytes().splitlines()) >= 1 + 5:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    finished = {json.loads(line)["chunk"] for line in manifest.read_text().splitlines()[1:]}
    assert 5 <= len(finished) < 100

    result = subprocess.run(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, timeout=120, check=True)
    assert "embedded 50,000 rows" in result.stderr
    lines = [json.loads(line) for line in manifest.read_text().splitlines()[1:]]
    chunks = [line["chunk"] for line in lines if "chunk" in line]
    assert sorted(chunks) == list(range(100)), "every chunk recorded exactly once: finished ones were not redone"
    got_ids, vectors = _read_parquet_output(output)
    assert got_ids == [str(n) for n in range(len(texts))]
    np.testing.assert_array_equal(vectors[::997], encoder.encode(texts[::997]))


def test_jsonl_with_byte_order_mark_and_blank_lines(tmp_path: Path, tiny_model_dir: Path, encoder: Encoder) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "the cat sat"}\n\n{"id": "b", "text": ""}\n\n')
    output = tmp_path / "out"
    assert _bulk(source, "-o", output, "--model-dir", tiny_model_dir, "--output-format", "npy") == 0
    assert (output / "ids.txt").read_text() == "a\nb\n"
    np.testing.assert_array_equal(np.load(output / "vectors.npy"), encoder.encode(["the cat sat", ""]))


def test_malformed_json_line_is_named(tmp_path: Path, tiny_model_dir: Path, sentences, capsys) -> None:
    lines = [json.dumps({"id": n, "text": t}) for n, t in enumerate(sentences[:10])]
    lines[6] = '{"id": 6, "text": "unterminated'
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    assert _bulk(source, "-o", tmp_path / "out", "--model-dir", tiny_model_dir) == 2
    error = capsys.readouterr().err
    assert f"{source} line 7: not valid JSON" in error
    assert "--skip-bad-rows" in error


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"id": 3, "txt": "typo in the field name"}', "'text' is missing or null"),
        ('{"id": 3, "text": 42}', "'text' must be a string, got int"),
        ('{"id": null, "text": "no id"}', "'id' is missing or null"),
        ('["id", "text"]', "expected a JSON object, got list"),
    ],
)
def test_each_kind_of_bad_json_row_is_explained(tmp_path: Path, tiny_model_dir: Path, capsys, bad_line, message):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "text": "fine"}\n\n' + bad_line + "\n")
    assert _bulk(source, "-o", tmp_path / "out", "--model-dir", tiny_model_dir) == 2
    assert f"line 3: {message}" in capsys.readouterr().err


def test_csv_row_with_wrong_field_count_is_named(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    source = tmp_path / "in.csv"
    source.write_text('id,text\n1,"first, quoted\nover two lines"\n2,second\n3,third,extra\n')
    assert _bulk(source, "-o", tmp_path / "out", "--model-dir", tiny_model_dir) == 2
    assert "line 5: expected 2 fields like the header, got 3" in capsys.readouterr().err


def test_unclosed_quote_is_fatal_even_when_skipping(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    source = tmp_path / "in.csv"
    source.write_text('id,text\n1,he said "hi" and left\n2,"never closed\n3,third\n')
    assert _bulk(source, "-o", tmp_path / "out", "--model-dir", tiny_model_dir, "--skip-bad-rows") == 2
    assert f"{source} line 3: malformed CSV (unexpected end of data); rows after it cannot be read" in (
        capsys.readouterr().err
    )


def test_missing_column_names_the_header(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,body\n1,hello\n")
    assert _bulk(source, "-o", tmp_path / "out", "--model-dir", tiny_model_dir) == 2
    assert "line 1: the header has no column 'text' (columns: id, body); name the right one with --text-field" in (
        capsys.readouterr().err
    )


def test_skip_bad_rows_reports_them(tmp_path: Path, tiny_model_dir: Path, encoder: Encoder, sentences, capsys):
    texts = sentences[:300]
    lines = [json.dumps({"id": n, "text": t}) for n, t in enumerate(texts)]
    bad = {10: "{broken", 150: '{"id": 150}', 299: '{"id": 299, "text": ["a list"]}'}
    for index, line in bad.items():
        lines[index] = line
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out"
    args = ["--model-dir", tiny_model_dir, "--chunk-size", 100]
    assert _bulk(source, "-o", output, *args, "--skip-bad-rows") == 0
    assert f"skipped 3 bad rows, listed in {output / '_bad_rows.jsonl'}" in capsys.readouterr().err
    report = [json.loads(line) for line in (output / "_bad_rows.jsonl").read_text().splitlines()]
    assert [entry["line"] for entry in report] == [11, 151, 300]
    assert report[0]["error"].startswith("not valid JSON")
    assert report[1]["error"] == "'text' is missing or null"
    assert report[2]["error"] == "'text' must be a string, got list"
    got_ids, vectors = _read_parquet_output(output)
    kept = [n for n in range(300) if n not in bad]
    assert got_ids == [str(n) for n in kept]
    np.testing.assert_array_equal(vectors, encoder.encode([texts[n] for n in kept]))


def test_stopped_by_a_bad_row_then_resumed_with_skip(tmp_path: Path, tiny_model_dir: Path, sentences, capsys):
    lines = [json.dumps({"id": n, "text": t}) for n, t in enumerate(sentences[:500])]
    lines[420] = "not json"
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out"
    args = ["--model-dir", tiny_model_dir, "--chunk-size", 100, "--threads", 1]
    assert _bulk(source, "-o", output, *args) == 2
    assert "line 421: not valid JSON" in capsys.readouterr().err
    assert _bulk(source, "-o", output, *args, "--skip-bad-rows") == 0
    assert pq.read_table(output).num_rows == 499


def test_changed_settings_refuse_to_resume_until_overwrite(tmp_path: Path, tiny_model_dir: Path, sentences, capsys):
    source = _write_jsonl(tmp_path / "in.jsonl", list(range(50)), sentences[:50])
    output = tmp_path / "out"
    assert _bulk(source, "-o", output, "--model-dir", tiny_model_dir) == 0
    assert _bulk(source, "-o", output, "--model-dir", tiny_model_dir, "--dimensions", 4) == 2
    assert "dimensions: was 16, now 4" in capsys.readouterr().err
    assert _bulk(source, "-o", output, "--model-dir", tiny_model_dir, "--dimensions", 4, "--overwrite") == 0
    assert pq.read_table(output).schema.field("vector").type.list_size == 4


def test_output_directory_with_foreign_files_is_refused(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [1], ["hello"])
    output = tmp_path / "out"
    output.mkdir()
    (output / "precious.txt").write_text("keep me")
    assert _bulk(source, "-o", output, "--model-dir", tiny_model_dir, "--overwrite") == 2
    assert "is not empty and holds no bulk run" in capsys.readouterr().err
    assert (output / "precious.txt").read_text() == "keep me"


def test_progress_line_shows_rate_and_eta() -> None:
    stream = io.StringIO()
    progress = ProgressLine(total=1000, done=200, stream=stream, log_interval=0.0)
    progress.started -= 2.0  # as if two seconds had passed
    progress.advance(400, rows=4000)
    line = stream.getvalue()
    assert " 60.0%" in line and "4,000 rows" in line
    rate = float(line.split(" rows/s")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert 1900 < rate <= 2000
    assert "ETA 0:00:02" in line  # 400 units left at 200 units/s


def test_help_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.bulk", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "--skip-bad-rows" in result.stdout and "--ray-address" in result.stdout


@pytest.mark.parametrize("input_format", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_planned_chunks_hold_every_row_once_with_its_line(tmp_path: Path, input_format: str, chunk_size: int):
    """The Ray job's plan (chunks read independently) sees the rows and bad rows the local reader sees."""
    texts = [f"text number {n}" + " long" * (n % 13) for n in range(60)]
    source = _write_input(tmp_path / "in", input_format, texts)
    if input_format == "jsonl":  # a byte order mark, blank lines, a bad line and no final line break
        lines = source.read_bytes().splitlines()
        lines[5] = b"{broken"
        source.write_bytes(b"\xef\xbb\xbf" + b"\n".join([*lines[:20], b"", b"  ", *lines[20:]]))
    options = BulkOptions(source, tmp_path / "out", tmp_path, input_format, chunk_size=chunk_size)
    expected = list(read_chunks(options))
    plan = plan_chunks(options)
    assert [planned.index for planned in plan] == list(range(len(plan)))
    assert plan[0].start.offset == 0 and all(a.end == b.start for a, b in itertools.pairwise(plan))
    chunks = [read_planned_chunk(options, planned) for planned in plan]
    assert [i for chunk in chunks for i in chunk.ids] == [i for chunk in expected for i in chunk.ids]
    assert [t for chunk in chunks for t in chunk.texts] == [t for chunk in expected for t in chunk.texts]
    bad = [row for chunk in chunks for row in chunk.bad_rows]
    assert bad == [row for chunk in expected for row in chunk.bad_rows]
    assert [row.where for row in bad] == (["line 6"] if input_format == "jsonl" else [])


def test_thread_per_core_tokenizes_serially_for_the_run_only(tmp_path: Path, tiny_model_dir, monkeypatch, sentences):
    """With an encoder thread per core the tokenizer's pool is off during the run, and back after it."""
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    seen: list[str | None] = []
    original = Encoder.encode

    def encode(self, texts, dimensions=None):
        seen.append(os.environ.get("TOKENIZERS_PARALLELISM"))
        return original(self, texts, dimensions)

    monkeypatch.setattr(Encoder, "encode", encode)
    source = _write_jsonl(tmp_path / "in.jsonl", list(range(300)), sentences[:300])
    options = BulkOptions(source, tmp_path / "out", tiny_model_dir, "jsonl", threads=available_cores(), progress=False)
    assert run_local(options).rows == 300
    assert seen and set(seen) == {"false"}
    assert "TOKENIZERS_PARALLELISM" not in os.environ
