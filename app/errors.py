"""OpenAI's error envelope for every failure, so clients parse our errors as theirs.

Every response that is not a success carries ``{"error": {"message", "type", "param",
"code"}}``. FastAPI's own 422 and Starlette's plain-text 404/405/500 are replaced here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

logger = logging.getLogger("app.errors")

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"


class APIError(Exception):
    """A failure the client should see, with the status and envelope fields to send."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def envelope(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> Response:
        return Response(
            orjson.dumps(self.envelope()), status_code=self.status, headers=self.headers, media_type="application/json"
        )


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400: the request itself is wrong, and the message says how to fix it."""
    return APIError(400, message, param=param, code=code)


def _location(loc: tuple[object, ...]) -> str | None:
    parts = [str(part) for part in loc if part not in ("body", "path", "query", "header")]
    return ".".join(parts) or None


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response()


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = _location(tuple(first.get("loc", ())))
    where = f" for '{param}'" if param else ""
    return invalid_request(f"Invalid value{where}: {first.get('msg', 'invalid request')}", param=param).response()


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        error = APIError(404, "Not found: this server serves /v1/embeddings and /v1/models.", code="not_found")
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = APIError(405, f"Method not allowed: this path accepts {allowed}.", code="method_not_allowed")
    else:
        kind = SERVER_ERROR if exc.status_code >= 500 else INVALID_REQUEST
        error = APIError(exc.status_code, str(exc.detail), type=kind)
    error.headers.update(exc.headers or {})
    return error.response()


async def _unexpected_error(_: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", exc_info=exc)
    return APIError(
        500, "The server had an error while processing your request. It has been logged.", type=SERVER_ERROR
    ).response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
