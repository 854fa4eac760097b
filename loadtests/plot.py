"""Render the benchmark JSON as the PNG plots shown in docs/performance.md.

    .venv/bin/python -m loadtests.plot --results results --output docs/img

Reads encoder.json, http.json and memory.json (whichever exist) from ``--results``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"ours": "#1f77b4", "model2vec": "#ff7f0e", "tokenize": "#7f7f7f", "naive": "#d62728", "trivial": "#2ca02c"}
COLORS["infinity"] = "#9467bd"


def plot_encoder(data: dict[str, Any], output: Path) -> list[Path]:
    cells = data["cells"]
    corpora = list(dict.fromkeys(c["corpus"] for c in cells))
    sizes = list(dict.fromkeys(c["call_size"] for c in cells))
    systems = ["ours", "model2vec", "tokenize"]
    written = []
    for key, label, name in (
        ("texts_per_s", "texts/s", "encoder_texts_per_s.png"),
        ("tokens_per_s", "tokens/s", "encoder_tokens_per_s.png"),
    ):
        figure, axes = plt.subplots(1, len(corpora), figsize=(4 * len(corpora), 3.6), squeeze=False)
        for axis, corpus in zip(axes[0], corpora, strict=True):
            pick = {(c["call_size"], c["system"]): c[key] for c in cells if c["corpus"] == corpus}
            width = 0.27
            for offset, system in enumerate(systems):
                values = [pick.get((size, system), 0) for size in sizes]
                positions = [i + (offset - 1) * width for i in range(len(sizes))]
                axis.bar(positions, values, width, label=system, color=COLORS[system])
            axis.set_xticks(
                range(len(sizes)), [{"1": "1 text", "all": "whole corpus"}.get(s, f"{s} texts") for s in sizes]
            )
            axis.set_title(f"{corpus} ({data['corpora'][corpus]['mean_tokens']:.0f} tokens/text)")
            axis.set_yscale("log")
            axis.set_ylabel(f"{label} (log scale)")
            axis.tick_params(axis="x", labelsize=8)
        axes[0][0].legend()
        figure.suptitle(f"Encoder in-process, {label} by call size (higher is better)")
        figure.tight_layout()
        path = output / name
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def plot_http(data: dict[str, Any], output: Path) -> list[Path]:
    written = []
    for run in data["runs"]:
        workers = run["workers"]
        rows = run["rows"]
        figure, axes = plt.subplots(1, 3, figsize=(14, 3.8))
        for axis, inputs in zip(axes, (1, 16, 128), strict=True):
            for server in ("ours", "naive", "trivial", "infinity"):
                for fmt, style in (("base64", "-"), ("float", "--")):
                    chosen = [
                        r
                        for r in rows
                        if r["server"] == server
                        and r["format"] == fmt
                        and (r["inputs"] == inputs or (server == "trivial" and fmt == "float"))
                    ]
                    if not chosen:
                        continue
                    chosen.sort(key=lambda r: r["concurrency"])
                    axis.plot(
                        [r["concurrency"] for r in chosen],
                        [r["inputs_per_s"] if server != "trivial" else r["requests_per_s"] for r in chosen],
                        style,
                        marker="o",
                        color=COLORS[server],
                        label=f"{server} {fmt}" if server != "trivial" else "trivial (requests/s)",
                    )
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xlabel("concurrent connections")
            axis.set_ylabel("inputs/s (log)")
            axis.set_title(f"{inputs} input(s) per request")
        axes[0].legend(fontsize=7)
        figure.suptitle(f"HTTP throughput, {workers} worker(s) per server, wrk on loopback")
        figure.tight_layout()
        path = output / f"http_throughput_{workers}w.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)

        figure, axis = plt.subplots(figsize=(6, 3.8))
        for server in ("ours", "naive", "infinity"):
            chosen = sorted(
                (r for r in rows if r["server"] == server and r["format"] == "base64" and r["inputs"] == 16),
                key=lambda r: r["concurrency"],
            )
            if not chosen:
                continue
            concurrency = [r["concurrency"] for r in chosen]
            axis.plot(concurrency, [r["p50_ms"] for r in chosen], "-o", color=COLORS[server], label=f"{server} p50")
            axis.plot(concurrency, [r["p99_ms"] for r in chosen], ":o", color=COLORS[server], label=f"{server} p99")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("concurrent connections")
        axis.set_ylabel("latency, ms (log)")
        axis.set_title(f"Latency, 16 inputs per request, base64, {workers} worker(s)")
        axis.legend(fontsize=7)
        figure.tight_layout()
        path = output / f"http_latency_{workers}w.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def plot_memory(data: dict[str, Any], output: Path) -> list[Path]:
    last = {start["workers"]: start for start in data["starts"]}
    figure, axis = plt.subplots(figsize=(6, 3.6))
    labels, rss, pss = [], [], []
    for workers, start in sorted(last.items()):
        for process in start["processes"]:
            labels.append(f"{workers}w {process['role']}")
            rss.append(process["after_load"]["rss_mb"])
            pss.append(process["after_load"]["pss_mb"])
    positions = range(len(labels))
    axis.bar([p - 0.2 for p in positions], rss, 0.4, label="RSS")
    axis.bar([p + 0.2 for p in positions], pss, 0.4, label="PSS")
    axis.set_xticks(list(positions), labels, fontsize=8)
    axis.set_ylabel("MB")
    axis.set_title("Memory per process of our service after load")
    axis.legend()
    figure.tight_layout()
    path = output / "memory.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return [path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--output", type=Path, default=Path("docs/img"))
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, render in (("encoder.json", plot_encoder), ("http.json", plot_http), ("memory.json", plot_memory)):
        source = args.results / name
        if source.exists():
            written += render(json.loads(source.read_text()), args.output)
    for path in written:
        print(f"wrote {path}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
