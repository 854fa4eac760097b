"""``python -m distill_job.evaluate MODEL_DIR...``: score static models on the development data.

Prints a Markdown table (one row per system, scores on a 0-100 scale) and optionally saves
JSON. ``--teacher`` adds the teacher's own scores and ``--compare-model2vec`` adds
model2vec 0.10's distill of the same teacher at the same width, both measured in this run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from distill_job.evaluation import embedders, report, tasks
from distill_job.evaluation.datasets import DataError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distill_job.evaluate",
        description="Score static models on STS-B dev, STS12 train, Banking77 (held-out part of train), "
        "Amazon counterfactual valid and SciFact train, against the teacher and model2vec.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("models", nargs="+", type=Path, metavar="MODEL_DIR", help="model directories to score")
    parser.add_argument(
        "--teacher",
        nargs="?",
        const="auto",
        default=None,
        help="also score the teacher (a sentence-transformers directory; with no value, the one recorded in "
        "the first model's config)",
    )
    parser.add_argument(
        "--compare-model2vec",
        action="store_true",
        help="also score model2vec's distill of the same teacher at the same dimensions",
    )
    parser.add_argument(
        "--model2vec-dir",
        type=Path,
        default=None,
        help="where model2vec's distill is kept: reused if it exists, else made there (default: a temporary dir)",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the shared development data")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--limit", type=int, default=None, help="keep only N items per dataset (quick runs)")
    parser.add_argument(
        "--experiments", type=int, default=tasks.DEFAULT_EXPERIMENTS, help="seeded classification experiments"
    )
    parser.add_argument(
        "--teacher-cache", type=Path, default=None, help="keep the teacher's embeddings here between runs"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    for model_dir in args.models:
        if not (model_dir / "config.json").is_file():
            print(f"error: {model_dir} is not a model directory (no config.json)", file=sys.stderr)
            return 1
    if args.limit is not None and args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 1
    try:
        suite = tasks.load_tasks(args.data_dir, args.limit, args.experiments)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="model2vec-") as scratch:
        systems = _systems(args, Path(scratch))
        results = []
        for system in systems:
            started = time.perf_counter()
            scores = {task.name: task.score(system.embed) for task in suite}
            result = report.Result(system.name, system.kind, system.path, scores, time.perf_counter() - started)
            print(f"scored {system.name} in {result.seconds:.0f} s", file=sys.stderr)
            results.append(result)

    print(report.table(results, suite))
    if args.output is not None:
        settings = {
            "data_dir": str(args.data_dir),
            "limit": args.limit,
            "experiments": args.experiments,
            "command": "python -m distill_job.evaluate " + " ".join(sys.argv[1:] if argv is None else argv),
        }
        report.write_json(args.output, report.payload(results, suite, settings))
    return 0


def _systems(args: argparse.Namespace, scratch: Path) -> list[embedders.System]:
    """Teacher first, then model2vec, then the models asked for, in that order."""
    systems: list[embedders.System] = []
    teacher = embedders.resolve_teacher(args.teacher or "auto", args.models[0])
    if args.teacher is not None:
        systems.append(embedders.teacher_system(teacher, args.teacher_cache))
    if args.compare_model2vec:
        m2v_dir = args.model2vec_dir or scratch / "model2vec"
        if not (m2v_dir / "model.safetensors").is_file():
            dims = embedders.static_system(args.models[0]).embed(["probe"]).shape[1]
            embedders.distill_with_model2vec(teacher, dims, m2v_dir)
        systems.append(embedders.model2vec_system(m2v_dir))
    systems.extend(embedders.static_system(model_dir) for model_dir in args.models)
    return systems


if __name__ == "__main__":
    sys.exit(main())
