"""``python -m app``: serve the model named by the EMBED_* environment variables.

The model is loaded and checked, and the app built, before anything listens, so a model
that cannot be served stops the process with one line. With ``EMBED_WORKERS`` > 1 this
process then forks that many workers, each running uvicorn on the socket bound here, and
only supervises them (forwarding SIGTERM/SIGINT, replacing a worker that dies). Forking
after loading shares, copy-on-write, everything loaded so far between the workers:
the imported modules (FastAPI, pydantic, numpy, ...), the tokenizers and the app. The
table itself is a memory map, shared through the page cache. uvicorn's own ``workers``
option would start fresh interpreters that each import and load everything again
(about 35 MB more per worker; docs/performance.md, "Memory"). Metrics are then kept in
prometheus-client's multiprocess mode, in a fresh directory set up here before
prometheus-client is imported, and removed on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn

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
    from app.lifecycle import exit_zero_on_sigterm, preflight, release_startup_memory
    from app.log_config import configure_logging
    from app.model_format import ModelFormatError

    log_config = configure_logging(settings.log_level)
    try:  # fail here with one line, not with a traceback from every worker
        encoder = preflight(settings)
    except ModelFormatError as exc:
        print(f"error: cannot serve the model: {exc}", file=sys.stderr)
        return 1

    owned_metrics_dir = _prepare_metrics_dir(settings.workers)  # before app.main imports prometheus-client
    exit_zero_on_sigterm()
    try:
        import uvicorn

        from app.main import create_app

        app = create_app(settings, encoder)
        del encoder
        release_startup_memory()  # before forking: every worker starts from the trimmed heap
        options = {
            "host": settings.host,
            "port": settings.port,
            "log_level": settings.log_level,
            "access_log": settings.access_log,
            "log_config": log_config,
            "ws": "none",  # no WebSocket routes: the websockets package is not imported (~1 MB per worker)
        }
        if settings.workers == 1:
            uvicorn.run(app, **options)
        else:
            _supervise_forked_workers(uvicorn.Config(app, **options), settings.workers)
    finally:
        if owned_metrics_dir is not None:
            shutil.rmtree(owned_metrics_dir, ignore_errors=True)
    return 0


def _supervise_forked_workers(config: uvicorn.Config, workers: int) -> None:
    """Fork ``workers`` uvicorn servers sharing one listening socket; return once all have exited."""
    import gc
    import logging
    import signal
    import time

    import uvicorn

    from app.lifecycle import exit_zero_on_sigterm

    logger = logging.getLogger("app")
    config.load()  # the ASGI wrappers and protocol classes, shared by the workers too
    sock = config.bind_socket()
    children: set[int] = set()
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # each drains its requests, then exits

    def start_worker() -> None:
        gc.freeze()  # objects loaded so far stay untouched by the workers' garbage collection: shared pages
        pid = os.fork()
        if pid:
            children.add(pid)
            return
        status = 1
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            exit_zero_on_sigterm()
            uvicorn.Server(config).run(sockets=[sock])
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 0
        except BaseException:
            logger.exception("worker %d failed", os.getpid())
        finally:
            os._exit(status)  # never return into the supervisor's code

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(workers):
        start_worker()
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        if not stopping:
            code = os.waitstatus_to_exitcode(status)
            logger.error("worker %d exited unexpectedly (exit code %d); starting another", pid, code)
            time.sleep(0.5)  # no tight loop if workers keep failing
            if not stopping:
                start_worker()
    sock.close()


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
