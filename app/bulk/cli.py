"""Command line: ``python -m app.bulk INPUT --output DIR [options]`` (``--ray`` for a cluster)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from app.bulk.options import (
    INPUT_FORMATS,
    OUTPUT_DTYPES,
    OUTPUT_FORMATS,
    BulkError,
    BulkOptions,
    default_delimiter,
    infer_input_format,
)

DEFAULT_MODEL_DIR = "models/default"
# Beyond a few encoder threads the GIL-held part of encoding (Python glue) is the limit.
MAX_DEFAULT_THREADS = 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.bulk",
        description=(
            "Embed a large file of texts with a static model and write the vectors with the input's ids. "
            "Streams (flat memory), uses every core, and resumes after an interruption: rerun the same command."
        ),
    )
    parser.add_argument("input", type=Path, help="JSONL, CSV/TSV or Parquet file (format from the suffix)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output directory (created)")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path(os.environ.get("EMBED_MODEL_DIR", DEFAULT_MODEL_DIR)),
        help="model directory (default: $EMBED_MODEL_DIR or models/default); with --ray, a path every node can read",
    )
    parser.add_argument("--input-format", choices=INPUT_FORMATS, help="override the format implied by the suffix")
    parser.add_argument("--text-field", default="text", help="field or column holding the text (default: text)")
    parser.add_argument("--id-field", default="id", help="field or column holding the id (default: id)")
    parser.add_argument("--delimiter", help="CSV delimiter (default: tab for .tsv, comma otherwise)")
    parser.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        default="parquet",
        help="parquet: part files with columns id, vector; npy: vectors.npy plus ids.txt (default: parquet)",
    )
    parser.add_argument("--dimensions", type=int, help="keep the first N dimensions, renormalized (default: all)")
    parser.add_argument("--dtype", choices=OUTPUT_DTYPES, default="float32", help="vector type (default: float32)")
    parser.add_argument("--batch-size", type=int, default=4096, help="texts per encoder call (default: 4096)")
    parser.add_argument(
        "--chunk-size", type=int, default=20_000, help="rows per output part, the unit of resume (default: 20000)"
    )
    parser.add_argument(
        "--threads", type=int, help=f"encoder threads (default: one per core, at most {MAX_DEFAULT_THREADS})"
    )
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip malformed rows instead of stopping, and list them in OUTPUT/_bad_rows.jsonl",
    )
    parser.add_argument("--overwrite", action="store_true", help="discard a previous run in OUTPUT instead of resuming")
    parser.add_argument("--no-progress", action="store_true", help="do not print the progress line")
    ray = parser.add_argument_group("Ray (pip install 'static-embed[ray]')")
    ray.add_argument("--ray", action="store_true", help="run on Ray Data instead of this machine's threads")
    ray.add_argument(
        "--ray-address", help="cluster to join, e.g. auto or ray://head:10001 (default: $RAY_ADDRESS or a local Ray)"
    )
    ray.add_argument("--ray-workers", type=int, help="encoder actors, one model copy each (default: one per CPU)")
    return parser


def options_from_args(args: argparse.Namespace) -> BulkOptions:
    if args.threads is None:
        from app.bulk.local_job import available_cores

        args.threads = min(available_cores(), MAX_DEFAULT_THREADS)
    for name in ("batch_size", "chunk_size", "threads"):
        if getattr(args, name) < 1:
            raise BulkError(f"--{name.replace('_', '-')} must be at least 1")
    if args.dimensions is not None and args.dimensions < 1:
        raise BulkError("--dimensions must be at least 1")
    input_format = args.input_format or infer_input_format(args.input)
    delimiter = args.delimiter if args.delimiter is not None else default_delimiter(args.input)
    if delimiter == "\\t":
        delimiter = "\t"
    if len(delimiter) != 1:
        raise BulkError(f"--delimiter must be one character, got {delimiter!r}")
    return BulkOptions(
        input=args.input,
        output=args.output,
        model_dir=args.model_dir,
        input_format=input_format,
        text_field=args.text_field,
        id_field=args.id_field,
        delimiter=delimiter,
        output_format=args.output_format,
        dimensions=args.dimensions,
        dtype=args.dtype,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        threads=args.threads,
        skip_bad_rows=args.skip_bad_rows,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = options_from_args(args)
        if args.ray:
            from app.bulk.ray_job import run_on_ray

            summary = run_on_ray(options, address=args.ray_address, workers=args.ray_workers)
        else:
            from app.bulk.local_job import run_local

            summary = run_local(options)
    except BulkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"interrupted; finished chunks are kept in {args.output}: rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    if summary.already_complete:
        print(f"{args.output} is already complete ({summary.rows:,} rows); nothing to do", file=sys.stderr)
        return 0
    message = f"embedded {summary.rows:,} rows into {args.output} in {summary.seconds:.1f} s"
    if summary.bad_rows:
        message += f"; skipped {summary.bad_rows:,} bad rows, listed in {summary.bad_rows_report}"
    print(message, file=sys.stderr)
    return 0
