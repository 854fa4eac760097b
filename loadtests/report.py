"""What every benchmark records besides its numbers: the machine, the versions, the load."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    """CPU, load and package versions: enough to judge whether two runs are comparable."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), platform.processor())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "commit": commit,
        "versions": {
            name: _version(name)
            for name in ("numpy", "tokenizers", "model2vec", "fastapi", "uvicorn", "orjson", "uvloop", "httptools")
        },
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data.setdefault("machine", machine_facts())
    data["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def save_results(path: Path, benchmark: str, argv: list[str] | None, fields: dict[str, Any]) -> None:
    """Write a benchmark's JSON with the command line that reproduces it, and say where."""
    arguments = argv if argv is not None else sys.argv[1:]
    command = f"python -m loadtests.bench_{benchmark} " + " ".join(arguments)
    write_json(path, {"benchmark": benchmark, "command": command, **fields})
    print(f"\nwrote {path}")


def print_targets(found: list[dict[str, Any]]) -> None:
    """One line per target: met or MISS, the measured ratio, the bar (and the per-CPU-second ratio if any)."""
    for target in found:
        mark = "met " if target["met"] else "MISS"
        per_cpu = target.get("value_per_cpu_second")
        extra = f"; per CPU-second {per_cpu:.2f}" if per_cpu is not None else ""
        print(f"[{mark}] {target['target']}: {target['value']:.2f} (bar {target['bar']}{extra})")
