"""POST /v1/embeddings answered by one bare ASGI callable, before any of FastAPI's machinery.

The route is still declared on FastAPI's router (``app.openai_api``) for the OpenAPI
schema, and its handler calls the same ``answer`` coroutine. But ``ServiceApp`` (in
``app.main``) hands these requests to ``EmbeddingsEndpoint`` before FastAPI sees them:
per request, FastAPI's routing, dependency solving, ``Request``/``Response`` objects and
its stack of middlewares (each a coroutine and a wrapped ``send``) cost several times
what embedding one sentence costs (docs/performance.md, "HTTP"). What those middlewares
do for every other route is done here inline, with the same modules: the request id
(``app.request_id``), the request metrics (``app.metrics``), cancellation when the client
disconnects (``app.disconnects``) and OpenAI's 500 envelope for an unexpected error.
Requests that need CORS headers (an ``Origin`` header while CORS is configured) take the
ordinary path through FastAPI's CORS middleware instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from starlette.types import Receive, Scope, Send

from app.disconnects import CLIENT_CLOSED_REQUEST, DisconnectWatch
from app.embedding_request import parse_embedding_request
from app.embedding_response import render_embeddings
from app.errors import SERVER_ERROR, APIError, invalid_request
from app.request_id import current_request_id, new_request_id, safe_client_id

if TYPE_CHECKING:
    from app.openai_api import ServiceState

PATH = "/v1/embeddings"
JSON = "application/json"
_REJECTION_REASONS = {
    400: "invalid_request",
    401: "unauthorized",
    404: "model_not_found",
    413: "body_too_large",
    429: "queue_full",
    503: "not_ready",
}
_JSON_HEADER = (b"content-type", JSON.encode())
logger = logging.getLogger("app.embeddings")

ReadBody = Callable[[int], Awaitable[bytes]]


async def answer(
    state: ServiceState,
    *,
    authorization: str | None,
    content_type: str | None,
    read_body: ReadBody,
    watch: DisconnectWatch | None = None,
) -> bytes:
    """The response body for one request; raises APIError for anything the client must fix.

    ``read_body(max_bytes)`` returns the raw body or raises the 413; ``watch``, if given,
    starts watching the connection once the request waits for its batch.
    """
    try:
        state.keys.check(authorization)
        if not state.ready:
            raise APIError(
                503, "The model is not loaded yet.", type=SERVER_ERROR, code="not_ready", headers={"Retry-After": "1"}
            )
        decoded = _decode_json(content_type, await read_body(state.max_body_bytes))
        encoder = state.service.encoder
        parsed = parse_embedding_request(
            decoded, max_inputs=state.max_request_inputs, vocab_size=encoder.vocab_size, width=encoder.dimensions
        )
        model = state.catalog.resolve(parsed.model)
        if watch is not None:
            watch.start()
        result = await state.service.embed(parsed)
    except APIError as exc:
        state.metrics.rejected.labels(_REJECTION_REASONS.get(exc.status, "other")).inc()
        raise
    return render_embeddings(result, model=model, encoding_format=parsed.encoding_format)


def check_declared_size(content_length: str | None, max_bytes: int) -> None:
    """413 before reading anything when Content-Length already says the body is too large."""
    if content_length and content_length.isdigit() and int(content_length) > max_bytes:
        raise _too_large(int(content_length), max_bytes)


async def read_stream(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """The whole body from a stream of chunks; 413 as soon as it is known to exceed ``max_bytes``."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        parts.append(chunk)
    return b"".join(parts)


async def read_asgi_body(receive: Receive, max_bytes: int) -> bytes:
    """``read_stream`` straight from ASGI messages (most bodies arrive in one message)."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if len(body) > max_bytes:
        raise _too_large(len(body), max_bytes)
    if not message.get("more_body", False) or message["type"] == "http.disconnect":
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _decode_json(content_type: str | None, raw: bytes) -> object:
    if content_type is not None and content_type != JSON:  # the common case costs one comparison
        content_type = content_type.partition(";")[0].strip().lower()
        if content_type != JSON and not content_type.endswith("+json"):
            raise invalid_request(
                f"The body must be JSON sent with 'Content-Type: application/json', not {content_type[:100]!r}.",
                code="unsupported_media_type",
            )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
            reason = f"{exc.msg} at position {exc.pos}"
        except UnicodeDecodeError as bad:
            reason = f"byte {bad.start} is not valid UTF-8"
        raise invalid_request(
            f"We could not parse the JSON body of your request ({reason}). The body must be "
            "a JSON object in UTF-8; send it with 'Content-Type: application/json'."
        ) from None


def _too_large(size: int, max_bytes: int) -> APIError:
    return APIError(
        413,
        f"The request body ({size} bytes or more) exceeds the limit of {max_bytes} bytes. "
        "Send fewer or shorter inputs per request.",
        code="request_too_large",
    )


class EmbeddingsEndpoint:
    """The complete handling of POST /v1/embeddings: request id, metrics, disconnects, errors."""

    def __init__(self, state: ServiceState, *, cors: bool = False) -> None:
        self.state = state
        self.cors = cors

    def takes(self, scope: Scope) -> bool:
        """Whether to answer this request here (else it goes through FastAPI)."""
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            return False
        return not self.cors or all(name.lower() != b"origin" for name, _ in scope["headers"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers: dict[bytes, bytes] = dict(scope["headers"])  # ASGI header names are lowercase
        request_id = safe_client_id(_text(headers.get(b"x-request-id"))) or new_request_id()
        token = current_request_id.set(request_id)
        status = 500
        watch = DisconnectWatch(receive)
        try:
            logger.debug("request started: POST %s", PATH)
            try:
                check_declared_size(_text(headers.get(b"content-length")), self.state.max_body_bytes)
                payload = await answer(
                    self.state,
                    authorization=_text(headers.get(b"authorization")),
                    content_type=_text(headers.get(b"content-type")),
                    read_body=lambda limit: read_asgi_body(receive, limit),
                    watch=watch,
                )
                status, extra = 200, None
            except APIError as exc:
                payload, status, extra = orjson.dumps(exc.envelope()), exc.status, exc.headers
            watch.responding = True
            response_headers = [
                _JSON_HEADER,
                (b"content-length", str(len(payload)).encode()),
                (b"x-request-id", request_id.encode()),
            ]
            if extra:
                response_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
            await send({"type": "http.response.start", "status": status, "headers": response_headers})
            await send({"type": "http.response.body", "body": payload})
        except asyncio.CancelledError:
            if not watch.client_gone:
                raise
            watch.forgive()
            status = CLIENT_CLOSED_REQUEST  # nothing reaches the client: its connection is gone
            logger.info("client disconnected before the response; its request was cancelled")
        except Exception:
            logger.exception("unhandled error in POST %s", PATH)
            if watch.responding:  # the response may have started; all we can do is close the connection
                raise
            status = 500
            error = APIError(
                500, "The server had an error while processing your request. It has been logged.", type=SERVER_ERROR
            )
            body = orjson.dumps(error.envelope())
            error_headers = [_JSON_HEADER, (b"content-length", str(len(body)).encode())]
            error_headers.append((b"x-request-id", request_id.encode()))
            await send({"type": "http.response.start", "status": 500, "headers": error_headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            watch.stop()
            self.state.metrics.observe_request("POST", PATH, status, time.perf_counter() - started)
            current_request_id.reset(token)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
