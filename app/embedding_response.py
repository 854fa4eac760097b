"""Serialize an embedding result in OpenAI's response shape, fast.

``float``: orjson writes each float32 row straight from numpy (``OPT_SERIALIZE_NUMPY``),
with no Python float per component. ``base64``: each row's little-endian float32 bytes,
base64-encoded, which is what the official clients request by default and decode as-is.
"""

from __future__ import annotations

import base64

import numpy as np
import orjson

from app.embedding_service import EmbeddingResult


def render_embeddings(result: EmbeddingResult, *, model: str, encoding_format: str) -> bytes:
    vectors = np.ascontiguousarray(result.vectors, dtype="<f4")
    if encoding_format == "base64":
        rows: list[object] = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    else:
        rows = list(vectors)
    data = [{"object": "embedding", "index": index, "embedding": row} for index, row in enumerate(rows)]
    body = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
