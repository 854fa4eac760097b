"""Print the benchmark JSON as the Markdown tables of docs/performance.md.

.venv/bin/python -m loadtests.tables --results results
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def encoder_tables(data: dict[str, Any]) -> list[str]:
    pick = {(c["corpus"], c["call_size"], c["system"]): c for c in data["cells"]}
    lines = [
        "| corpus | call | ours texts/s | model2vec | tokenize only | ours tokens/s | ours / model2vec "
        "| ours / tokenize | per CPU-s: ours / model2vec | ours / tokenize |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for corpus, size in dict.fromkeys((c["corpus"], c["call_size"]) for c in data["cells"]):
        ours, m2v, tok = (pick[(corpus, size, s)] for s in ("ours", "model2vec", "tokenize"))
        lines.append(
            f"| {corpus} | {size} | {ours['texts_per_s']:,.0f} | {m2v['texts_per_s']:,.0f} | {tok['texts_per_s']:,.0f} "
            f"| {ours['tokens_per_s']:,.0f} | {ours['texts_per_s'] / m2v['texts_per_s']:.2f} "
            f"| {ours['texts_per_s'] / tok['texts_per_s']:.2f} "
            f"| {_cpu_ratio(ours, m2v)} | {_cpu_ratio(ours, tok)} |"
        )
    return lines


def _cpu_ratio(a: dict[str, Any], b: dict[str, Any]) -> str:
    if "texts_per_cpu_s" not in a:  # results written before CPU time was recorded
        return "n/a"
    return f"{a['texts_per_cpu_s'] / b['texts_per_cpu_s']:.2f}"


def target_lines(targets: list[dict[str, Any]]) -> list[str]:
    lines = ["| target | measured | bar | |", "|---|---:|---:|---|"]
    for t in targets:
        extra = f" (per CPU-s {t['value_per_cpu_second']:.2f})" if "value_per_cpu_second" in t else ""
        lines.append(
            f"| {t['target']} | {t['value']:.2f}{extra} | {t['bar']} | {'met' if t['met'] else '**missed**'} |"
        )
    return lines


def http_tables(data: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for run in data["runs"]:
        lines += [
            "",
            f"{run['workers']} worker(s) per server:",
            "",
            "| server | format | inputs | conc. | requests/s | inputs/s | p50 ms | p95 ms | p99 ms | non-2xx "
            "| wrk CPU | server CPU |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in run["rows"]:
            lines.append(
                f"| {r['server']} | {r['format']} | {r['inputs']} | {r['concurrency']} | {r['requests_per_s']:,.0f} "
                f"| {r['inputs_per_s']:,.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} "
                f"| {r['non_2xx']} | {r['generator_cpu']:.2f} | {r['server_cpu']:.2f} |"
            )
        for half in run.get("half_peak", []):
            lines.append(
                f"\nHalf of peak ({half['inputs']} inputs, base64, hey with 64 clients at "
                f"{half['peak_requests_per_s'] / 2:,.0f} requests/s): got {half['requests_per_s']:,.0f} requests/s, "
                f"p50 {half['p50_ms']:.1f} ms, p95 {half['p95_ms']:.1f} ms, p99 {half['p99_ms']:.1f} ms, "
                f"p99/p50 {half['p99_over_p50']}, non-200 {half['non_2xx']}, hey CPU {half['generator_cpu']}."
            )
        lines.append(f"\nIn-process encoder on the same 16-sentence calls: {run['in_process_16']:,.0f} texts/s.")
    return lines


def memory_lines(data: dict[str, Any]) -> list[str]:
    lines = ["| workers | process | RSS MB | PSS MB | private MB |", "|---:|---|---:|---:|---:|"]
    last = {start["workers"]: start for start in data["starts"]}
    for workers, start in sorted(last.items()):
        for p in start["processes"]:
            a = p["after_load"]
            private = a.get("private_dirty_mb", 0) + a.get("private_clean_mb", 0)
            lines.append(f"| {workers} | {p['role']} | {a['rss_mb']:.1f} | {a['pss_mb']:.1f} | {private:.1f} |")
        lines.append(f"| {workers} | **all** | | **{start['total_pss_mb']:.1f}** | |")
    ready = [f"{s['workers']}w{' (cold)' if s['cold'] else ''}: {s['ready_after_s']:.2f} s" for s in data["starts"]]
    lines.append("\nTime from process start to 200 on /ready: " + ", ".join(ready) + ".")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    for name, render in (("encoder.json", encoder_tables), ("http.json", http_tables), ("memory.json", memory_lines)):
        path = args.results / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        print(f"\n## {name} ({data['machine']['date']}, load average {data['machine']['load_average']})\n")
        print(f"`{data['command']}`\n")
        print("\n".join(render(data)))
        if data.get("targets"):
            print()
            print("\n".join(target_lines(data["targets"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
