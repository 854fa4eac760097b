"""The distillation pipeline: teacher -> token pass -> PCA -> weighting -> model directory."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from app.model_format import METADATA_KEY, TABLE_FILE, write_model
from distill_job import reduction, storage, token_pass
from distill_job.errors import DistillError
from distill_job.teacher import Teacher, load_teacher
from distill_job.vocabulary import DEFAULT_REMOVE_PATTERN, build_vocabulary

FORMAT_VERSION = 1


@dataclass(frozen=True)
class DistillOptions:
    teacher: str | None = None  # None: the bundled all-MiniLM-L6-v2
    output: Path = Path("models/default")
    pca_dims: int = 256
    sif_coefficient: float | None = reduction.DEFAULT_SIF_COEFFICIENT
    dtype: str = "float16"
    pooling: str = "mean"
    remove_tokens: str | None = DEFAULT_REMOVE_PATTERN
    batch_size: int = 1024
    force: bool = False
    progress: bool = True


@dataclass(frozen=True)
class DistillSummary:
    output: Path
    teacher: str
    vocab_size: int
    dimensions: int
    table_bytes: int
    seconds: float


def check_options(options: DistillOptions) -> None:
    if options.pca_dims < 1:
        raise DistillError(f"--pca-dims must be at least 1, got {options.pca_dims}")
    if options.sif_coefficient is not None and not 0 < options.sif_coefficient < 1:
        raise DistillError(f"--sif-coefficient must be between 0 and 1, got {options.sif_coefficient}")
    if options.dtype not in storage.DTYPES:
        raise DistillError(f"--dtype must be one of {', '.join(storage.DTYPES)}")
    if options.output.exists() and not options.force:
        raise DistillError(f"output directory {options.output} already exists; pass --force to replace it")


def distill(options: DistillOptions) -> DistillSummary:
    """Distill the teacher named in ``options`` into ``options.output``."""
    started = time.perf_counter()
    check_options(options)
    teacher = load_teacher(options.teacher)
    if options.pca_dims > teacher.hidden_size:
        raise DistillError(f"--pca-dims {options.pca_dims} is larger than the teacher's width {teacher.hidden_size}")
    vocabulary = build_vocabulary(teacher.tokenizer.backend_tokenizer.to_str(), options.remove_tokens)
    if options.pca_dims > len(vocabulary.tokens):
        raise DistillError(f"--pca-dims {options.pca_dims} is larger than the vocabulary ({len(vocabulary.tokens)})")

    raw = token_pass.embed_tokens(
        teacher.model,
        teacher.tokenizer,
        vocabulary.teacher_ids,
        pooling=options.pooling,
        batch_size=options.batch_size,
        progress=options.progress,
    )
    table = reduction.fit_pca(raw, options.pca_dims)
    if options.sif_coefficient is not None:
        weights = reduction.sif_weights(reduction.zipf_probabilities(len(table)), options.sif_coefficient)
        table *= weights[:, None]
    stored, row_scales = storage.to_stored_dtype(table, options.dtype)

    config = _config(teacher, options, len(vocabulary.tokens))
    _write_atomically(options.output, options.force, stored, vocabulary.tokenizer, config, row_scales)
    return DistillSummary(
        output=options.output,
        teacher=teacher.name,
        vocab_size=len(vocabulary.tokens),
        dimensions=options.pca_dims,
        table_bytes=(options.output / TABLE_FILE).stat().st_size,
        seconds=time.perf_counter() - started,
    )


def _config(teacher: Teacher, options: DistillOptions, vocab_size: int) -> dict:
    """model2vec's config keys, plus our metadata block that model2vec ignores."""
    parameters = {k: v for k, v in asdict(options).items() if k not in {"output", "force", "progress", "teacher"}}
    return {
        "model_type": "model2vec",
        "architectures": ["StaticModel"],
        "tokenizer_name": teacher.name,
        "apply_pca": options.pca_dims,
        "sif_coefficient": options.sif_coefficient,
        "seq_length": 1000000,
        "normalize": True,
        "pooling": options.pooling,
        "max_length": None,  # model2vec would otherwise cut texts at 512 tokens
        METADATA_KEY: {
            "format_version": FORMAT_VERSION,
            "name": _served_name(teacher.name),
            "teacher": teacher.name,
            "parameters": parameters,
            "token_frequencies": "zipf-rank" if options.sif_coefficient is not None else None,
            "vocab_size": vocab_size,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def _served_name(teacher_name: str) -> str:
    return "static-" + teacher_name.rstrip("/").split("/")[-1]


def _write_atomically(output: Path, force: bool, *args: object) -> None:
    """Write beside the target and rename, so a crash never leaves a half-written model."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        write_model(staging, *args)
        if output.exists() and force:
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
