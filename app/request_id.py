"""A request id on every response and every log line, so one request can be traced end to end.

The id is the client's ``X-Request-ID`` when it is safe to echo (short, printable ASCII
without spaces: it goes into a response header and into log lines, so nothing that could
split or forge either is echoed), else a fresh random one. It is kept in a context
variable for the request's task, which ``RequestIDLogFilter`` copies onto every log record.

This middleware is the outermost layer of the app: an exception that escapes everything
inside it is logged here with the id and answered with OpenAI's 500 envelope, so even that
response carries the id and never a stack trace.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app.errors import SERVER_ERROR, APIError

HEADER = "X-Request-ID"
NO_REQUEST = "-"
_SAFE_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default=NO_REQUEST)
logger = logging.getLogger("app.request_id")


def safe_client_id(value: str | None) -> str | None:
    """The client's id if it can be echoed verbatim into a header and a log line, else None."""
    if value and _SAFE_ID.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    """128 random bits as 32 hex digits (what ``uuid4().hex`` looks like, at a fifth of its cost)."""
    return os.urandom(16).hex()


class RequestIDMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = _header(scope, b"x-request-id")
        request_id = safe_client_id(supplied) or new_request_id()
        token = current_request_id.set(request_id)
        encoded = request_id.encode("ascii")
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", encoded)]
            await send(message)

        logger.debug("request started: %s %s", scope.get("method", ""), scope.get("path", ""))
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error in %s %s", scope.get("method", ""), scope.get("path", ""))
            if response_started:  # headers are gone; all we can do is close the connection
                raise
            error = APIError(
                500, "The server had an error while processing your request. It has been logged.", type=SERVER_ERROR
            )
            await error.response()(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)


class RequestIDLogFilter(logging.Filter):
    """Adds ``request_id`` to every record (``-`` outside a request) for the log format to show."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            try:
                return bytes(value).decode("ascii")
            except UnicodeDecodeError:
                return None
    return None
