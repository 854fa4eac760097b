"""Memory per process (RSS and PSS, from /proc/PID/smaps_rollup) and time from process start
to a 200 on /ready, for our service with 1 and 2 workers.

PSS divides each shared page among the processes mapping it, so the PSS of all the
processes adds up to what the service really costs; a second worker should add little,
since the table is shared through the page cache. The first start of a run uses a fresh
copy of the model directory, so it includes the one-time float32 conversion of the
table (see app/encoder.py); the later starts find the converted table already there.

    .venv/bin/python -m loadtests.bench_memory --model-dir /tmp/perf-default
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from loadtests import bench_http, corpora, load_generators, servers
from loadtests.report import machine_facts, save_results


def breakdown(pid: int) -> dict[str, float]:
    """RSS in MB by what holds it, from /proc/PID/smaps: the model's table (the float32
    copy or the stored file), other files (the interpreter, shared libraries), the
    ``[heap]`` (glibc's main arena: the tokenizer, large Python objects) and other
    anonymous memory (Python's object arenas, thread arenas and stacks, numpy buffers).
    """
    totals = dict.fromkeys(("table", "libraries", "heap", "anonymous"), 0)
    kind = "anonymous"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if not fields[0].endswith(":"):  # a mapping's header: address range, perms, offset, device, inode, path
            path = fields[5] if len(fields) > 5 else ""
            if path.endswith((".f32", ".safetensors")):
                kind = "table"
            elif path == "[heap]":
                kind = "heap"
            elif path.startswith("/"):
                kind = "libraries"
            else:
                kind = "anonymous"
        elif fields[0] == "Rss:":
            totals[kind] += int(fields[1])
    return {key: round(kb / 1024, 1) for key, kb in totals.items()}


def role(pid: int, main_pid: int) -> str:
    if pid == main_pid:
        return "main"
    cmdline = Path(f"/proc/{pid}/cmdline").read_text(errors="replace").replace("\0", " ")
    return "helper" if "resource_tracker" in cmdline else "worker"  # workers are forked: same command line


def measure(model_dir: Path, workers: int, bodies: Path, load_seconds: float, log_dir: Path) -> dict[str, Any]:
    server = servers.ours(model_dir, workers)
    server.start(timeout_s=60, log_dir=log_dir)
    try:
        assert server.process is not None
        main_pid = server.process.pid
        at_ready = {pid: servers.memory(pid) for pid in server.pids()}
        load = load_generators.closed_loop(server.base_url + server.embeddings_path, bodies, 16, load_seconds, 30)
        processes = []
        for pid in server.pids():
            processes.append(
                {
                    "pid": pid,
                    "role": role(pid, main_pid),
                    "at_ready": at_ready.get(pid),
                    "after_load": servers.memory(pid),
                    "after_load_rss_by_kind": breakdown(pid),
                }
            )
    finally:
        server.stop()
    return {
        "workers": workers,
        "ready_after_s": round(server.ready_after_s or 0, 3),
        "load_requests_per_s": round(load["requests_per_s"], 1),
        "processes": processes,
        "total_pss_mb": round(sum(p["after_load"]["pss_mb"] for p in processes), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=Path("results/memory.json"))
    parser.add_argument("--repeats", type=int, default=3, help="starts per worker count")
    parser.add_argument("--load-seconds", type=float, default=3.0, help="load before measuring (touches the table)")
    args = parser.parse_args(argv)

    facts = machine_facts()
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    fresh = work / "model"
    shutil.copytree(args.model_dir, fresh)  # a new file: its converted table is not cached yet
    bodies = bench_http.write_bodies(work, corpora.sentences(), "text-embedding-3-small")[("base64", 16)]
    starts: list[dict[str, Any]] = []
    try:
        for repeat in range(args.repeats):
            for workers in (1, 2):
                result = measure(fresh, workers, bodies, args.load_seconds, work / "logs")
                result["cold"] = repeat == 0 and workers == 1
                starts.append(result)
                print(f"workers={workers} ready after {result['ready_after_s']:.2f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)

    print(f"\nmemory and start-up of our service ({facts['cpus']} CPUs, load average {facts['load_average']})")
    header = (
        f"{'workers':>7} {'process':8} {'RSS MB':>8} {'PSS MB':>8} {'private MB':>11} {'at /ready RSS':>14}"
        f" | RSS MB by kind: {'table':>6} {'libs':>6} {'heap':>6} {'anon':>6}"
    )
    print(header)
    print("-" * len(header))
    last = {workers: [s for s in starts if s["workers"] == workers][-1] for workers in (1, 2)}
    for workers, start in last.items():
        for p in start["processes"]:
            after = p["after_load"]
            private = after.get("private_dirty_mb", 0) + after.get("private_clean_mb", 0)
            ready_rss = (p["at_ready"] or {}).get("rss_mb", 0)
            kinds = p["after_load_rss_by_kind"]
            print(
                f"{workers:>7} {p['role']:8} {after['rss_mb']:8.1f} {after['pss_mb']:8.1f} {private:11.1f} "
                f"{ready_rss:14.1f} | {'':16} {kinds['table']:6.1f} {kinds['libraries']:6.1f} "
                f"{kinds['heap']:6.1f} {kinds['anonymous']:6.1f}"
            )
        print(f"{workers:>7} {'total':8} {'':>8} {start['total_pss_mb']:8.1f}")
    ready = {w: [s["ready_after_s"] for s in starts if s["workers"] == w and not s["cold"]] for w in (1, 2)}
    cold = [s["ready_after_s"] for s in starts if s["cold"]]
    summary = {
        "worker_rss_mb_1w": max(p["after_load"]["rss_mb"] for p in last[1]["processes"] if p["role"] == "main"),
        "worker_rss_mb_1w_max_of_starts": max(
            p["after_load"]["rss_mb"] for s in starts if s["workers"] == 1 for p in s["processes"]
        ),
        "second_worker_adds_pss_mb": round(last[2]["total_pss_mb"] - last[1]["total_pss_mb"], 1),
        "ready_s_median_1w": statistics.median(ready[1]) if ready[1] else None,
        "ready_s_median_2w": statistics.median(ready[2]) if ready[2] else None,
        "ready_s_cold_1w": cold[0] if cold else None,
    }
    print()
    for key, value in summary.items():
        print(f"{key}: {value}")
    save_results(
        args.output,
        "memory",
        argv,
        {
            "machine": facts,
            "starts": starts,
            "summary": summary,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
