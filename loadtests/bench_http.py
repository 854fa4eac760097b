"""HTTP benchmark: our service against a naive FastAPI+model2vec server, a trivial endpoint
(the HTTP ceiling) and Infinity serving the teacher, under the same closed-loop load.

Loopback only, every run bounded in time. The servers of one worker count run side by
side and the runs take turns (round robin over the cells, ``--repeats`` times), so that
load from other processes on a shared machine hits them alike; each figure is the median
of its repeats. The load generator is ``wrk`` (one thread) with ``post_bodies.lua``;
its own CPU use is in every row. Bodies are real STS-B sentences.

    .venv/bin/python -m loadtests.bench_http --model-dir /tmp/perf-default

prints tables and writes JSON (default results/http.json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from loadtests import corpora, load_generators, servers
from loadtests.report import machine_facts, print_targets, save_results

CONCURRENCY = (1, 8, 64, 256)
INPUTS = (1, 16, 128)
FORMATS = ("float", "base64")
BODIES_PER_FILE = 200


@dataclass(frozen=True)
class Cell:
    server: str
    encoding_format: str
    inputs: int
    concurrency: int

    def key(self) -> tuple[str, str, int, int]:
        return (self.server, self.encoding_format, self.inputs, self.concurrency)


def write_bodies(directory: Path, texts: list[str], model: str) -> dict[tuple[str, int], Path]:
    """One file per (format, inputs): a JSON request body per line, consecutive texts."""
    files: dict[tuple[str, int], Path] = {}
    for encoding_format, inputs in itertools.product(FORMATS, INPUTS):
        path = directory / f"{model.replace('/', '_')}-{encoding_format}-{inputs}.jsonl"
        lines = []
        for i in range(BODIES_PER_FILE):
            start = (i * inputs) % (len(texts) - inputs)
            body = {"input": texts[start : start + inputs], "model": model, "encoding_format": encoding_format}
            lines.append(json.dumps(body, separators=(",", ":")))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files[(encoding_format, inputs)] = path
    return files


def check_answers(server: servers.Server, bodies: dict[tuple[str, int], Path]) -> None:
    """One request per body shape before any load: a misconfigured peer must not be measured."""
    for (encoding_format, inputs), path in bodies.items():
        body = path.read_text().splitlines()[0].encode()
        request = urllib.request.Request(
            server.base_url + server.embeddings_path, body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        if server.name == "trivial":
            continue
        if len(answer["data"]) != inputs:
            raise RuntimeError(f"{server.name} answered {len(answer['data'])} vectors for {inputs} inputs")
        first = answer["data"][0]["embedding"]
        if isinstance(first, str) != (encoding_format == "base64"):
            raise RuntimeError(f"{server.name} ignored encoding_format={encoding_format}")


def in_process_rate(model_dir: Path, texts: list[str], inputs: int, seconds: float) -> float:
    """Texts/s of our encoder in this process on calls of ``inputs`` texts (the same texts as the bodies)."""
    from app.encoder import Encoder
    from app.model_format import load_model

    encoder = Encoder(load_model(model_dir))
    calls = [texts[i : i + inputs] for i in range(0, BODIES_PER_FILE * inputs, inputs)]
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        encoder.encode(calls[done % len(calls)])
        done += 1
    return done * inputs / (time.perf_counter() - started)


def run_cells(
    live: dict[str, servers.Server],
    bodies: dict[str, dict[tuple[str, int], Path]],
    cells: list[Cell],
    seconds: float,
    repeats: int,
    slow_seconds: float,
) -> list[dict[str, Any]]:
    runs: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {cell.key(): [] for cell in cells}
    for repeat in range(repeats):
        for cell in cells:
            server = live[cell.server]
            url = server.base_url + server.embeddings_path
            duration = slow_seconds if cell.server == "infinity" else seconds
            cpu0 = servers.cpu_seconds(server.pids())
            result = load_generators.closed_loop(
                url, bodies[cell.server][(cell.encoding_format, cell.inputs)], cell.concurrency, duration, 60
            )
            result["server_cpu"] = round((servers.cpu_seconds(server.pids()) - cpu0) / result["duration_s"], 3)
            runs[cell.key()].append(result)
            print(
                f"  [{repeat + 1}/{repeats}] {cell.server:8} {cell.encoding_format:6} inputs={cell.inputs:<3} "
                f"c={cell.concurrency:<3} {result['requests_per_s']:9.1f} req/s  p50 {result['p50_ms']:8.1f} ms  "
                f"p99 {result['p99_ms']:8.1f} ms  non-2xx {result['non_2xx']}  wrk cpu {result['generator_cpu']}",
                file=sys.stderr,
                flush=True,
            )
    rows = []
    for cell in cells:
        results = runs[cell.key()]
        median = {
            key: statistics.median(r[key] for r in results) for key in ("requests_per_s", "p50_ms", "p95_ms", "p99_ms")
        }
        rows.append(
            {
                "server": cell.server,
                "format": cell.encoding_format,
                "inputs": cell.inputs,
                "concurrency": cell.concurrency,
                **{k: round(v, 2) for k, v in median.items()},
                "inputs_per_s": round(median["requests_per_s"] * cell.inputs, 1),
                "non_2xx": sum(r["non_2xx"] for r in results),
                "socket_errors": sum(r["socket_errors"] for r in results),
                "requests": sum(r["requests"] for r in results),
                "generator": results[0]["generator"],
                "generator_cpu": max(r["generator_cpu"] for r in results),
                "server_cpu": statistics.median(r["server_cpu"] for r in results),
                "repeats_requests_per_s": [round(r["requests_per_s"], 1) for r in results],
            }
        )
    return rows


def plan_cells(plan: str, names: Iterable[str]) -> list[Cell]:
    names = list(names)
    cells: list[Cell] = []
    if plan == "smoke":
        return [Cell(name, "base64", 16 if name != "trivial" else 1, 8) for name in names]
    for name in names:
        if name == "trivial":  # ignores the body: only concurrency matters
            cells += [Cell(name, "float", 1, c) for c in CONCURRENCY]
        elif name == "infinity" and plan == "targets":
            cells.append(Cell(name, "base64", 16, 64))
        elif name == "infinity":  # ~75 texts/s: a few long cells, the target's among them
            cells += [Cell(name, "base64", n, c) for n in (1, 16) for c in (1, 8, 64)]
        elif plan == "targets":
            cells += [Cell(name, f, n, c) for f in FORMATS for n in (1, 16) for c in (8, 64)]
        else:
            cells += [Cell(name, f, n, c) for f in FORMATS for n in INPUTS for c in CONCURRENCY]
    return cells


def half_peak_latency(
    server: servers.Server, bodies: dict[tuple[str, int], Path], rows: list[dict[str, Any]], seconds: float
) -> list[dict[str, Any]]:
    """Open-ish loop at half of the measured peak requests/s (hey, 64 rate-limited clients)."""
    found = []
    for inputs in (1, 16):
        peaks = [r for r in rows if r["server"] == server.name and r["inputs"] == inputs and r["format"] == "base64"]
        if not peaks:
            continue
        peak = max(r["requests_per_s"] for r in peaks)
        body = bodies[("base64", inputs)]
        single = body.with_suffix(".one.json")
        single.write_text(body.read_text().splitlines()[0])
        result = load_generators.hey(server.base_url + server.embeddings_path, single, 64, peak / 2, seconds)
        result.update({"inputs": inputs, "format": "base64", "peak_requests_per_s": round(peak, 1)})
        result["p99_over_p50"] = round(result["p99_ms"] / result["p50_ms"], 2) if result["p50_ms"] else None
        found.append(result)
        print(f"  half peak ({inputs} inputs): {result}", file=sys.stderr, flush=True)
    return found


def targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 4's HTTP targets, each as measured value against its bar (where both sides were measured)."""
    found: list[dict[str, Any]] = []

    def add(name: str, value: float, bar: float, below: bool = False) -> None:
        met = value < bar if below else value >= bar
        found.append({"target": name, "value": round(value, 3), "bar": bar, "met": met})

    for run in runs:
        workers = run["workers"]
        rows = {(r["server"], r["format"], r["inputs"], r["concurrency"]): r for r in run["rows"]}
        ours16 = rows.get(("ours", "base64", 16, 64))
        if ours16 and run.get("in_process_16"):
            add(
                f"{workers}w: 16 inputs c64 base64, inputs/s / in-process encoder",
                ours16["inputs_per_s"] / run["in_process_16"],
                0.4,
            )
        inf16 = rows.get(("infinity", "base64", 16, 64))
        if ours16 and inf16 and inf16["inputs_per_s"] > 0:
            add(
                f"{workers}w: 16 inputs c64 base64, inputs/s / Infinity",
                ours16["inputs_per_s"] / inf16["inputs_per_s"],
                100,
            )
        probe16 = rows.get(("probe", "base64", 16, 64))
        if probe16 and inf16 and inf16["inputs_per_s"] > 0:
            value = probe16["inputs_per_s"] / inf16["inputs_per_s"]
            add(f"(probe) {workers}w: 16 inputs c64 base64, bare-ASGI route, inputs/s / Infinity", value, 100)
        for fmt in FORMATS:
            ours1 = rows.get(("ours", fmt, 1, 64))
            naive1 = rows.get(("naive", fmt, 1, 64))
            trivial = rows.get(("trivial", "float", 1, 64))
            if ours1 and naive1:
                add(
                    f"{workers}w: 1 input c64 {fmt}, requests/s / naive",
                    ours1["requests_per_s"] / naive1["requests_per_s"],
                    8,
                )
            if ours1 and trivial:
                add(
                    f"{workers}w: 1 input c64 {fmt}, requests/s / trivial",
                    ours1["requests_per_s"] / trivial["requests_per_s"],
                    0.6,
                )
            probe1 = rows.get(("probe", fmt, 1, 64))
            if probe1 and trivial:
                value = probe1["requests_per_s"] / trivial["requests_per_s"]
                add(f"(probe) {workers}w: 1 input c64 {fmt}, bare-ASGI route, requests/s / trivial", value, 0.6)
            if probe1 and naive1:
                value = probe1["requests_per_s"] / naive1["requests_per_s"]
                add(f"(probe) {workers}w: 1 input c64 {fmt}, bare-ASGI route, requests/s / naive", value, 8)
        for half in run.get("half_peak", []):
            if half.get("p99_over_p50"):
                add(
                    f"{workers}w: p99/p50 at half of peak ({half['inputs']} inputs)",
                    half["p99_over_p50"],
                    4,
                    below=True,
                )
    return found


def print_rows(rows: list[dict[str, Any]], workers: int) -> None:
    print(f"\nHTTP, {workers} worker(s) per server (medians; wrk -t1; loopback)")
    header = (
        f"{'server':9} {'format':6} {'inputs':>6} {'conc':>5} {'req/s':>9} {'inputs/s':>10} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'non2xx':>7} {'gen cpu':>8} {'srv cpu':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['server']:9} {r['format']:6} {r['inputs']:>6} {r['concurrency']:>5} {r['requests_per_s']:9,.0f} "
            f"{r['inputs_per_s']:10,.0f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['p99_ms']:8.1f} "
            f"{r['non_2xx']:>7} {r['generator_cpu']:8.2f} {r['server_cpu']:8.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=Path("results/http.json"))
    parser.add_argument("--plan", choices=("full", "targets", "smoke"), default="full")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["ours", "naive", "trivial", "infinity"],
        help="ours, naive, trivial, infinity, probe (our app with a bare-ASGI embeddings route)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one run")
    parser.add_argument("--infinity-seconds", type=float, default=20.0, help="length of one run against Infinity")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-half-peak", action="store_true", help="skip the latency run at half of peak")
    args = parser.parse_args(argv)

    facts = machine_facts()
    texts = corpora.sentences()
    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    if not load_generators.have_wrk():
        notes.append("wrk is not installed (apt-get install wrk): used the slower asyncio client instead")
    for workers in args.workers:
        live: dict[str, servers.Server] = {}
        bodies: dict[str, dict[tuple[str, int], Path]] = {}
        try:
            for name in args.servers:
                if name in {"infinity", "probe"} and workers != 1:
                    continue  # single-process peers: Infinity uses both cores by itself; the probe is one process
                server = _make(name, args.model_dir, workers)
                if server is None:
                    notes.append("Infinity skipped: no venv at $INFINITY_VENV (run loadtests/setup_infinity.sh)")
                    continue
                print(f"starting {name} ({workers} worker(s))", file=sys.stderr, flush=True)
                try:
                    server.start(timeout_s=300 if name == "infinity" else 60, log_dir=work / "logs")
                except RuntimeError as exc:
                    notes.append(f"{name} skipped: {exc}")
                    continue
                live[name] = server
                model = str(servers.teacher_dir()) if name == "infinity" else "text-embedding-3-small"
                bodies[name] = write_bodies(work, texts, model)
                check_answers(server, bodies[name])
            cells = plan_cells(args.plan, [n for n in args.servers if n in live])
            rows = run_cells(live, bodies, cells, args.seconds, args.repeats, args.infinity_seconds)
            run: dict[str, Any] = {"workers": workers, "rows": rows}
            if "ours" in live:
                if args.plan != "smoke" and not args.no_half_peak and load_generators.shutil.which("hey"):
                    run["half_peak"] = half_peak_latency(live["ours"], bodies["ours"], rows, args.seconds * 2)
                run["memory"] = {str(pid): servers.memory(pid) for pid in live["ours"].pids()}
            run["in_process_16"] = round(in_process_rate(args.model_dir, texts, 16, min(args.seconds, 3.0)), 1)
            runs.append(run)
            print_rows(rows, workers)
        finally:
            for server in live.values():
                server.stop()
    found = targets(runs)
    print()
    for run in runs:
        rate = run["in_process_16"]
        print(f"in-process encoder, calls of 16 sentences ({run['workers']}w run): {rate:,.0f} texts/s")
    print_targets(found)
    for note in notes:
        print(f"note: {note}")
    save_results(
        args.output,
        "http",
        argv,
        {
            "machine": facts,
            "settings": {"plan": args.plan, "seconds": args.seconds, "repeats": args.repeats},
            "runs": runs,
            "targets": found,
            "notes": notes,
        },
    )
    return 0


def _make(name: str, model_dir: Path, workers: int) -> servers.Server | None:
    if name == "ours":
        return servers.ours(model_dir, workers)
    if name == "naive":
        return servers.naive(model_dir, workers)
    if name == "probe":
        return servers.fast_path_probe(model_dir)
    if name == "trivial":
        return servers.trivial(workers)
    if name == "infinity":
        return servers.infinity()
    raise ValueError(f"unknown server {name!r}")


if __name__ == "__main__":
    sys.exit(main())
