"""The HTTP ceiling: a bare ASGI app answering every request with the same small body.

Served by uvicorn with uvloop and httptools, the fastest stack here; no framework, no
JSON parsing, no work. Whatever our service does per request costs throughput against it.

    .venv/bin/python -m loadtests.trivial_server PORT [WORKERS]
"""

from __future__ import annotations

import sys
from typing import Any

BODY = b'{"object":"list","data":[],"model":"trivial","usage":{"prompt_tokens":0,"total_tokens":0}}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the request body, as any real endpoint must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    import uvicorn

    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    uvicorn.run(
        "loadtests.trivial_server:app",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
