"""Bounded soak test: steady mixed traffic against ``python -m app`` on loopback for a fixed time.

Reports requests served, errors, latency percentiles, and the server's resident memory
(RSS) after warm-up and at the end; exits non-zero if any request failed or memory grew by
``--max-growth`` (10%) or more. Only loopback targets: it starts its own server on a free
127.0.0.1 port (``--model-dir``), or drives one already running there (``--url``, RSS then
read from ``--pid``).

    python loadtests/soak.py --model-dir models/default --duration 300 --concurrency 16

Traffic: real sentences (STS-B dev, ../shared/data), 1 to 64 inputs per request, as text or
token ids, float or base64, with and without ``dimensions``; every answer is checked for
the right number of vectors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STS_DEV = ROOT.parent / "shared" / "data" / "stsbenchmark" / "sts-dev.csv"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    inputs: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def sentences() -> list[str]:
    texts: list[str] = []
    with STS_DEV.open(encoding="utf-8") as handle:
        for line in handle:
            texts.extend(line.rstrip("\n").split("\t")[5:7])
    return [text for text in texts if text.strip()]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model_dir: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBED_")}
    env.update(HF_HUB_OFFLINE="1", EMBED_MODEL_DIR=str(model_dir), EMBED_HOST="127.0.0.1", EMBED_PORT=str(port))
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"server not ready; see {log_path}")


@dataclass(frozen=True)
class Traffic:
    texts: list[str]
    width: int  # the model's dimensions, learnt from a first request
    vocab_size: int | None  # token-id requests only when known


def request_body(rng: random.Random, traffic: Traffic) -> tuple[dict[str, object], int]:
    count = rng.choice((1, 1, 2, 4, 8, 16, 32, 64))
    chosen = [traffic.texts[rng.randrange(len(traffic.texts))] for _ in range(count)]
    body: dict[str, object] = {"input": chosen if count > 1 or rng.random() < 0.5 else chosen[0], "model": "soak"}
    if traffic.vocab_size and rng.random() < 0.15:  # token ids: any in-range ids will do for load
        body["input"] = [[rng.randrange(traffic.vocab_size) for _ in range(rng.randint(3, 40))] for _ in range(count)]
    if rng.random() < 0.5:
        body["encoding_format"] = "base64"
    if rng.random() < 0.3:
        body["dimensions"] = rng.randint(1, traffic.width)
    return body, count


async def worker(
    client: httpx.AsyncClient, traffic: Traffic, seed: int, stop_at: float, record_from: float, tally: Tally
) -> None:
    rng = random.Random(seed)
    while (now := time.monotonic()) < stop_at:
        body, count = request_body(rng, traffic)
        started = time.perf_counter()
        try:
            response = await client.post("/v1/embeddings", json=body)
        except httpx.HTTPError as exc:
            tally.error(type(exc).__name__)
            continue
        elapsed = time.perf_counter() - started
        if now < record_from:
            continue
        if response.status_code != 200:
            tally.error(f"HTTP {response.status_code}")
        elif len(response.json()["data"]) != count:
            tally.error("wrong vector count")
        else:
            tally.latencies.append(elapsed)
            tally.inputs += count


async def soak(
    url: str, concurrency: int, duration: float, warmup: float, pid: int | None, vocab_size: int | None
) -> dict[str, object]:
    tally = Tally()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        probe = await client.post("/v1/embeddings", json={"input": "probe", "model": "soak"})
        probe.raise_for_status()
        traffic = Traffic(sentences(), len(probe.json()["data"][0]["embedding"]), vocab_size)
        rss_ready = rss_bytes(pid) if pid else 0
        start = time.monotonic()
        record_from = start + warmup
        stop_at = record_from + duration
        tasks = [
            asyncio.create_task(worker(client, traffic, seed, stop_at, record_from, tally))
            for seed in range(concurrency)
        ]
        await asyncio.sleep(warmup)
        rss_start = rss_bytes(pid) if pid else 0
        samples: list[float] = []
        while pid and time.monotonic() < stop_at - 0.5:  # memory every tenth of the run: flat, or creeping?
            await asyncio.sleep(min(duration / 10, stop_at - time.monotonic() - 0.5))
            samples.append(round(rss_bytes(pid) / 2**20, 1))
        await asyncio.gather(*tasks)
        rss_end = rss_bytes(pid) if pid else 0
    latencies_ms = np.array(tally.latencies) * 1000
    served = len(tally.latencies)
    return {
        "url": url,
        "duration_s": duration,
        "warmup_s": warmup,
        "concurrency": concurrency,
        "requests": served,
        "inputs": tally.inputs,
        "requests_per_s": round(served / duration, 1),
        "errors": sum(tally.errors.values()),
        "error_kinds": tally.errors,
        "latency_ms": {
            f"p{q}": round(float(np.percentile(latencies_ms, q)), 2) if served else None for q in (50, 90, 99)
        }
        | {"max": round(float(latencies_ms.max()), 2) if served else None},
        "rss_ready_bytes": rss_ready,
        "rss_start_bytes": rss_start,
        "rss_end_bytes": rss_end,
        "rss_growth": round(rss_end / rss_start - 1, 4) if rss_start else None,
        "rss_samples_mib": samples,
    }


def print_report(figures: dict[str, object]) -> None:
    latency = figures["latency_ms"]
    assert isinstance(latency, dict)
    mib = 2**20
    print(
        f"soak of {figures['url']}: {figures['duration_s']} s after {figures['warmup_s']} s warm-up, "
        f"concurrency {figures['concurrency']}"
    )
    print(f"  requests served  {figures['requests']} ({figures['requests_per_s']}/s, {figures['inputs']} inputs)")
    print(f"  errors           {figures['errors']} {figures['error_kinds'] or ''}")
    print(f"  latency ms       p50 {latency['p50']}  p90 {latency['p90']}  p99 {latency['p99']}  max {latency['max']}")
    if figures["rss_start_bytes"]:
        print(
            f"  server RSS MiB   ready {int(figures['rss_ready_bytes']) / mib:.1f}  "  # type: ignore[arg-type]
            f"after warm-up {int(figures['rss_start_bytes']) / mib:.1f}  "  # type: ignore[arg-type]
            f"end {int(figures['rss_end_bytes']) / mib:.1f}  growth {float(figures['rss_growth']) * 100:.2f}%"  # type: ignore[arg-type]
        )
        print(f"  RSS samples MiB  {figures['rss_samples_mib']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model-dir", type=Path, help="start python -m app on this model (free loopback port)")
    target.add_argument("--url", help="drive a server already running on loopback")
    parser.add_argument("--pid", type=int, help="with --url: the server's pid, to read its RSS")
    parser.add_argument("--vocab-size", type=int, help="with --url: send token-id requests with ids below this")
    parser.add_argument("--duration", type=float, default=300, help="seconds measured (default 300)")
    parser.add_argument("--warmup", type=float, default=10, help="seconds of traffic before measuring (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--max-growth", type=float, default=0.10, help="fail at this RSS growth (default 0.10)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    process = None
    pid = args.pid
    vocab_size = args.vocab_size
    if args.model_dir is not None:
        from app.model_format import load_model

        vocab_size = load_model(args.model_dir).vocab_size
        log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"soak-server-{os.getpid()}.log"
        process, url = start_server(args.model_dir, log_path)
        pid = process.pid
    else:
        url = args.url.rstrip("/")
        if urlparse(url).hostname not in LOOPBACK:
            parser.error("--url must be a loopback address (127.0.0.1, ::1 or localhost)")
    try:
        figures = asyncio.run(soak(url, args.concurrency, args.duration, args.warmup, pid, vocab_size))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    print_report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    growth = figures["rss_growth"]
    if figures["errors"] or (isinstance(growth, float) and growth >= args.max_growth):
        print("FAIL: errors, or memory grew by the limit or more", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
