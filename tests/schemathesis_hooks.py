"""Schemathesis hook for tests/test_api_conformance.py: check base64 embeddings, then validate them as floats.

OpenAI's published schema types ``embedding`` as an array of floats only, yet OpenAI (and
both official clients, which request it by default) send a base64 string when
``encoding_format`` is ``base64``. This hook decodes such strings (little-endian float32,
as the clients decode them) and puts the floats in their place, so the response-schema
check still validates everything else. A string that does not decode to finite float32
values of the requested width is left as it is, and the schema check then fails on it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from typing import Any

import schemathesis


def _requested(case: Any) -> dict[str, Any]:
    return case.body if isinstance(case.body, dict) else {}


def _decoded(text: str, width: int | None) -> list[float] | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw or len(raw) % 4 or (width is not None and len(raw) != 4 * width):
        return None
    values = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return values if all(math.isfinite(value) for value in values) else None


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    body = _requested(case)
    if response.status_code != 200 or body.get("encoding_format") != "base64":
        return
    payload = json.loads(response.content)
    dimensions = body.get("dimensions")
    width = dimensions if isinstance(dimensions, int) and not isinstance(dimensions, bool) else None
    for item in payload.get("data", []):
        if isinstance(item, dict) and isinstance(item.get("embedding"), str):
            floats = _decoded(item["embedding"], width)
            if floats is not None:
                item["embedding"] = floats
    response.content = json.dumps(payload).encode()
    response.clear_cache()
