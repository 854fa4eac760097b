"""Remember which chunks are finished, so a rerun after an interruption skips them.

``_manifest.jsonl`` in the output directory: the first line describes the run (input
file, its size and modification time, fields, model, dimensions, dtype, chunk size);
then one line per finished chunk, appended and flushed to disk right after the chunk's
part file was renamed into place; a last ``done`` line when the output is assembled.
A rerun with the same description resumes; with a different one it stops and says
what changed, rather than mixing vectors of two different runs in one output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from app.bulk.options import BulkError
from app.bulk.readers import START, Position

MANIFEST_FILE = "_manifest.jsonl"
# Everything a run writes in its output directory; --overwrite removes these and nothing else.
_RUN_FILES = (
    "part-*",
    ".part-*",
    "_manifest.jsonl",
    "_bad_rows*",
    "._bad_rows*",
    "vectors.npy",
    "ids.txt",
    ".vectors.npy*",
    ".ids.txt*",
)
_KIND = "static-embed bulk output"


@dataclass(frozen=True)
class FinishedChunk:
    index: int
    rows: int
    bad_rows: int
    start: Position
    end: Position

    def to_json(self) -> dict[str, Any]:
        return {
            "chunk": self.index,
            "rows": self.rows,
            "bad_rows": self.bad_rows,
            "start": [self.start.offset, self.start.line],
            "end": [self.end.offset, self.end.line],
        }

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> FinishedChunk:
        return cls(
            int(entry["chunk"]),
            int(entry["rows"]),
            int(entry["bad_rows"]),
            Position(*entry["start"]),
            Position(*entry["end"]),
        )


class Manifest:
    def __init__(self, output: Path, description: dict[str, Any]) -> None:
        self.path = output / MANIFEST_FILE
        self.description = description
        self.finished: dict[int, FinishedChunk] = {}
        self.done: dict[str, Any] | None = None

    @classmethod
    def open(cls, output: Path, description: dict[str, Any], overwrite: bool = False) -> Manifest:
        """Start a new run in ``output`` or pick up the one recorded there."""
        manifest = cls(output, description)
        if output.exists() and not output.is_dir():
            raise BulkError(f"output {output} exists and is not a directory")
        if manifest.path.is_file() and overwrite:
            for pattern in _RUN_FILES:
                for path in output.glob(pattern):
                    path.unlink()
        elif manifest.path.is_file():
            manifest._load()
            return manifest
        elif output.is_dir() and any(output.iterdir()):
            raise BulkError(f"output directory {output} is not empty and holds no bulk run; choose a new directory")
        output.mkdir(parents=True, exist_ok=True)
        manifest._append({"kind": _KIND, "run": description})
        return manifest

    def _load(self) -> None:
        content = self.path.read_bytes()
        if content and not content.endswith(b"\n"):
            # Killed in the middle of appending a line: drop the fragment (its chunk is redone),
            # so the next append starts on a fresh line.
            content = content[: content.rfind(b"\n") + 1]
            with self.path.open("r+b") as handle:
                handle.truncate(len(content))
        lines = content.splitlines()
        try:
            header = orjson.loads(lines[0])
        except (IndexError, orjson.JSONDecodeError):
            header = {}
        if header.get("kind") != _KIND:
            raise BulkError(f"{self.path} is not a bulk manifest; choose a new output directory")
        was, now = header.get("run", {}), self.description
        changed = sorted(key for key in was.keys() | now.keys() if was.get(key) != now.get(key))
        if changed:
            details = "; ".join(f"{key}: was {was.get(key)!r}, now {now.get(key)!r}" for key in changed)
            raise BulkError(
                f"{self.path.parent} holds a partial run with different settings ({details}); "
                "rerun with the same settings to resume, or pass --overwrite to start over"
            )
        for number, line in enumerate(lines[1:], start=2):
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise BulkError(f"{self.path} line {number} is corrupt; pass --overwrite to start over") from None
            if "done" in entry:
                self.done = entry["done"]
            else:
                chunk = FinishedChunk.from_json(entry)
                self.finished[chunk.index] = chunk

    def resume_point(self) -> tuple[int, Position]:
        """The first chunk not finished and where it starts (later finished ones are skipped on the way)."""
        index, position = 0, START
        while index in self.finished:
            position = self.finished[index].end
            index += 1
        return index, position

    def record(self, chunk: FinishedChunk) -> None:
        self.finished[chunk.index] = chunk
        self._append(chunk.to_json())

    def mark_done(self, summary: dict[str, Any]) -> None:
        self.done = summary
        self._append({"done": summary})

    def _append(self, entry: dict[str, Any]) -> None:
        with self.path.open("ab") as handle:
            handle.write(orjson.dumps(entry) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
