"""The naive peer: what one writes in ten minutes with FastAPI and model2vec.

One ``StaticModel.encode`` per request in FastAPI's thread pool, vectors returned as
Python lists through FastAPI's default JSON response. Same request and response shape
as ours, so the load generator sends both the same bodies.

model2vec's ``encode`` is not thread-safe (it resets the tokenizer's truncation on every
call; concurrent calls fail with "RuntimeError: Already borrowed"), so calls hold a lock,
as the author of such a server would add after the first errors.

    .venv/bin/python -m loadtests.naive_server MODEL_DIR PORT [WORKERS]
"""

from __future__ import annotations

import base64
import os
import sys
import threading

from fastapi import FastAPI
from model2vec import StaticModel
from pydantic import BaseModel

app = FastAPI()
lock = threading.Lock()
model = StaticModel.from_pretrained(os.environ["NAIVE_MODEL_DIR"]) if "NAIVE_MODEL_DIR" in os.environ else None


class EmbeddingRequest(BaseModel):
    input: str | list[str]
    model: str = "naive"
    encoding_format: str = "float"


@app.get("/ready")
def ready() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/v1/embeddings")
def embeddings(request: EmbeddingRequest) -> dict[str, object]:
    assert model is not None
    texts = [request.input] if isinstance(request.input, str) else request.input
    with lock:
        vectors = model.encode(texts).astype("float32")
    data = []
    for index, vector in enumerate(vectors):
        if request.encoding_format == "base64":
            embedding: object = base64.b64encode(vector.astype("<f4").tobytes()).decode()
        else:
            embedding = vector.tolist()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {"object": "list", "data": data, "model": request.model, "usage": {"prompt_tokens": 0, "total_tokens": 0}}


if __name__ == "__main__":
    import uvicorn

    os.environ["NAIVE_MODEL_DIR"] = sys.argv[1]
    workers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    port = int(sys.argv[2])
    uvicorn.run("loadtests.naive_server:app", host="127.0.0.1", port=port, workers=workers, log_level="warning")
