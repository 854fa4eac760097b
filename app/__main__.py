"""``python -m app``: serve the model named by the EMBED_* environment variables.

With ``EMBED_WORKERS`` > 1, uvicorn starts that many processes; each memory-maps the same
table file, so the page cache holds one copy for all of them. Metrics are then kept in
prometheus-client's multiprocess mode, in a fresh directory set up here before any
worker imports prometheus-client, and removed on exit.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.model_format import StaticModel
    from app.settings import Settings

USAGE = """usage: python -m app

Serves the OpenAI-compatible embeddings API. Every setting is an environment variable
(EMBED_MODEL_DIR, EMBED_HOST, EMBED_PORT, EMBED_WORKERS, ...); see docs/api.md, "Configuration".
"""


def main(argv: list[str]) -> int:
    if argv:
        print(USAGE, file=sys.stderr if argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv[0] in ("-h", "--help") else 2

    from app.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from app.lifecycle import exit_zero_on_sigterm
    from app.log_config import configure_logging
    from app.model_format import ModelFormatError

    log_config = configure_logging(settings.log_level)
    try:  # fail here with one line, not with a traceback from every worker
        model = _checked_model(settings)
    except ModelFormatError as exc:
        print(f"error: cannot serve the model: {exc}", file=sys.stderr)
        return 1

    owned_metrics_dir = _prepare_metrics_dir(settings.workers)
    exit_zero_on_sigterm()
    try:
        import uvicorn

        options = {
            "host": settings.host,
            "port": settings.port,
            "log_level": settings.log_level,
            "access_log": settings.access_log,
            "log_config": log_config,
        }
        if model is not None:  # one worker: serve in this process the model just checked
            from app.main import create_app

            uvicorn.run(create_app(settings, model), **options)
        else:
            uvicorn.run("app.main:create_app", factory=True, workers=settings.workers, **options)
    finally:
        if owned_metrics_dir is not None:
            shutil.rmtree(owned_metrics_dir, ignore_errors=True)
    return 0


def _checked_model(settings: Settings) -> StaticModel | None:
    """The checked model to serve with one worker; with several, None after a forked child checked it.

    The supervisor of several workers never serves, so it must not hold a copy of the
    model and encoder for its whole life (about 50 MB of private memory).
    """
    from app.lifecycle import preflight
    from app.model_format import ModelFormatError

    if settings.workers == 1:
        return preflight(settings)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        problem = pool.apply(_preflight_problem, (settings,))
    if problem is not None:
        raise ModelFormatError(problem)
    return None


def _preflight_problem(settings: Settings) -> str | None:
    from app.lifecycle import preflight
    from app.model_format import ModelFormatError

    try:
        preflight(settings)
    except ModelFormatError as exc:
        return str(exc)
    return None


def _prepare_metrics_dir(workers: int) -> Path | None:
    """Multiprocess metrics need an empty directory shared by the workers; return it if we made it."""
    existing = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if existing:  # the operator's directory: clear stale values from an earlier run
        directory = Path(existing)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        return None
    if workers <= 1:
        return None
    directory = Path(tempfile.mkdtemp(prefix="static-embed-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
