"""Serialize an embedding result in OpenAI's response shape, fast.

``float``: orjson writes each float32 row straight from numpy (``OPT_SERIALIZE_NUMPY``),
with no Python float per component. ``base64``: each row's little-endian float32 bytes,
base64-encoded, which is what the official clients request by default and decode as-is;
base64 and numbers need no JSON escaping, so that body is put together directly, without
a dict per row (only the model name goes through orjson).
"""

from __future__ import annotations

import binascii

import numpy as np
import orjson

from app.embedding_service import EmbeddingResult


def render_embeddings(result: EmbeddingResult, *, model: str, encoding_format: str) -> bytes:
    vectors = np.ascontiguousarray(result.vectors, dtype="<f4")
    tokens = result.prompt_tokens
    if encoding_format == "base64":
        items = b",".join(
            [
                b'{"object":"embedding","index":%d,"embedding":"%b"}' % (index, binascii.b2a_base64(row, newline=False))
                for index, row in enumerate(vectors)
            ]
        )
        return b'{"object":"list","data":[%b],"model":%b,"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (
            items,
            orjson.dumps(model),
            tokens,
            tokens,
        )
    data = [{"object": "embedding", "index": index, "embedding": row} for index, row in enumerate(vectors)]
    body = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
