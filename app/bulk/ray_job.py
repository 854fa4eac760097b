"""The bulk job on a Ray cluster: planned chunks -> Ray Data ``map_batches`` -> part files.

The driver cuts the input into chunks (``planning.py``: byte spans of JSONL lines,
row ranges of Parquet, chunk positions of CSV), and Ray Data hands them to a pool of
actors. ``EmbedChunks`` is a callable class, so Ray keeps one instance per actor (one
worker process, one CPU): the model is loaded once per actor, by memory map, and the
actors of one node share the table in the page cache. Each actor reads its chunk
straight from the shared input, embeds it and writes ``part-<index>`` itself, with the
local job's readers and writers: same row checks, same bad-row report (by line), same
output layout and order.

The driver records each finished chunk in the same manifest as the local job, as the
results stream back. Ray re-runs a task lost with a worker or node; a job stopped as a
whole (driver killed, cluster gone, a bad row) resumes when rerun: chunks whose part is
recorded are not planned again. The input, the model directory and the output must be
paths every node can read (a shared filesystem).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from app.bulk.local_job import (
    BulkSummary,
    bad_row_error,
    describe_run,
    encode_chunk,
    finish_output,
    load_encoder,
    summarize,
    write_bad_rows,
)
from app.bulk.manifest import FinishedChunk, Manifest
from app.bulk.options import BulkError, BulkOptions
from app.bulk.planning import PlannedChunk, plan_chunks, read_planned_chunk
from app.bulk.progress import ProgressLine
from app.bulk.readers import Position, input_extent
from app.bulk.writers import make_writer
from app.encoder import Encoder
from app.model_format import load_model

_PLAN_COLUMNS = ("index", "start_offset", "start_line", "end_offset", "end_line")


class EmbedChunks:
    """Ray Data UDF: planned chunks in (one per call), ``{index, rows, bad_rows}`` of each out."""

    def __init__(self, options: BulkOptions, width: int) -> None:
        self.options = options
        self.width = width
        self.encoder = Encoder(load_model(options.model_dir))
        self.writer = make_writer(options.output_format, options.output)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        options = self.options
        done: list[tuple[int, int, int]] = []
        for values in zip(*(batch[column].tolist() for column in _PLAN_COLUMNS), strict=True):
            index, start_offset, start_line, end_offset, end_line = values
            planned = PlannedChunk(index, Position(start_offset, start_line), Position(end_offset, end_line))
            chunk = read_planned_chunk(options, planned)
            if chunk.bad_rows and not options.skip_bad_rows:
                raise bad_row_error(options, chunk)
            vectors = encode_chunk(self.encoder, chunk.texts, self.width, options.dtype, options.batch_size)
            self.writer.write_part(chunk.index, chunk.ids, vectors)
            if chunk.bad_rows:
                write_bad_rows(options.output, chunk)
            done.append((chunk.index, len(chunk.ids), len(chunk.bad_rows)))
        indexes, rows, bad_rows = zip(*done, strict=True) if done else ((), (), ())
        return {"index": np.array(indexes), "rows": np.array(rows), "bad_rows": np.array(bad_rows)}


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
    if not options.input.is_file():
        raise BulkError(f"input {options.input} does not exist or is not a file")
    encoder, width = load_encoder(options)  # fail fast on the driver for a bad model or --dimensions
    # Workers on other nodes get these paths: make them absolute.
    options = dataclasses.replace(
        options, input=options.input.resolve(), output=options.output.resolve(), model_dir=options.model_dir.resolve()
    )
    writer = make_writer(options.output_format, options.output)
    description = describe_run(options, encoder.model, width) | {"runner": "ray"}
    manifest = Manifest.open(options.output, description, options.overwrite)
    if manifest.done is not None:
        return summarize(manifest, 0, started, [], already_complete=True)
    todo = [planned for planned in plan_chunks(options) if planned.index not in manifest.finished]

    done_before = sum(chunk.end.offset - chunk.start.offset for chunk in manifest.finished.values())
    progress = ProgressLine(input_extent(options), done_before, enabled=options.progress)
    try:
        if todo:
            _run_chunks(ray, options, width, todo, workers, address, manifest, progress)
    except BaseException:
        progress.close(completed=False)
        raise
    progress.close()
    return finish_output(options, manifest, writer, width, len(todo), started)


def _run_chunks(
    ray: Any,
    options: BulkOptions,
    width: int,
    todo: list[PlannedChunk],
    workers: int | None,
    address: str | None,
    manifest: Manifest,
    progress: ProgressLine,
) -> None:
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        # Joining a cluster takes no local-instance options; a local instance needs no dashboard.
        ray.init(address=address) if address else ray.init(include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False  # the driver prints its own line
    cpus = max(int(ray.cluster_resources().get("CPU", 1)), 1)
    items = [
        dict(zip(_PLAN_COLUMNS, (p.index, p.start.offset, p.start.line, p.end.offset, p.end.line), strict=True))
        for p in todo
    ]
    results = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        EmbedChunks,
        fn_constructor_args=(options, width),
        batch_size=1,  # one chunk per call: a chunk is already thousands of texts
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=workers or 1, max_size=workers or min(cpus, len(items))),
        num_cpus=1,
        # One actor per CPU: the tokenizer must not start a thread per core in every actor.
        runtime_env={"env_vars": {"RAYON_NUM_THREADS": "1"}},
    )
    planned = {p.index: p for p in todo}
    try:
        for row in results.iter_rows():
            chunk = planned[int(row["index"])]
            manifest.record(FinishedChunk(chunk.index, int(row["rows"]), int(row["bad_rows"]), chunk.start, chunk.end))
            progress.advance(chunk.end.offset - chunk.start.offset, int(row["rows"]))
    except Exception as exc:
        message = _user_error_message(exc)
        if message is not None:
            raise BulkError(message) from None
        raise
