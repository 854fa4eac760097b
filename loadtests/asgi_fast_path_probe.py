"""A measurement probe, not the service: our app with POST /v1/embeddings answered by a bare
ASGI callable in front of FastAPI, to measure what FastAPI's routing and middleware stack
costs per request (docs/performance.md, "Recommendations for the HTTP path").

Same objects as the service (``create_app``'s batcher, encoder, request parser, response
renderer, request metrics); everything but that one route falls through to FastAPI.
Left out, for brevity: API keys, the request-id header, the body-size limit and the
disconnect watcher, all of them cheap pure-ASGI steps.

    EMBED_MODEL_DIR=... .venv/bin/python -m loadtests.asgi_fast_path_probe PORT
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson

from app.embedding_request import parse_embedding_request
from app.embedding_response import render_embeddings
from app.errors import APIError
from app.main import create_app

JSON_HEADER = (b"content-type", b"application/json")


def build() -> Any:
    inner = create_app()
    state = inner.state.service
    metrics = state.metrics

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/embeddings" or scope["method"] != "POST":
            await inner(scope, receive, send)
            return
        start = time.perf_counter()
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            body = orjson.loads(b"".join(chunks))
            encoder = state.service.encoder
            parsed = parse_embedding_request(
                body, max_inputs=state.max_request_inputs, vocab_size=encoder.vocab_size, width=encoder.dimensions
            )
            model = state.catalog.resolve(parsed.model)
            result = await state.service.embed(parsed)
            payload, status = render_embeddings(result, model=model, encoding_format=parsed.encoding_format), 200
        except (APIError, orjson.JSONDecodeError) as exc:
            status = getattr(exc, "status", 400)
            error = {"message": str(exc), "type": "invalid_request_error", "param": None, "code": None}
            payload = orjson.dumps({"error": error})
        headers = [JSON_HEADER, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        metrics.http_requests.labels("POST", "/v1/embeddings", str(status)).inc()
        metrics.http_duration.labels("POST", "/v1/embeddings").observe(time.perf_counter() - start)

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(build(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
