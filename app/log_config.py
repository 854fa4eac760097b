"""One log format for the app and uvicorn, with the request id on every line.

Passed to ``uvicorn.run(log_config=...)`` so that each worker process sets it up the same
way. uvicorn's own loggers (startup, errors, access log) propagate to the root handler,
which adds the request id (``-`` for lines outside a request) through ``RequestIDLogFilter``.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


TRACE = 5  # uvicorn's level below DEBUG, registered here because dictConfig runs before uvicorn is imported


def log_config(level: str) -> dict[str, Any]:
    logging.addLevelName(TRACE, "TRACE")
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "app.request_id.RequestIDLogFilter"}},
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "plain",
                "filters": ["request_id"],
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            name: {"level": level, "handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure_logging(level: str) -> dict[str, Any]:
    """Set up logging in this process; return the config for uvicorn to apply in its workers."""
    config = log_config(level)
    logging.config.dictConfig(config)
    return config
