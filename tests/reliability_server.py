"""Private ``python -m app`` processes for the reliability tests, and checks every answer must pass.

Unlike ``tests.api_server.running_server`` (shared, cached for the session), these servers
belong to one test module or one test: they are signalled, overloaded and restarted.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.api_server import ServerProcess, launch, wait_ready

# What must never reach a client: stack traces, source locations, file system paths.
LEAK = re.compile(r"Traceback|File \"|\.py\b|site-packages|/tmp/|/work/|/home/|/usr/|pytest-of")


def start(model_dir: Path, log_path: Path, **settings: str) -> ServerProcess:
    return wait_ready(launch(model_dir, log_path, **settings))


def assert_error_envelope(response: httpx.Response, status: int | tuple[int, ...]) -> dict[str, object]:
    """A 4xx/5xx in OpenAI's envelope, with a message, a request id and nothing internal."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and len(error["message"]) > 20, error
    assert isinstance(error["type"], str) and error["type"], error
    assert_no_leak(response)
    return error


def assert_no_leak(response: httpx.Response) -> None:
    assert response.headers.get("x-request-id"), "every response carries X-Request-ID"
    assert not LEAK.search(response.text), response.text[:500]


def assert_still_serving(client: httpx.Client) -> None:
    response = client.post("/v1/embeddings", json={"input": ["still serving?"], "model": "any"})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 1
