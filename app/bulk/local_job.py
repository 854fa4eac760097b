"""The bulk job on one machine: a reader thread, encoder threads, a writer thread, a manifest.

One thread parses the input into chunks; ``threads`` encoder threads each take a whole
chunk and embed it in batches of ``batch_size``; one thread writes the parts and records
them. The tokenizer runs in Rust threads and numpy's gathers and sums release the GIL,
so two encoder threads keep every core busy: while one tokenizes, the other pools; reading
and writing fill what is left. Bounded queues between the stages keep at most
``2 * threads + 3`` chunks in memory, ``threads + 2`` of them with their vectors.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.bulk.manifest import FinishedChunk, Manifest
from app.bulk.options import BulkError, BulkOptions
from app.bulk.progress import ProgressLine
from app.bulk.readers import Chunk, input_extent, read_chunks
from app.bulk.writers import PartWriter, make_writer, part_name
from app.encoder import Encoder
from app.model_format import ModelFormatError, StaticModel, load_model

BAD_ROWS_FILE = "_bad_rows.jsonl"
_DONE = object()


@dataclass
class BulkSummary:
    rows: int  # rows embedded in the whole output (this run and earlier ones)
    bad_rows: int
    chunks: int
    chunks_this_run: int
    seconds: float
    outputs: list[Path] = field(default_factory=list)
    bad_rows_report: Path | None = None
    already_complete: bool = False


def load_encoder(options: BulkOptions) -> tuple[Encoder, int]:
    """The encoder and the output width, or a BulkError naming what is wrong."""
    try:
        model = load_model(options.model_dir)
    except ModelFormatError as exc:
        raise BulkError(str(exc)) from None
    encoder = Encoder(model)
    width = options.dimensions or encoder.dimensions
    if not 1 <= width <= encoder.dimensions:
        raise BulkError(f"--dimensions must be between 1 and {encoder.dimensions} for this model, got {width}")
    return encoder, width


def describe_run(options: BulkOptions, model: StaticModel, width: int) -> dict[str, Any]:
    """What makes two runs' outputs interchangeable; a resume must match it exactly."""
    source = options.input.stat()
    table = model.path / "model.safetensors"
    table_stat = table.stat()
    return {
        "input": str(options.input.resolve()),
        "input_size": source.st_size,
        "input_mtime_ns": source.st_mtime_ns,
        "input_format": options.input_format,
        "id_field": options.id_field,
        "text_field": options.text_field,
        "delimiter": options.delimiter,
        "model": str(model.path.resolve()),
        "model_table": model.metadata.get("table_sha256") or f"{table_stat.st_size}:{table_stat.st_mtime_ns}",
        "dimensions": width,
        "dtype": options.dtype,
        "chunk_size": options.chunk_size,
        "output_format": options.output_format,
    }


def run_local(options: BulkOptions, writer: PartWriter | None = None) -> BulkSummary:
    """Embed ``options.input`` into ``options.output``, resuming a previous partial run there."""
    started = time.perf_counter()
    if not options.input.is_file():
        raise BulkError(f"input {options.input} does not exist or is not a file")
    encoder, width = load_encoder(options)
    writer = writer or make_writer(options.output_format, options.output)
    manifest = Manifest.open(options.output, describe_run(options, encoder.model, width), options.overwrite)
    if manifest.done is not None:
        return summarize(manifest, 0, started, [], already_complete=True)

    first_index, start = manifest.resume_point()
    done_before = sum(chunk.end.offset - chunk.start.offset for chunk in manifest.finished.values())
    progress = ProgressLine(input_extent(options), done_before, enabled=options.progress)
    pipeline = _Pipeline(options, encoder, width, writer, manifest, progress)
    try:
        with _tokenizer_parallelism(options.threads):
            pipeline.run(first_index, start)
    except BaseException:
        progress.close(completed=False)  # end the progress line before the error message
        raise
    progress.close()

    return finish_output(options, manifest, writer, width, pipeline.chunks_this_run, started)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _tokenizer_parallelism(threads: int) -> Iterator[None]:
    """With an encoder thread per core, each thread tokenizes on its own core.

    The tokenizer's thread pool splits every batch over all cores; that pays off when one
    thread encodes, but with a thread per core the pool's hand-offs only cost time: on
    two cores, serial tokenization in two threads measured 0.92-0.95x of the in-process
    encoder against 0.83-0.88x through the pool. ``TOKENIZERS_PARALLELISM`` is read at
    every call, so it is set for the run only (and a value the user set is left alone).
    """
    if threads < available_cores() or "TOKENIZERS_PARALLELISM" in os.environ:
        yield
        return
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        os.environ.pop("TOKENIZERS_PARALLELISM", None)


def finish_output(
    options: BulkOptions, manifest: Manifest, writer: PartWriter, width: int, chunks_this_run: int, started: float
) -> BulkSummary:
    """Once every chunk is finished: assemble the output, merge the bad-row reports, mark the run done."""
    indexes = sorted(manifest.finished)
    outputs = writer.finish(indexes, width, options.dtype)
    chunk_reports = _merge_bad_row_reports(options.output, indexes)
    summary = summarize(manifest, chunks_this_run, started, outputs)
    manifest.mark_done({"rows": summary.rows, "bad_rows": summary.bad_rows, "chunks": summary.chunks})
    writer.remove_parts(indexes)
    for path in chunk_reports:
        path.unlink()
    return summary


def encode_chunk(encoder: Encoder, texts: list[str], width: int, dtype: str, batch_size: int) -> np.ndarray:
    """The chunk's vectors, encoded ``batch_size`` texts at a time (large enough for every core, cache-sized)."""
    vectors = np.empty((len(texts), width), dtype=dtype)
    for first in range(0, len(texts), batch_size):
        batch = texts[first : first + batch_size]
        vectors[first : first + len(batch)] = encoder.encode(batch, width)
    return vectors


def bad_row_error(options: BulkOptions, chunk: Chunk) -> BulkError:
    bad = chunk.bad_rows[0]
    return BulkError(
        f"{options.input} {bad.where}: {bad.error}; fix it, or pass --skip-bad-rows "
        "to skip such rows and list them in a report"
    )


def write_bad_rows(output: Path, chunk: Chunk) -> None:
    """The chunk's bad rows, kept beside its part until the run is done, then merged in input order."""
    lines = [orjson.dumps({bad.unit: bad.number, "error": bad.error}) + b"\n" for bad in chunk.bad_rows]
    (output / f"_bad_rows.{part_name(chunk.index)}.jsonl").write_bytes(b"".join(lines))


def summarize(
    manifest: Manifest, chunks_this_run: int, started: float, outputs: list[Path], already_complete: bool = False
) -> BulkSummary:
    finished = manifest.finished.values()
    report = manifest.path.parent / BAD_ROWS_FILE
    return BulkSummary(
        rows=sum(chunk.rows for chunk in finished),
        bad_rows=sum(chunk.bad_rows for chunk in finished),
        chunks=len(manifest.finished),
        chunks_this_run=chunks_this_run,
        seconds=time.perf_counter() - started,
        outputs=outputs,
        bad_rows_report=report if report.is_file() else None,
        already_complete=already_complete,
    )


class _Pipeline:
    """Reader thread -> ``threads`` encoder threads -> writer thread, joined by bounded queues.

    The encoder threads only encode, so encoding never waits for a part to be written;
    the writer thread alone writes parts, bad-row reports and the manifest.
    """

    def __init__(
        self,
        options: BulkOptions,
        encoder: Encoder,
        width: int,
        writer: PartWriter,
        manifest: Manifest,
        progress: ProgressLine,
    ) -> None:
        self.options = options
        self.encoder = encoder
        self.width = width
        self.writer = writer
        self.manifest = manifest
        self.progress = progress
        self.parsed: queue.Queue[Any] = queue.Queue(maxsize=options.threads)
        self.encoded: queue.Queue[Any] = queue.Queue(maxsize=1)  # writing is quick: one waiting part is enough
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self.chunks_this_run = 0

    def run(self, first_index: int, start: Any) -> None:
        stages = [(self._read, first_index, start), (self._write,)]
        stages += [(self._encode,)] * self.options.threads
        threads = [threading.Thread(target=self._guard, args=stage, daemon=True) for stage in stages]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.2)
        except KeyboardInterrupt:
            self.stop.set()
            raise
        if self.failure is not None:
            raise self.failure

    def _guard(self, target: Any, *args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:
            if self.failure is None:
                self.failure = exc
            self.stop.set()

    def _put(self, into: queue.Queue[Any], item: Any) -> bool:
        while not self.stop.is_set():
            try:
                into.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _take(self, source: queue.Queue[Any]) -> Any:
        """The next item, or _DONE once the run is stopped."""
        while not self.stop.is_set():
            try:
                return source.get(timeout=0.1)
            except queue.Empty:
                continue
        return _DONE

    def _read(self, first_index: int, start: Any) -> None:
        try:
            for chunk in read_chunks(self.options, start, first_index):
                if chunk.bad_rows and not self.options.skip_bad_rows:
                    raise bad_row_error(self.options, chunk)
                if chunk.index in self.manifest.finished:
                    continue  # finished by an earlier run that stopped while later chunks were in flight
                if not self._put(self.parsed, chunk):
                    return
        finally:
            for _ in range(self.options.threads):
                self._put(self.parsed, _DONE)

    def _encode(self) -> None:
        options = self.options
        try:
            while (chunk := self._take(self.parsed)) is not _DONE:
                vectors = encode_chunk(self.encoder, chunk.texts, self.width, options.dtype, options.batch_size)
                if not self._put(self.encoded, (chunk, vectors)):
                    return
        finally:
            self._put(self.encoded, _DONE)

    def _write(self) -> None:
        running = self.options.threads
        while running:
            item = self._take(self.encoded)
            if item is _DONE:
                running -= 1
                continue
            chunk, vectors = item
            self.writer.write_part(chunk.index, chunk.ids, vectors)
            if chunk.bad_rows:
                write_bad_rows(self.options.output, chunk)
            self.manifest.record(
                FinishedChunk(chunk.index, len(chunk.ids), len(chunk.bad_rows), chunk.start, chunk.end)
            )
            self.chunks_this_run += 1
            self.progress.advance(chunk.end.offset - chunk.start.offset, len(chunk.ids))


def _merge_bad_row_reports(output: Path, indexes: list[int]) -> list[Path]:
    """Write one report in input order from the per-chunk ones (kept with each part, so resumes keep them).

    Returns the per-chunk files, to delete once the manifest says the run is done.
    """
    parts = [output / f"_bad_rows.{part_name(index)}.jsonl" for index in indexes]
    parts = [part for part in parts if part.is_file()]
    if parts:
        temporary = output / f".{BAD_ROWS_FILE}.tmp"
        with temporary.open("wb") as merged:
            for part in parts:
                merged.write(part.read_bytes())
        temporary.replace(output / BAD_ROWS_FILE)
    return parts
