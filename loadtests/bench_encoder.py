"""In-process encoder benchmark: ours vs model2vec's ``StaticModel.encode`` vs tokenization alone.

All three run in this process on the same model directory and the same texts, by call
size (1, 16, 128 texts, the whole corpus in one call) and by text length (queries,
sentences, abstracts, 10,000-token texts). The peers take turns in short slots, several
rounds, and each figure is the median of its rounds, so that load from other processes
on a shared machine hits all of them alike; compare them as ratios.

    .venv/bin/python -m loadtests.bench_encoder --model-dir /tmp/perf-default

prints a table and writes JSON (default results/encoder.json).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "true"

import numpy as np
from tokenizers import Tokenizer

from app.encoder import Encoder
from app.model_format import TOKENIZER_FILE, load_model
from loadtests import corpora
from loadtests.report import machine_facts, print_targets, save_results

SYSTEMS = ("ours", "model2vec", "tokenize")
CALL_SIZES: tuple[int | None, ...] = (1, 16, 128, None)  # None: the whole corpus in one call


def size_label(size: int | None) -> str:
    return "all" if size is None else str(size)


def make_systems(model_dir: Path) -> dict[str, Callable[[list[str]], object]]:
    from model2vec import StaticModel

    encoder = Encoder(load_model(model_dir))
    reference = StaticModel.from_pretrained(str(model_dir))
    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))

    def model2vec_encode(texts: list[str]) -> object:
        vectors = reference.encode(texts)
        # model2vec turns tokenizer threads off process-wide for calls over 10,000 texts; undo it.
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        return vectors

    return {
        "ours": encoder.encode,
        "model2vec": model2vec_encode,
        "tokenize": lambda texts: tokenizer.encode_batch_fast(texts, add_special_tokens=False),
    }


def check_agreement(systems: dict[str, Callable[[list[str]], Any]], texts: list[str]) -> float:
    """Smallest cosine between our vectors and model2vec's: both must compute the same thing."""
    ours = np.asarray(systems["ours"](texts), dtype=np.float64)
    theirs = np.asarray(systems["model2vec"](texts), dtype=np.float64)
    theirs /= np.maximum(np.linalg.norm(theirs, axis=1, keepdims=True), 1e-30)
    keep = np.linalg.norm(ours, axis=1) > 0
    return float((ours[keep] * theirs[keep]).sum(axis=1).min())


def run_slot(
    fn: Callable[[list[str]], object], calls: Sequence[list[str]], tokens: Sequence[int], start: int, seconds: float
) -> tuple[dict[str, float], int]:
    """Call ``fn`` on consecutive calls for about ``seconds`` (at least once)."""
    texts = token_count = done = 0
    index = start
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while True:
        fn(calls[index])
        texts += len(calls[index])
        token_count += tokens[index]
        done += 1
        index = (index + 1) % len(calls)
        wall = time.perf_counter() - wall0
        if wall >= seconds:
            break
    cpu = time.process_time() - cpu0
    slot = {
        "texts_per_s": texts / wall,
        "tokens_per_s": token_count / wall,
        "texts_per_cpu_s": texts / max(cpu, 1e-9),
        "calls": done,
        "cpu_per_wall": cpu / wall,
    }
    return slot, index


def bench_corpus(
    systems: dict[str, Callable[[list[str]], object]],
    texts: list[str],
    text_tokens: list[int],
    sizes: Sequence[int | None],
    seconds: float,
    rounds: int,
) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    for size in sizes:
        step = len(texts) if size is None else size
        calls = [texts[i : i + step] for i in range(0, len(texts), step)]
        if size is not None and len(calls[-1]) < step and len(calls) > 1:
            calls.pop()  # every call of the same size
        tokens = [sum(text_tokens[i * step : i * step + len(call)]) for i, call in enumerate(calls)]
        for fn in systems.values():  # warm up: first-call costs are not throughput
            fn(calls[0])
        slots: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
        position = dict.fromkeys(systems, 0)
        for _ in range(rounds):
            for name, fn in systems.items():
                slot, position[name] = run_slot(fn, calls, tokens, position[name], seconds)
                slots[name].append(slot)
        for name in systems:
            runs = slots[name]
            cells.append(
                {
                    "call_size": size_label(size),
                    "system": name,
                    "texts_per_s": statistics.median(r["texts_per_s"] for r in runs),
                    "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                    "texts_per_cpu_s": statistics.median(r["texts_per_cpu_s"] for r in runs),
                    "cpu_per_wall": statistics.median(r["cpu_per_wall"] for r in runs),
                    "rounds": [round(r["texts_per_s"], 1) for r in runs],
                }
            )
    return cells


def ratio(cells: list[dict[str, Any]], corpus: str, size: str, a: str, b: str, key: str = "texts_per_s") -> float:
    pick = {(c["corpus"], c["call_size"], c["system"]): c[key] for c in cells}
    return pick[(corpus, size, a)] / pick[(corpus, size, b)]


def targets(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 4's encoder targets, each as measured ratio against its bar."""
    present = {(c["corpus"], c["call_size"]) for c in cells}
    found: list[dict[str, Any]] = []

    def add(name: str, value: float, bar: float, per_cpu: float | None = None) -> None:
        found.append({"target": name, "value": round(value, 3), "bar": bar, "met": value >= bar})
        if per_cpu is not None:
            found[-1]["value_per_cpu_second"] = round(per_cpu, 3)

    def both(corpus: str, size: str, other: str) -> tuple[float, float]:
        wall = ratio(cells, corpus, size, "ours", other)
        return wall, ratio(cells, corpus, size, "ours", other, key="texts_per_cpu_s")

    for corpus in corpora.CORPORA:
        if (corpus, "all") in present:
            wall, cpu = both(corpus, "all", "tokenize")
            add(f"{corpus}, whole corpus: ours / tokenize", wall, 0.9, cpu)
            wall, cpu = both(corpus, "all", "model2vec")
            add(f"{corpus}, whole corpus: ours / model2vec", wall, 1.0, cpu)
        for size in ("1", "16"):
            if (corpus, size) in present:
                wall, cpu = both(corpus, size, "model2vec")
                add(f"{corpus}, calls of {size}: ours / model2vec", wall, 2.0, cpu)
    if ("long", "all") in present and ("sentences", "all") in present:
        pick = {(c["corpus"], c["call_size"], c["system"]): c["tokens_per_s"] for c in cells}
        value = pick[("long", "all", "ours")] / pick[("sentences", "all", "ours")]
        add("tokens/s, 10k-token texts / sentences (ours, whole corpus)", value, 0.75)
    return found


def print_table(cells: list[dict[str, Any]], facts: dict[str, Any]) -> None:
    print(f"\nencoder in-process ({facts['cpus']} CPUs, load average at start {facts['load_average']})")
    header = (
        f"{'corpus':10} {'call':>5} {'ours texts/s':>13} {'model2vec':>11} {'tokenize':>11} "
        f"{'ours tok/s':>11} {'ours/m2v':>9} {'ours/tok':>9} {'per CPU-s: ours/m2v':>20} {'ours/tok':>9}"
    )
    print(header)
    print("-" * len(header))
    pick = {(c["corpus"], c["call_size"], c["system"]): c for c in cells}
    for corpus, size in dict.fromkeys((c["corpus"], c["call_size"]) for c in cells):
        ours, m2v, tok = (pick[(corpus, size, name)] for name in SYSTEMS)
        print(
            f"{corpus:10} {size:>5} {ours['texts_per_s']:13,.0f} {m2v['texts_per_s']:11,.0f} "
            f"{tok['texts_per_s']:11,.0f} {ours['tokens_per_s']:11,.0f} "
            f"{ours['texts_per_s'] / m2v['texts_per_s']:9.2f} {ours['texts_per_s'] / tok['texts_per_s']:9.2f} "
            f"{ours['texts_per_cpu_s'] / m2v['texts_per_cpu_s']:20.2f} "
            f"{ours['texts_per_cpu_s'] / tok['texts_per_cpu_s']:9.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="model directory (model2vec loads it too)")
    parser.add_argument("--output", type=Path, default=Path("results/encoder.json"))
    parser.add_argument("--corpora", nargs="+", default=list(corpora.CORPORA), choices=corpora.CORPORA)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timed slot")
    parser.add_argument("--rounds", type=int, default=5, help="slots per system and cell; the median is kept")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N texts of each corpus (smoke runs)")
    args = parser.parse_args(argv)

    facts = machine_facts()
    systems = make_systems(args.model_dir)
    tokenizer = Tokenizer.from_file(str(args.model_dir / TOKENIZER_FILE))

    def count_tokens(texts: list[str]) -> list[int]:
        return [len(e.ids) for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    cells: list[dict[str, Any]] = []
    corpus_facts: dict[str, Any] = {}
    for name in args.corpora:
        texts = corpora.load(name, count_tokens, args.limit or None)
        text_tokens = count_tokens(texts)
        corpus_facts[name] = {
            "texts": len(texts),
            "mean_tokens": round(float(np.mean(text_tokens)), 1),
            "min_cosine_vs_model2vec": round(check_agreement(systems, texts[:2000]), 6),
        }
        print(f"{name}: {len(texts)} texts, {corpus_facts[name]['mean_tokens']} tokens on average", file=sys.stderr)
        for cell in bench_corpus(systems, texts, text_tokens, CALL_SIZES, args.seconds, args.rounds):
            cells.append({"corpus": name, **cell})

    print_table(cells, facts)
    found = targets(cells)
    print()
    print_targets(found)
    save_results(
        args.output,
        "encoder",
        argv,
        {
            "machine": facts,
            "settings": {"seconds": args.seconds, "rounds": args.rounds, "limit": args.limit},
            "corpora": corpus_facts,
            "cells": cells,
            "targets": found,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
