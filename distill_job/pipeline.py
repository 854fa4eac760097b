"""The distillation pipeline: teacher -> token pass -> PCA -> weighting -> model directory."""

from __future__ import annotations

import datetime as dt
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from app.encoder import Encoder
from app.model_format import METADATA_KEY, TABLE_FILE, StaticModel, write_model
from distill_job import corpus, reduction, refinement, sentence_targets, storage, token_frequencies, token_pass
from distill_job.errors import DistillError
from distill_job.teacher import Teacher, load_teacher
from distill_job.vocabulary import (
    DEFAULT_REMOVE_PATTERN,
    Vocabulary,
    build_vocabulary,
    extend_vocabulary,
    supports_extension,
)

FORMAT_VERSION = 1
TOKEN_FREQUENCY_SOURCES = ("zipf", "wordfreq")


@dataclass(frozen=True)
class DistillOptions:
    teacher: str | None = None  # None: the bundled all-MiniLM-L6-v2
    output: Path = Path("models/default")
    pca_dims: int = 256
    sif_coefficient: float | None = reduction.DEFAULT_SIF_COEFFICIENT
    dtype: str = "float16"
    # Measured defaults (docs/quality.md): each beat the plain Model2Vec recipe on the dev data.
    pooling: str = "inner"
    normalize_tokens: bool = True
    pca_drop_top: int = 0
    pca_whiten: float = 0.3
    extend_vocab: int = 25000
    token_frequencies: str = "zipf"
    remove_tokens: str | None = DEFAULT_REMOVE_PATTERN
    refine_corpus: str | None = corpus.WORDNET  # "wordnet", a text file, or None for no refinement
    refine_max_texts: int | None = None
    refine_epochs: int = refinement.RefineSettings.epochs
    refine_cache: Path | None = None
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
    refinement: refinement.RefineReport | None = None


def check_options(options: DistillOptions) -> None:
    if options.pca_dims < 1:
        raise DistillError(f"--pca-dims must be at least 1, got {options.pca_dims}")
    if options.sif_coefficient is not None and not 0 < options.sif_coefficient < 1:
        raise DistillError(f"--sif-coefficient must be between 0 and 1, got {options.sif_coefficient}")
    if options.pca_drop_top < 0:
        raise DistillError(f"--pca-drop-top must be 0 or more, got {options.pca_drop_top}")
    if not 0 <= options.pca_whiten <= 1:
        raise DistillError(f"--pca-whiten must be between 0 and 1, got {options.pca_whiten}")
    if options.extend_vocab < 0:
        raise DistillError(f"--extend-vocab must be 0 or more, got {options.extend_vocab}")
    if options.refine_max_texts is not None and options.refine_max_texts < 1:
        raise DistillError(f"--refine-max-texts must be at least 1, got {options.refine_max_texts}")
    if options.refine_epochs < 1:
        raise DistillError(f"--refine-epochs must be at least 1, got {options.refine_epochs}")
    if options.token_frequencies not in TOKEN_FREQUENCY_SOURCES:
        raise DistillError(f"--token-frequencies must be one of {', '.join(TOKEN_FREQUENCY_SOURCES)}")
    if options.dtype not in storage.DTYPES:
        raise DistillError(f"--dtype must be one of {', '.join(storage.DTYPES)}")
    if options.output.exists() and not options.force:
        raise DistillError(f"output directory {options.output} already exists; pass --force to replace it")


def distill(options: DistillOptions) -> DistillSummary:
    """Distill the teacher named in ``options`` into ``options.output``."""
    started = time.perf_counter()
    check_options(options)
    # Read the corpus first: a bad corpus path must fail before minutes of teacher work.
    texts = corpus.load_corpus(options.refine_corpus, options.refine_max_texts) if options.refine_corpus else []
    teacher = load_teacher(options.teacher)
    if options.pca_dims + options.pca_drop_top > teacher.hidden_size:
        skipped = f" with --pca-drop-top {options.pca_drop_top}" if options.pca_drop_top else ""
        raise DistillError(
            f"--pca-dims {options.pca_dims} is larger than the teacher's width {teacher.hidden_size}{skipped}"
        )
    vocabulary = build_vocabulary(teacher.tokenizer.backend_tokenizer.to_str(), options.remove_tokens)
    needs_words = options.extend_vocab > 0 or options.token_frequencies == "wordfreq"
    word_frequencies = token_frequencies.english_word_frequencies() if needs_words else {}
    if options.extend_vocab > 0:
        vocabulary = _extend(vocabulary, teacher, word_frequencies, options.extend_vocab)
    if options.pca_dims + options.pca_drop_top > len(vocabulary.tokens):
        raise DistillError(f"--pca-dims {options.pca_dims} is larger than the vocabulary ({len(vocabulary.tokens)})")

    raw = token_pass.embed_tokens(
        teacher.model,
        teacher.tokenizer,
        vocabulary.teacher_ids,
        pooling=options.pooling,
        batch_size=options.batch_size,
        progress=options.progress,
    )
    if vocabulary.added_words:
        pieces = _teacher_pieces(teacher, vocabulary.added_words)
        words = token_pass.embed_sequences(
            teacher.model, teacher.tokenizer, pieces, options.pooling, options.batch_size, options.progress
        )
        raw = np.concatenate([raw, words])
    if options.normalize_tokens:
        raw = reduction.unit_rows(raw)
    table = reduction.fit_pca(raw, options.pca_dims, options.pca_drop_top, options.pca_whiten)
    if options.sif_coefficient is not None:
        probabilities = reduction.zipf_probabilities(len(table))
        if options.token_frequencies == "wordfreq":
            probabilities = token_frequencies.token_probabilities(vocabulary.tokenizer, word_frequencies, probabilities)
        table *= reduction.sif_weights(probabilities, options.sif_coefficient)[:, None]
    report = None
    if texts:
        table, report = _refine(table, teacher, vocabulary, texts, options)
    stored, row_scales = storage.to_stored_dtype(table, options.dtype)

    config = _config(teacher, options, len(vocabulary.tokens), report)
    _write_atomically(options.output, options.force, stored, vocabulary.tokenizer, config, row_scales)
    return DistillSummary(
        output=options.output,
        teacher=teacher.name,
        vocab_size=len(vocabulary.tokens),
        dimensions=options.pca_dims,
        table_bytes=(options.output / TABLE_FILE).stat().st_size,
        seconds=time.perf_counter() - started,
        refinement=report,
    )


def _refine(
    table: np.ndarray, teacher: Teacher, vocabulary: Vocabulary, texts: list[str], options: DistillOptions
) -> tuple[np.ndarray, refinement.RefineReport]:
    """Fit the table to the teacher's embeddings of the corpus, tokenized as the service will."""
    targets = sentence_targets.teacher_embeddings(
        teacher, texts, cache_dir=options.refine_cache, progress=options.progress
    )
    served = Encoder(StaticModel(path=Path("."), embeddings=table, row_scales=None, tokenizer=vocabulary.tokenizer))
    settings = refinement.RefineSettings(epochs=options.refine_epochs)
    tokens = served.tokenize(texts)
    if served.unk_id is not None:
        tokens = tokens.without(served.unk_id)  # as the service drops it when it pools
    return refinement.refine_table(table, tokens, targets, settings, options.progress)


def _config(teacher: Teacher, options: DistillOptions, vocab_size: int, report: refinement.RefineReport | None) -> dict:
    """model2vec's config keys, plus our metadata block that model2vec ignores."""
    skipped = {"output", "force", "progress", "teacher", "refine_cache"}
    parameters = {k: v for k, v in asdict(options).items() if k not in skipped}
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
            "token_frequencies": _frequency_source(options),
            "vocab_size": vocab_size,
            "refinement": _refinement_record(options, report),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def _refinement_record(options: DistillOptions, report: refinement.RefineReport | None) -> dict | None:
    if report is None:
        return None
    source = options.refine_corpus
    return {
        "corpus": "WordNet 3.0 glosses and examples (Princeton University)" if source == corpus.WORDNET else source,
        "texts": report.texts,
        "epochs_run": report.epochs_run,
        "best_epoch": report.best_epoch,
        "validation_cosine": report.validation_cosine,
    }


def _frequency_source(options: DistillOptions) -> str | None:
    if options.sif_coefficient is None:
        return None
    if options.token_frequencies == "wordfreq":
        return f"wordfreq en {token_frequencies.WORDLIST} (zipf-rank for tokens no word reaches)"
    return "zipf-rank"


def _extend(vocabulary: Vocabulary, teacher: Teacher, frequencies: dict[str, float], count: int) -> Vocabulary:
    """Add the most frequent English words as whole tokens (WordPiece teachers only)."""
    if not supports_extension(vocabulary):
        print("note: --extend-vocab skipped: only WordPiece tokenizers can be extended", file=sys.stderr)
        return vocabulary
    limit = int(getattr(teacher.model.config, "max_position_embeddings", 512)) - 4
    tokenizer = _unpadded(teacher)

    def candidates() -> Iterator[str]:
        for word in token_frequencies.top_words(frequencies, len(frequencies)):
            # wordfreq folds digits to 0 ("0000"); such forms never occur in real text.
            if not any(ch.isdigit() for ch in word) and len(tokenizer.encode(word, add_special_tokens=False)) < limit:
                yield word

    return extend_vocabulary(vocabulary, candidates(), count)


def _unpadded(teacher: Teacher) -> Tokenizer:
    tokenizer = Tokenizer.from_str(teacher.tokenizer.backend_tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _teacher_pieces(teacher: Teacher, words: tuple[str, ...]) -> list[list[int]]:
    """Each added word as the teacher's own tokenizer splits it (without special tokens)."""
    return [e.ids for e in _unpadded(teacher).encode_batch(list(words), add_special_tokens=False)]


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
