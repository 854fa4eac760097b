"""Start ``python -m app`` as a real server process on a free loopback port, for end-to-end tests.

Servers are shared: ``running_server`` returns the same process for the same settings for
the whole test session (every test module asking for it gets the one already running),
and stops them all when the session ends.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-test-key-one"
OTHER_API_KEY = "sk-test-key-two"
STARTUP_SECONDS = 60


@dataclass
class ServerProcess:
    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


_servers: dict[tuple[tuple[str, str], ...], ServerProcess] = {}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def running_server(model_dir: Path, log_dir: Path, **settings: str) -> ServerProcess:
    """A ready server for these EMBED_* settings (keys without the prefix, e.g. ``workers="2"``)."""
    key = (("model_dir", str(model_dir)), *sorted(settings.items()))
    server = _servers.get(key)
    if server is not None and server.process.poll() is None:
        return server
    server = _start(model_dir, log_dir, settings)
    _servers[key] = server
    return server


def stop_all() -> None:
    while _servers:
        _, server = _servers.popitem()
        server.stop()


atexit.register(stop_all)


def server_env(model_dir: Path, port: int, settings: dict[str, str]) -> dict[str, str]:
    """This process's environment without any EMBED_* of its own, plus the server's settings."""
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
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return ServerProcess(f"http://127.0.0.1:{port}", env, process, log_path)


def wait_ready(server: ServerProcess) -> ServerProcess:
    """Wait for /ready; a server that exits or never gets ready fails with its log."""
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


def _start(model_dir: Path, log_dir: Path, settings: dict[str, str]) -> ServerProcess:
    return wait_ready(launch(model_dir, log_dir / f"server-{time.monotonic_ns()}.log", **settings))


# The configurations the API tests share (EMBED_* names without the prefix).
MAIN = {"api_keys": f"{API_KEY},{OTHER_API_KEY}"}
LIMITS = {
    "strict_model_names": "true",
    "model_aliases": "text-embedding-3-small,my-alias",
    "max_body_bytes": "4096",
    "max_input_tokens": "16",
    "max_request_tokens": "40",
    "max_request_inputs": "8",
}
