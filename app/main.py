"""The FastAPI application: load the model, wire the routes, errors, metrics and limits.

``create_app`` loads the model directory and runs a test encode before returning, so a
bad model fails at startup with a one-line message instead of on the first request; it
also works when driven without a lifespan (e.g. by ``httpx.ASGITransport``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from app.auth import APIKeys
from app.disconnects import CancelOnDisconnect
from app.embedding_service import EmbeddingService, TokenLimits
from app.embeddings_endpoint import EmbeddingsEndpoint
from app.encoder import Encoder
from app.errors import install_error_handlers
from app.lifecycle import check_test_encode
from app.metrics import HTTPMetricsMiddleware, Metrics
from app.model_catalog import ModelCatalog, served_model_name
from app.model_format import TABLE_FILE, StaticModel, load_model
from app.openai_api import ServiceState, router
from app.request_id import RequestIDMiddleware
from app.settings import Settings

logger = logging.getLogger("app")


class ServiceApp(FastAPI):
    """FastAPI, with POST /v1/embeddings answered by ``embeddings`` before any of FastAPI's machinery."""

    embeddings: EmbeddingsEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.embeddings
        if endpoint is not None and endpoint.takes(scope):
            await endpoint(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, encoder: Encoder | None = None) -> ServiceApp:
    """The app for ``settings``; ``encoder`` is an already checked one to serve instead of loading the model again."""
    settings = settings or Settings.from_env()
    if encoder is None:
        encoder = Encoder(load_model(settings.model_dir, verify_checksum=settings.verify_checksum))
        check_test_encode(encoder)
    model = encoder.model
    catalog = ModelCatalog(
        name=served_model_name(settings.model_name, model.metadata, settings.model_dir),
        aliases=settings.model_aliases,
        strict=settings.strict_model_names,
        created=_created_timestamp(model),
    )
    metrics = Metrics()
    service = EmbeddingService(
        encoder,
        TokenLimits(settings.max_input_tokens, settings.max_request_tokens, settings.truncate),
        metrics,
        max_batch_inputs=settings.max_batch_inputs,
        max_batch_tokens=settings.max_batch_tokens,
        max_queue_inputs=settings.max_queue_inputs,
    )
    state = ServiceState(
        service=service,
        catalog=catalog,
        keys=APIKeys(settings.api_keys),
        metrics=metrics,
        max_request_inputs=settings.max_request_inputs,
        max_body_bytes=settings.max_body_bytes,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.ready = False
        await service.batcher.stop()
        metrics.process_exiting()

    app = ServiceApp(
        title="static-embed",
        summary="OpenAI-compatible embeddings from a static token table",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.service = state
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(router)
    app.embeddings = EmbeddingsEndpoint(state, cors=bool(settings.cors_origins))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # For every request but the ones ``app.embeddings`` answers, which does the same inline:
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(HTTPMetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIDMiddleware)  # outermost: every response and log line carries the id

    state.ready = True
    logger.info(
        "serving %s from %s (%d tokens x %d dims)",
        catalog.name,
        settings.model_dir,
        encoder.vocab_size,
        encoder.dimensions,
    )
    return app


def _created_timestamp(model: StaticModel) -> int:
    """When the model was made: the distill job's record, else the table file's time."""
    recorded = model.metadata.get("created_at")
    if isinstance(recorded, str):
        try:
            return int(datetime.fromisoformat(recorded).timestamp())
        except ValueError:
            pass
    return int((model.path / TABLE_FILE).stat().st_mtime)
