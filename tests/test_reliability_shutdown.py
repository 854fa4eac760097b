"""Graceful shutdown under load: on SIGTERM the server stops accepting connections, finishes every
request it had accepted, then exits with status 0.

"Accepted" is read from the server's own log: with debug logging every request it receives is
logged with its request id (which the client chose) before any work is done. Each of those
must have reached its client as a 200; requests that failed on the client side must never
have reached the server.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import sts_sentences
from tests.reliability_server import start

CLIENTS = 12
INPUTS_PER_REQUEST = 256


def _client_loop(url: str, worker: int, texts: list[str], stop: threading.Event, outcomes: dict[str, str]) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        for sequence in range(10_000):
            if stop.is_set():
                return
            request_id = f"w{worker}-r{sequence}"
            try:
                response = client.post(
                    "/v1/embeddings",
                    json={"input": texts, "model": "m", "encoding_format": "base64"},
                    headers={"X-Request-ID": request_id},
                )
            except httpx.TransportError as exc:
                outcomes[request_id] = type(exc).__name__
                if isinstance(exc, httpx.ConnectError):  # the listener is gone: this client is done
                    return
                continue
            complete = response.status_code != 200 or len(response.json()["data"]) == len(texts)
            outcomes[request_id] = str(response.status_code) if complete else "200 with missing vectors"


def test_sigterm_under_load_finishes_every_accepted_request_then_exits_zero(
    default_model_dir: Path, tmp_path: Path
) -> None:
    server = start(
        default_model_dir,
        tmp_path / "server.log",
        log_level="debug",
        access_log="true",
        max_batch_inputs=str(INPUTS_PER_REQUEST),
    )
    sentences = sts_sentences(1000)
    texts = [" ".join(sentences[i : i + 6]) for i in range(INPUTS_PER_REQUEST)]
    outcomes: dict[str, str] = {}
    stop = threading.Event()
    threads = [
        threading.Thread(target=_client_loop, args=(server.url, n, texts, stop, outcomes), daemon=True)
        for n in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while sum(code == "200" for code in outcomes.values()) < 2 * CLIENTS and time.monotonic() < deadline:
        time.sleep(0.05)

    server.process.send_signal(signal.SIGTERM)
    while "Shutting down" not in server.log() and server.process.poll() is None:
        time.sleep(0.01)
    if server.process.poll() is None:  # still draining: the listener must already be closed
        try:
            httpx.get(f"{server.url}/health", timeout=2)
            accepted_during_drain = True
        except httpx.TransportError:
            accepted_during_drain = False
        assert not accepted_during_drain, "a new connection was accepted after SIGTERM"
    exit_code = server.process.wait(timeout=60)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    log = server.log()
    assert exit_code == 0, log[-2000:]
    received = set(re.findall(r"\[(w\d+-r\d+)\] request started: POST /v1/embeddings", log))
    answered = {rid for rid, code in outcomes.items() if code == "200"}
    failed = {rid: code for rid, code in outcomes.items() if code != "200"}
    assert received, log[-2000:]
    # Every request the server received was answered 200 ...
    assert received <= answered, {rid: outcomes.get(rid) for rid in received - answered}
    # ... and every request that failed on the client side never reached the server.
    assert not (set(failed) & received), failed
    assert all(not code.isdigit() for code in failed.values()), failed  # no 5xx/503: only refused connections
    # The drain was real: requests were still being answered after shutdown began.
    after_shutdown = log.split("Shutting down", 1)[1]
    drained = re.findall(r'\[(w\d+-r\d+)\] .*"POST /v1/embeddings HTTP/1.1" 200', after_shutdown)
    assert drained, "no request was in flight at SIGTERM; the test did not test draining"
    assert "Traceback" not in log
    assert "Finished server process" in log
