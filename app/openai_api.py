"""The OpenAI-compatible routes: thin handlers over the plain modules that do the work.

The pydantic models here describe the protocol in the app's own OpenAPI document; the
request body itself is validated by ``app.embedding_request`` for exact OpenAI-style
messages, and responses are written with orjson by ``app.embedding_response``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import PlainTextResponse, Response

from app.auth import APIKeys
from app.embedding_request import parse_embedding_request
from app.embedding_response import render_embeddings
from app.embedding_service import EmbeddingService
from app.errors import SERVER_ERROR, APIError, invalid_request
from app.metrics import Metrics
from app.model_catalog import ModelCatalog

JSON = "application/json"


class CreateEmbeddingRequest(BaseModel):
    """OpenAI's request body (documentation only; see ``app.embedding_request``)."""

    model_config = ConfigDict(extra="forbid")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A string, an array of strings, an array of token ids, or an array of token-id arrays. "
        "Token ids are this model's tokenizer ids (not tiktoken's)."
    )
    model: str = Field(description="The served model's name or an alias; see GET /v1/models.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, description="Keep the first k components, renormalized.")
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody


@dataclass
class ServiceState:
    """What the routes need, stored on ``app.state.service``."""

    service: EmbeddingService
    catalog: ModelCatalog
    keys: APIKeys
    metrics: Metrics
    max_request_inputs: int
    max_body_bytes: int
    ready: bool = False


def _state(request: Request) -> ServiceState:
    return request.app.state.service  # type: ignore[no-any-return]


def _json(content: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type=JSON)


async def _require_key(request: Request) -> None:
    _state(request).keys.check(request.headers.get("authorization"))


_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "Invalid request",
        401: "Missing or wrong API key",
        404: "Unknown model (strict model names only)",
        413: "Request body too large",
        429: "Queue full; retry after Retry-After seconds",
        503: "Not ready or shutting down",
    }.items()
}
_REJECTION_REASONS = {
    400: "invalid_request",
    401: "unauthorized",
    404: "model_not_found",
    413: "body_too_large",
    429: "queue_full",
    503: "not_ready",
}

router = APIRouter()


@router.post(
    "/v1/embeddings",
    response_model=CreateEmbeddingResponse,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": CreateEmbeddingRequest.model_json_schema()}},
        }
    },
)
async def create_embeddings(request: Request) -> Response:
    state = _state(request)
    try:
        state.keys.check(request.headers.get("authorization"))
        if not state.ready:
            raise APIError(
                503, "The model is not loaded yet.", type=SERVER_ERROR, code="not_ready", headers={"Retry-After": "1"}
            )
        body = await read_json_body(request, state.max_body_bytes)
        encoder = state.service.encoder
        parsed = parse_embedding_request(
            body, max_inputs=state.max_request_inputs, vocab_size=encoder.vocab_size, width=encoder.dimensions
        )
        model = state.catalog.resolve(parsed.model)
        result = await state.service.embed(parsed)
    except APIError as exc:
        state.metrics.rejected.labels(_REJECTION_REASONS.get(exc.status, "other")).inc()
        raise
    return Response(render_embeddings(result, model=model, encoding_format=parsed.encoding_format), media_type=JSON)


@router.get("/v1/models", dependencies=[Depends(_require_key)], responses=_ERRORS)
async def list_models(request: Request) -> Response:
    return _json(_state(request).catalog.list_object())


@router.get("/v1/models/{model_id:path}", dependencies=[Depends(_require_key)], responses=_ERRORS)
async def retrieve_model(model_id: str, request: Request) -> Response:
    return _json(_state(request).catalog.retrieve_object(model_id))


@router.get("/health")
async def health() -> Response:
    """Alive: the process answers HTTP."""
    return _json({"status": "ok"})


@router.get("/ready")
async def ready(request: Request) -> Response:
    """Ready: the model is loaded and a test encode succeeded."""
    state = _state(request)
    if state.ready:
        return _json({"status": "ready", "model": state.catalog.name})
    return _json({"status": "not ready"}, status_code=503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    content, content_type = _state(request).metrics.exposition()
    return Response(content, media_type=content_type)


async def read_json_body(request: Request, max_bytes: int) -> object:
    """The decoded JSON body; 413 as soon as it is known to exceed ``max_bytes``."""
    content_type = request.headers.get("content-type", JSON).partition(";")[0].strip().lower()
    if content_type != JSON and not content_type.endswith("+json"):
        raise invalid_request(
            f"The body must be JSON sent with 'Content-Type: application/json', not {content_type[:100]!r}.",
            code="unsupported_media_type",
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(int(declared), max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
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
