"""Private ``python -m app`` processes for the reliability tests, and checks every answer must pass.

Unlike ``tests.api_server.running_server`` (shared, cached for the session), these servers
belong to one test module or one test: they are signalled, overloaded and restarted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.api_server import ROOT, ServerProcess, free_port

STARTUP_SECONDS = 60
# What must never reach a client: stack traces, source locations, file system paths.
LEAK = re.compile(r"Traceback|File \"|\.py\b|site-packages|/tmp/|/work/|/home/|/usr/|pytest-of")


def server_env(model_dir: Path, port: int, settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBED_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(HF_HUB_OFFLINE="1", EMBED_MODEL_DIR=str(model_dir), EMBED_HOST="127.0.0.1", EMBED_PORT=str(port))
    env.update({f"EMBED_{name.upper()}": value for name, value in settings.items()})
    return env


def launch(model_dir: Path, log_path: Path, **settings: str) -> ServerProcess:
    """Start a server and return at once (it may fail to start: see ``wait_ready``)."""
    port = free_port()
    env = server_env(model_dir, port, settings)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=log)
    return ServerProcess(f"http://127.0.0.1:{port}", env, process, log_path)


def wait_ready(server: ServerProcess) -> ServerProcess:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server not ready after {STARTUP_SECONDS} s:\n{server.log()}")


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
