"""Memory of `python -m app` per process, idle and at peak under bounded loopback load, and its rate.

The sizing figures in docs/deployment.md come from this script, run against the runtime
stage's environment (a virtualenv with the project installed without extras):

    python3 -m venv /tmp/runtime && /tmp/runtime/bin/pip install .
    python deploy/measure_memory.py --python /tmp/runtime/bin/python --model-dir models/default --workers 1 2

For each worker count it starts the server on a free 127.0.0.1 port, sends maximal requests
(2048 real sentences each, from ../shared/data; --repeat
lengthens every input) from several clients at once for a fixed
number of rounds, and samples every process's RSS and PSS (PSS splits pages shared between
processes, such as the memory-mapped table, fairly among them, so PSS adds up).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
STS_DEV = ROOT.parent / "shared" / "data" / "stsbenchmark" / "sts-dev.csv"


def sentences(count: int) -> list[str]:
    found: list[str] = []
    with STS_DEV.open(encoding="utf-8") as handle:
        for line in handle:
            found.extend(line.rstrip("\n").split("\t")[5:7])
    return [found[i % len(found)] for i in range(count)]


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MiB from /proc/PID/smaps_rollup."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in {"Rss", "Pss"}:
            values[key] = int(rest.split()[0]) / 1024
    return values["Rss"], values["Pss"]


def role_of(pid: int, main_pid: int) -> str:
    """uvicorn's supervisor, a worker it spawned, or multiprocessing's resource tracker."""
    if pid == main_pid:
        return "main"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return "gone"
    return "tracker" if "resource_tracker" in command else "worker"


def measure(python: str, model_dir: Path, workers: int, clients: int, rounds: int, repeat: int) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMBED_", "PROMETHEUS_MULTIPROC_DIR"))}
    env.update(EMBED_MODEL_DIR=str(model_dir), EMBED_HOST="127.0.0.1", EMBED_PORT=str(port), EMBED_WORKERS=str(workers))
    server = subprocess.Popen(
        [python, "-m", "app"], env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not become ready")
            time.sleep(0.2)
        time.sleep(2 * workers)  # every worker up and idle
        idle = {pid: memory_mib(pid) for pid in process_tree(server.pid)}
        peak = dict(idle)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for pid in process_tree(server.pid):
                    try:
                        rss, pss = memory_mib(pid)
                    except OSError:
                        continue
                    old = peak.get(pid, (0.0, 0.0))
                    peak[pid] = (max(old[0], rss), max(old[1], pss))
                time.sleep(0.05)

        texts = [" ".join([text] * repeat) for text in sentences(2048)]
        inputs = 0

        def client() -> None:
            nonlocal inputs
            with httpx.Client(base_url=url, timeout=120) as session:
                for _ in range(rounds):
                    answer = session.post("/v1/embeddings", json={"model": "m", "input": texts})
                    answer.raise_for_status()
                    inputs += len(texts)

        sampler = threading.Thread(target=sample)
        sampler.start()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
        print(
            f"workers={workers}: {inputs} inputs ({repeat}x a sentence each) from {clients} clients x {rounds} "
            f"requests in {elapsed:.1f} s = {inputs / elapsed:.0f} inputs/s (load generator on the same machine)"
        )
        print(f"  {'pid':>8} {'role':<10} {'idle RSS':>9} {'idle PSS':>9} {'peak RSS':>9} {'peak PSS':>9}  (MiB)")
        for pid in sorted(peak):
            role = role_of(pid, server.pid)
            i_rss, i_pss = idle.get(pid, (0.0, 0.0))
            p_rss, p_pss = peak[pid]
            print(f"  {pid:>8} {role:<10} {i_rss:>9.0f} {i_pss:>9.0f} {p_rss:>9.0f} {p_pss:>9.0f}")
        idle_total, peak_total = sum(p for _, p in idle.values()), sum(p for _, p in peak.values())
        print(f"  total PSS idle {idle_total:.0f} MiB, sum of peaks {peak_total:.0f} MiB")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter of the runtime environment")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=4, help="requests per client")
    parser.add_argument("--repeat", type=int, default=1, help="each input is a sentence repeated this often")
    args = parser.parse_args()
    for workers in args.workers:
        measure(args.python, args.model_dir.resolve(), workers, args.clients, args.rounds, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
