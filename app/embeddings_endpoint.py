"""POST /v1/embeddings answered as a bare ASGI app, in front of FastAPI's router.

The route is still declared on FastAPI's router (``app.openai_api``) for the OpenAPI
schema, and its handler calls the same ``answer`` coroutine. But requests are answered
here, before the router: FastAPI's per-request machinery (routing, dependency solving,
``Request``/``Response`` objects, exception middleware) cost about two thirds of a
worker's time on one-input requests, and skipping it triples requests/s
(docs/performance.md, "Recommendations for the HTTP path"). The pure-ASGI middlewares
around it (request id, metrics, disconnects, CORS) still apply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import orjson
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.embedding_request import parse_embedding_request
from app.embedding_response import render_embeddings
from app.errors import SERVER_ERROR, APIError, invalid_request

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


async def answer(state: ServiceState, headers: Mapping[str, str], body: AsyncIterator[bytes]) -> bytes:
    """The response body for one request; raises APIError for anything the client must fix."""
    try:
        state.keys.check(headers.get("authorization"))
        if not state.ready:
            raise APIError(
                503, "The model is not loaded yet.", type=SERVER_ERROR, code="not_ready", headers={"Retry-After": "1"}
            )
        decoded = await read_json_body(headers, body, state.max_body_bytes)
        encoder = state.service.encoder
        parsed = parse_embedding_request(
            decoded, max_inputs=state.max_request_inputs, vocab_size=encoder.vocab_size, width=encoder.dimensions
        )
        model = state.catalog.resolve(parsed.model)
        result = await state.service.embed(parsed)
    except APIError as exc:
        state.metrics.rejected.labels(_REJECTION_REASONS.get(exc.status, "other")).inc()
        raise
    return render_embeddings(result, model=model, encoding_format=parsed.encoding_format)


async def read_json_body(headers: Mapping[str, str], body: AsyncIterator[bytes], max_bytes: int) -> object:
    """The decoded JSON body; 413 as soon as it is known to exceed ``max_bytes``."""
    content_type = headers.get("content-type", JSON).partition(";")[0].strip().lower()
    if content_type != JSON and not content_type.endswith("+json"):
        raise invalid_request(
            f"The body must be JSON sent with 'Content-Type: application/json', not {content_type[:100]!r}.",
            code="unsupported_media_type",
        )
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(size, max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
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
    """ASGI middleware that answers POST /v1/embeddings itself and passes the rest on."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state
        # What the router would have put in scope["route"]: the metrics label it by path.
        self.route = Route(PATH, endpoint=self, methods=["POST"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            payload, status, extra = await answer(self.state, headers, _body(receive)), 200, {}
        except APIError as exc:
            payload, status, extra = orjson.dumps(exc.envelope()), exc.status, exc.headers
        response_headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(payload)).encode())]
        response_headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
