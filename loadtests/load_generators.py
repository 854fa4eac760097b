"""Closed-loop load (wrk, or a small asyncio client where wrk is missing) and rate-limited load (hey).

Every run is bounded in time, targets loopback only, and reports the generator's own CPU
use, so a reader can tell whether the generator or the server was the limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

LUA_SCRIPT = Path(__file__).resolve().parent / "post_bodies.lua"


def _loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in {"127.0.0.1", "::1", "localhost"}:
        raise ValueError(f"load tests only target loopback, not {host}")


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk(url: str, bodies_file: Path, connections: int, seconds: float, timeout_s: float = 30.0) -> dict[str, Any]:
    """``wrk`` with one thread (the server gets the other core), POSTing the file's bodies in turn."""
    _loopback(url)
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={round(timeout_s)}s",
        "-s", str(LUA_SCRIPT), url, "--", str(bodies_file),
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    out = process.stdout.read() if process.stdout else ""
    err = process.stderr.read() if process.stderr else ""
    match = re.search(r"^WRK_JSON (\{.*\})$", out, re.MULTILINE)
    if process.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.strip() or out.strip()}")
    raw = json.loads(match.group(1))
    duration = raw["duration_us"] / 1e6
    errors = sum(raw[key] for key in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return {
        "generator": "wrk",
        "requests": raw["requests"],
        "duration_s": round(duration, 3),
        "requests_per_s": (raw["requests"] - raw["status_errors"]) / duration,  # answered with 2xx
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "non_2xx": raw["status_errors"],
        "socket_errors": errors,
        "generator_cpu": round((usage.ru_utime + usage.ru_stime) / wall, 3),
    }


def python_client(url: str, bodies_file: Path, connections: int, seconds: float) -> dict[str, Any]:
    """A small closed-loop HTTP/1.1 client on asyncio: slower than wrk, for machines without it."""
    _loopback(url)
    return asyncio.run(_python_client(url, bodies_file.read_text().splitlines(), connections, seconds))


async def _python_client(url: str, bodies: list[str], connections: int, seconds: float) -> dict[str, Any]:
    parts = urlsplit(url)
    latencies: list[float] = []
    statuses: list[int] = []
    cpu0 = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds

    async def connection(offset: int) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        index = offset
        try:
            while time.perf_counter() < deadline:
                body = bodies[index % len(bodies)].encode()
                index += 1
                head = (
                    f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                sent = time.perf_counter()
                writer.write(head + body)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - sent)
                statuses.append(int(status_line.split()[1]))
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(connections)))
    wall = time.perf_counter() - started
    values = np.array(latencies) * 1000 if latencies else np.zeros(1)
    failed = sum(1 for s in statuses if not 200 <= s < 300)
    return {
        "generator": "python",
        "requests": len(latencies),
        "duration_s": round(wall, 3),
        "requests_per_s": (len(latencies) - failed) / wall,
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
        "non_2xx": failed,
        "socket_errors": 0,
        "generator_cpu": round((time.process_time() - cpu0) / wall, 3),
    }


def closed_loop(url: str, bodies_file: Path, connections: int, seconds: float, timeout_s: float) -> dict[str, Any]:
    if have_wrk():
        return wrk(url, bodies_file, connections, seconds, timeout_s)
    return python_client(url, bodies_file, connections, seconds)


def hey(url: str, body_file: Path, workers: int, rate_per_s: float, seconds: float) -> dict[str, Any]:
    """Rate-limited load with ``hey``: ``workers`` clients sending ``rate_per_s`` requests/s in total."""
    _loopback(url)
    if shutil.which("hey") is None:
        raise FileNotFoundError("hey is not installed (apt-get install hey)")
    per_worker = max(rate_per_s / workers, 0.1)
    command = [
        "hey", "-z", f"{max(1, round(seconds))}s", "-c", str(workers), "-q", f"{per_worker:.2f}", "-m", "POST",
        "-T", "application/json", "-D", str(body_file), "-t", "30", url,
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    out = process.stdout.read() if process.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"hey failed: {out.strip()}")
    percentiles = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    total = sum(codes.values())
    return {
        "generator": "hey",
        "requests": total,
        "requests_per_s": codes.get(200, 0) / wall,
        "p50_ms": percentiles.get(50),
        "p95_ms": percentiles.get(95),
        "p99_ms": percentiles.get(99),
        "non_2xx": total - codes.get(200, 0),
        "generator_cpu": round((usage.ru_utime + usage.ru_stime) / wall, 3),
    }
