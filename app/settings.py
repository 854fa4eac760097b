"""Every setting of the service, read from environment variables in one place.

The README's configuration table lists the same names and defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL_DIR = Path("models/default")


class SettingsError(ValueError):
    """An environment variable with a value the service cannot use."""


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default).strip()


def _int(name: str, default: int, minimum: int = 0) -> int:
    raw = _env(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool(name: str, default: bool) -> bool:
    raw = _env(name, "true" if default else "false").lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _env(name, default).lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in _env(name, "").split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    model_dir: Path = DEFAULT_MODEL_DIR
    model_name: str | None = None  # None: the name recorded in the model's config
    model_aliases: tuple[str, ...] = ()
    strict_model_names: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch_inputs: int = 4096
    max_batch_tokens: int = 262144
    max_queue_inputs: int = 65536
    max_input_tokens: int = 8192
    max_request_tokens: int = 300000
    max_request_inputs: int = 2048
    max_body_bytes: int = 16 * 1024 * 1024
    truncate: bool = False
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    verify_checksum: bool = False
    cors_origins: tuple[str, ...] = ()
    log_level: str = "info"
    access_log: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            model_dir=Path(_env("EMBED_MODEL_DIR", str(DEFAULT_MODEL_DIR))),
            model_name=_env("EMBED_MODEL_NAME", "") or None,
            model_aliases=_list("EMBED_MODEL_ALIASES"),
            strict_model_names=_bool("EMBED_STRICT_MODEL_NAMES", False),
            host=_env("EMBED_HOST", "127.0.0.1"),
            port=_int("EMBED_PORT", 8000, minimum=0),
            workers=_int("EMBED_WORKERS", 1, minimum=1),
            max_batch_inputs=_int("EMBED_MAX_BATCH_INPUTS", 4096, minimum=1),
            max_batch_tokens=_int("EMBED_MAX_BATCH_TOKENS", 262144, minimum=1),
            max_queue_inputs=_int("EMBED_MAX_QUEUE_INPUTS", 65536, minimum=1),
            max_input_tokens=_int("EMBED_MAX_INPUT_TOKENS", 8192, minimum=1),
            max_request_tokens=_int("EMBED_MAX_REQUEST_TOKENS", 300000, minimum=1),
            max_request_inputs=_int("EMBED_MAX_REQUEST_INPUTS", 2048, minimum=1),
            max_body_bytes=_int("EMBED_MAX_BODY_BYTES", 16 * 1024 * 1024, minimum=1024),
            truncate=_bool("EMBED_TRUNCATE", False),
            api_keys=_list("EMBED_API_KEYS"),
            verify_checksum=_bool("EMBED_VERIFY_CHECKSUM", False),
            cors_origins=_list("EMBED_CORS_ORIGINS"),
            log_level=_choice("EMBED_LOG_LEVEL", "info", ("critical", "error", "warning", "info", "debug", "trace")),
            access_log=_bool("EMBED_ACCESS_LOG", False),
        )
