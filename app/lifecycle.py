"""Process start and stop: refuse a bad model with one line, and exit 0 after a graceful SIGTERM.

``preflight`` runs in ``python -m app`` before uvicorn starts, so a model that cannot be
served stops the process with one clear line (no traceback, nothing listening) instead of
failing in every worker. Besides what ``load_model`` checks (files, header, shape, dtype,
row count, optional SHA-256), it scans the whole table for NaN or infinity, which a
corrupted data region produces and which would otherwise be served as ``null`` vectors,
and runs one test encode.

On SIGTERM uvicorn stops accepting connections, lets every accepted request finish, runs
the app's shutdown, then re-raises the signal so the process dies of it. A drained,
orderly shutdown is a success, so ``exit_zero_on_sigterm`` turns that final signal into
exit status 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import signal
import sys
from types import FrameType

import numpy as np

from app.encoder import Encoder
from app.model_format import ModelFormatError, StaticModel, load_model
from app.settings import Settings

_SCAN_ROWS = 1 << 14  # rows checked per step: bounded memory whatever the table size


def preflight(settings: Settings) -> Encoder:
    """Load and check the model as the server will use it; raise ModelFormatError with one line if unusable.

    Returns the checked encoder, for the app to serve (not built a second time).
    """
    try:
        model = load_model(settings.model_dir, verify_checksum=settings.verify_checksum)
        _check_finite(model)
        encoder = Encoder(model)
        check_test_encode(encoder)
    except ModelFormatError:
        raise
    except Exception as exc:  # anything else (I/O, memory) still gets one line
        first_line = (str(exc).splitlines() or [""])[0]
        raise ModelFormatError(f"{settings.model_dir}: {type(exc).__name__}: {first_line}") from exc
    return encoder


def _check_finite(model: StaticModel) -> None:
    table = model.embeddings
    for start in range(0, model.vocab_size, _SCAN_ROWS):
        rows = np.asarray(table[start : start + _SCAN_ROWS], dtype=np.float32)
        if not np.isfinite(rows).all():
            bad = start + int(np.argmax(~np.isfinite(rows).all(axis=1)))
            raise ModelFormatError(
                f"{model.path}: the table holds NaN or infinite values (first in row {bad}); the file is corrupted"
            )
    if model.row_scales is not None and not np.isfinite(model.row_scales).all():
        raise ModelFormatError(f"{model.path}: the per-row scales hold NaN or infinite values; the file is corrupted")


def check_test_encode(encoder: Encoder) -> None:
    """Encode one sentence: a finite vector of norm 1 (or 0 if no token is known), or the model is unusable."""
    # Tokenized on this thread: a supervisor that forks workers must not have started
    # the tokenizer's thread pool (a forked child could not use it).
    vector = encoder.embed(encoder.tokenize(["The quick brown fox jumps over the lazy dog."], parallel=False))
    norm = float(np.linalg.norm(vector))
    if vector.shape != (1, encoder.dimensions) or not (abs(norm - 1.0) < 1e-3 or norm == 0.0):
        raise ModelFormatError(f"{encoder.model.path}: a test encode gave shape {vector.shape} and norm {norm}")


def release_startup_memory() -> None:
    """Give back to the system the heap that loading freed but glibc keeps (before serving or forking).

    Loading the tokenizer, checking and converting the table free ~15 MB of heap, and
    after the large blocks of the startup glibc no longer trims on its own; without this
    those pages count in every worker's RSS for its whole life (docs/performance.md,
    "Memory"). A no-op on a C library without ``malloc_trim``.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _exit_zero(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def exit_zero_on_sigterm() -> None:
    """Before uvicorn runs: a SIGTERM ends the process with status 0 (uvicorn drains first, then re-raises it)."""
    signal.signal(signal.SIGTERM, _exit_zero)
