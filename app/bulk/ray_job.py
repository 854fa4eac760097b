"""The bulk job on a Ray cluster: Ray Data ``read_*`` -> ``map_batches`` -> ``write_parquet``.

Ray already knows how to split files into blocks, schedule them on every node, retry
failed tasks and stream blocks to storage; this module only supplies the embedding step.
``EmbedBatches`` is a callable class, so Ray keeps one instance per actor (one worker
process, one CPU) and the model is loaded once per actor, by memory map: actors on one
node share the table in the page cache. The input, the model directory and the output
must be paths every node can read (a shared filesystem).

Rows are judged by the same rules as the local job. Ray splits files across nodes, so a
bad row is named by its id (CSV, Parquet) or by its content (a JSONL line that is not
JSON has no id) rather than by a line number. There is no manifest: Ray re-runs tasks
lost with a worker or node itself, and a rerun starts over (``--overwrite``).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.bulk.local_job import BAD_ROWS_FILE, BulkSummary, load_encoder
from app.bulk.options import BulkError, BulkOptions
from app.bulk.readers import RowError, checked_row, parse_json_line
from app.bulk.writers import vectors_table
from app.encoder import Encoder
from app.model_format import load_model

BAD_ROWS_DIR = "_bad_rows"
_QUOTE_CHARS = 120  # how much of an unreadable JSONL line an error message quotes


class EmbedBatches:
    """Ray Data UDF: a pyarrow batch of input rows in, a pyarrow table (id, vector) out."""

    def __init__(
        self,
        model_dir: str,
        input_format: str,
        id_field: str,
        text_field: str,
        dimensions: int,
        dtype: str,
        batch_size: int,
        skip_bad_rows: bool,
        output: str,
    ) -> None:
        self.encoder = Encoder(load_model(model_dir))
        self.input_format = input_format
        self.id_field = id_field
        self.text_field = text_field
        self.dimensions = dimensions
        self.dtype = dtype
        self.batch_size = batch_size
        self.skip_bad_rows = skip_bad_rows
        self.bad_rows_dir = Path(output) / BAD_ROWS_DIR

    def __call__(self, batch: Any) -> Any:
        ids, texts, bad = self._rows(batch)
        if bad and not self.skip_bad_rows:
            where, error = bad[0]
            raise BulkError(f"{where}: {error}; fix it, or pass --skip-bad-rows to skip such rows and list them")
        if bad:
            self._report(bad)
        vectors = np.empty((len(texts), self.dimensions), dtype=self.dtype)
        for first in range(0, len(texts), self.batch_size):
            part = texts[first : first + self.batch_size]
            vectors[first : first + len(part)] = self.encoder.encode(part, self.dimensions)
        return vectors_table(ids, vectors)

    def _rows(self, batch: Any) -> tuple[list[str], list[str], list[tuple[str, str]]]:
        ids: list[str] = []
        texts: list[str] = []
        bad: list[tuple[str, str]] = []
        if self.input_format == "jsonl":  # read_text: one row per line, in column "text"
            for line in batch.column("text").to_pylist():
                try:
                    record_id, text = parse_json_line(line, self.id_field, self.text_field)
                except RowError as exc:
                    bad.append((f"line {line[:_QUOTE_CHARS]!r}", str(exc)))
                else:
                    ids.append(record_id)
                    texts.append(text)
            return ids, texts, bad
        raw_ids = batch.column(self.id_field).to_pylist()
        for record_id, text in zip(raw_ids, batch.column(self.text_field).to_pylist(), strict=True):
            try:
                record_id, text = checked_row(record_id, text, self.id_field, self.text_field)
            except RowError as exc:
                bad.append((f"row with id {record_id!r}", str(exc)))
            else:
                ids.append(record_id)
                texts.append(text)
        return ids, texts, bad

    def _report(self, bad: list[tuple[str, str]]) -> None:
        self.bad_rows_dir.mkdir(parents=True, exist_ok=True)
        lines = [orjson.dumps({"row": where, "error": error}) + b"\n" for where, error in bad]
        (self.bad_rows_dir / f"{uuid.uuid4().hex}.jsonl").write_bytes(b"".join(lines))


def _read(ray: Any, options: BulkOptions) -> Any:
    path = str(options.input.resolve())
    if options.input_format == "jsonl":
        return ray.data.read_text(path)
    if options.input_format == "csv":
        import pyarrow as pa
        from pyarrow import csv

        columns = [options.id_field, options.text_field]
        return ray.data.read_csv(
            path,
            parse_options=csv.ParseOptions(delimiter=options.delimiter, newlines_in_values=True),
            convert_options=csv.ConvertOptions(
                column_types=dict.fromkeys(columns, pa.string()), include_columns=columns
            ),
        )
    return ray.data.read_parquet(path, columns=[options.id_field, options.text_field])


def _prepare_output(output: Path, overwrite: bool) -> None:
    if output.exists() and any(output.iterdir()):
        ours = [p for p in output.iterdir() if p.suffix == ".parquet" or p.name in {BAD_ROWS_FILE, BAD_ROWS_DIR}]
        if not overwrite or len(ours) != len(list(output.iterdir())):
            raise BulkError(
                f"output directory {output} is not empty; a Ray run starts over: pass --overwrite to replace "
                "an earlier Ray run's output, or choose a new directory"
            )
        for path in ours:
            if path.is_dir():
                for child in path.iterdir():
                    child.unlink()
                path.rmdir()
            else:
                path.unlink()
    output.mkdir(parents=True, exist_ok=True)


_REMOTE_ERROR_PREFIX = f"{BulkError.__module__}.{BulkError.__qualname__}: "


def _user_error_message(exc: BaseException) -> str | None:
    """The message of a BulkError raised inside an actor; Ray passes it on only as text in its own error."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BulkError):
            return str(seen)
        for line in str(seen).splitlines():
            if line.startswith(_REMOTE_ERROR_PREFIX):
                return line.removeprefix(_REMOTE_ERROR_PREFIX)
        seen = seen.__cause__ or seen.__context__
    return None


def run_on_ray(options: BulkOptions, address: str | None = None, workers: int | None = None) -> BulkSummary:
    """Run the bulk job on Ray; joins ``address`` (or an already initialised Ray) or starts a local one."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise BulkError("--ray needs Ray: pip install 'static-embed[ray]'") from None
    started = time.perf_counter()
    if options.output_format != "parquet":
        raise BulkError("--ray writes Parquet only (Ray Data's write_parquet); drop --output-format npy")
    if not options.input.exists():
        raise BulkError(f"input {options.input} does not exist")
    _encoder, width = load_encoder(options)  # fail fast on the driver for a bad model or --dimensions
    output = options.output.resolve()
    _prepare_output(output, options.overwrite)

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        # Joining a cluster takes no local-instance options; a local instance needs no dashboard.
        ray.init(address=address) if address else ray.init(include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = options.progress
    cpus = max(int(ray.cluster_resources().get("CPU", 1)), 1)
    embed_args = (
        str(options.model_dir.resolve()),
        options.input_format,
        options.id_field,
        options.text_field,
        width,
        options.dtype,
        options.batch_size,
        options.skip_bad_rows,
        str(output),
    )
    dataset = _read(ray, options).map_batches(
        EmbedBatches,
        fn_constructor_args=embed_args,
        batch_size=options.chunk_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=workers or 1, max_size=workers or cpus),
        num_cpus=1,
        # One actor per CPU: the tokenizer must not start a thread per core in every actor.
        runtime_env={"env_vars": {"RAYON_NUM_THREADS": "1"}},
    )
    try:
        dataset.write_parquet(str(output))
    except Exception as exc:
        message = _user_error_message(exc)
        if message is not None:
            raise BulkError(f"{options.input} {message}") from None
        raise
    return _summarize(output, started)


def _summarize(output: Path, started: float) -> BulkSummary:
    import pyarrow.parquet as pq

    parts = sorted(output.glob("*.parquet"))
    rows = sum(pq.read_metadata(part).num_rows for part in parts)
    report_dir = output / BAD_ROWS_DIR
    bad_rows, report = 0, None
    if report_dir.is_dir():
        report = output / BAD_ROWS_FILE
        with report.open("wb") as merged:
            for piece in sorted(report_dir.glob("*.jsonl")):
                content = piece.read_bytes()
                bad_rows += content.count(b"\n")
                merged.write(content)
                piece.unlink()
        report_dir.rmdir()
    return BulkSummary(
        rows=rows,
        bad_rows=bad_rows,
        chunks=len(parts),
        chunks_this_run=len(parts),
        seconds=time.perf_counter() - started,
        outputs=parts,
        bad_rows_report=report,
    )
