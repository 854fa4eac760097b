"""Cut the input into chunks that workers read on their own (the Ray job's unit of work).

A planned chunk is an index and the positions where its records start and end. A worker
reads exactly those records (``read_planned_chunk``) and writes ``part-<index>``, so the
plan is also the unit of output naming and of resume. It depends only on the input file
and the chunk size (both in the manifest), so a rerun plans the same chunks and skips
the finished ones.

* JSONL: byte spans of about ``chunk_size`` lines, cut at line ends (a JSON record never
  holds a raw line break), found by seeking rather than parsing; line numbers come from
  counting line breaks, so bad rows are named by line as in the local job.
* Parquet: ``chunk_size`` rows at a time, from the footer's row count.
* CSV: a quoted field may hold line breaks, so only parsing finds where records start:
  the driver reads the file once with the local reader (about 1 µs per row) and keeps the
  chunk positions. Workers then parse their chunk again, in parallel.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from app.bulk.options import BulkError, BulkOptions
from app.bulk.readers import Chunk, Position, input_extent, open_input, read_chunks, read_jsonl_span

_SAMPLE_BYTES = 1 << 20  # read to estimate bytes per JSONL line
_COUNT_BYTES = 16 << 20  # read at a time to count line breaks


@dataclass(frozen=True)
class PlannedChunk:
    index: int
    start: Position
    end: Position


def plan_chunks(options: BulkOptions) -> list[PlannedChunk]:
    if options.input_format == "jsonl":
        return _plan_jsonl(options)
    if options.input_format == "parquet":
        rows, size = input_extent(options), options.chunk_size
        starts = [Position(row, row + 1) for row in range(0, rows, size)] + [Position(rows, rows + 1)]
        return [PlannedChunk(index, start, end) for index, (start, end) in enumerate(itertools.pairwise(starts))]
    return [PlannedChunk(chunk.index, chunk.start, chunk.end) for chunk in read_chunks(options)]


def read_planned_chunk(options: BulkOptions, planned: PlannedChunk) -> Chunk:
    """The records of one planned chunk, judged as the local job judges them."""
    if options.input_format == "jsonl":
        return read_jsonl_span(options, planned.index, planned.start, planned.end.offset)
    chunk = next(read_chunks(options, planned.start, planned.index), None)
    if chunk is None or chunk.end != planned.end:
        where = f"chunk {planned.index} no longer ends where planned"
        raise BulkError(f"{options.input} changed while the job ran ({where}); pass --overwrite to start over")
    return chunk


def _plan_jsonl(options: BulkOptions) -> list[PlannedChunk]:
    size = options.input.stat().st_size
    plan: list[PlannedChunk] = []
    with open_input(options.input) as handle:
        sample = handle.read(_SAMPLE_BYTES)
        span = max(1, len(sample) * options.chunk_size // max(sample.count(b"\n"), 1))
        start = Position(0, 1)
        while start.offset < size:
            cut = start.offset + span
            if cut >= size:
                end_offset = size
            else:  # to the end of the line holding byte cut - 1
                handle.seek(cut - 1)
                handle.readline()
                end_offset = handle.tell()
            handle.seek(start.offset)
            breaks, left = 0, end_offset - start.offset
            while left:
                block = handle.read(min(left, _COUNT_BYTES))
                breaks += block.count(b"\n")
                left -= len(block)
            end = Position(end_offset, start.line + breaks)
            plan.append(PlannedChunk(len(plan), start, end))
            start = end
    return plan
