"""Turn scores into the printed table and the saved JSON."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from distill_job.evaluation.tasks import Task


@dataclass(frozen=True)
class Result:
    name: str
    kind: str
    path: str
    scores: dict[str, float]
    seconds: float

    @property
    def average(self) -> float:
        return sum(self.scores.values()) / len(self.scores)


def table(results: list[Result], tasks: list[Task]) -> str:
    """A Markdown table, one row per system; with model2vec present, each row's average gain over it."""
    baseline = next((r for r in results if r.kind == "model2vec"), None)
    header = ["model", *(f"{t.name} ({t.metric})" for t in tasks), "average"]
    if baseline is not None:
        header.append("vs model2vec")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        cells = [result.name, *(f"{result.scores[t.name]:.2f}" for t in tasks), f"{result.average:.2f}"]
        if baseline is not None:
            cells.append(f"{result.average - baseline.average:+.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def payload(results: list[Result], tasks: list[Task], settings: dict) -> dict:
    return {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "tasks": [{"name": t.name, "metric": t.metric} for t in tasks],
        "results": [{**asdict(r), "average": r.average} for r in results],
    }


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
