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
from app.embedding_service import EmbeddingService
from app.embeddings_endpoint import JSON, answer, check_declared_size, read_stream
from app.errors import APIError
from app.metrics import Metrics
from app.model_catalog import ModelCatalog


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
    """Declared for the OpenAPI schema; ``EmbeddingsEndpoint`` answers most requests before the router.

    Requests that need CORS headers come here, through FastAPI's middlewares.
    """
    state, headers = _state(request), request.headers
    try:
        check_declared_size(headers.get("content-length"), state.max_body_bytes)
        payload = await answer(
            state,
            authorization=headers.get("authorization"),
            content_type=headers.get("content-type"),
            read_body=lambda limit: read_stream(request.stream(), limit),
        )
    except APIError as exc:
        return exc.response()
    return Response(payload, media_type=JSON)


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
