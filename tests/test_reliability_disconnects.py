"""Clients that disconnect mid-request leak neither work nor queue slots.

A burst of large requests whose clients give up after a fraction of a second: the server
cancels them (counted with status 499), does not encode most of them, the queue depth goes
back to 0, and the next requests are served normally.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.api_server import ServerProcess
from tests.conftest import sts_sentences
from tests.reliability_server import assert_still_serving, start

REQUESTS = 16
INPUTS = 2048


def metric(client: httpx.Client, name: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = start(default_model_dir, tmp_path_factory.mktemp("disconnects") / "server.log")
    yield running
    running.stop()


async def _impatient_burst(url: str, body: bytes) -> int:
    """Send REQUESTS big requests at once; give each 0.3 s, then hang up. Returns how many timed out."""
    limits = httpx.Limits(max_connections=REQUESTS)
    timeout = httpx.Timeout(60, read=0.3)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:

        async def one() -> bool:
            try:
                await client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
                return False
            except httpx.ReadTimeout:
                return True

        return sum(await asyncio.gather(*(one() for _ in range(REQUESTS))))


def test_abandoned_requests_are_cancelled_and_free_their_queue_slots(server: ServerProcess) -> None:
    sentences = sts_sentences(1000)
    texts = [" ".join(sentences[(i + k) % len(sentences)] for k in range(8)) for i in range(INPUTS)]
    body = orjson.dumps({"input": texts, "model": "m", "encoding_format": "base64"})
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert_still_serving(client)
        inputs_before = metric(client, "embedding_inputs_total")
        started = time.perf_counter()
        abandoned = asyncio.run(_impatient_burst(server.url, body))
        assert abandoned >= REQUESTS // 2, "the requests finished too fast to test abandoning them"

        deadline = time.monotonic() + 30
        while metric(client, "embedding_queue_inputs") != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(client, "embedding_queue_inputs") == 0
        drained_after = time.perf_counter() - started

        # Work not leaked: most abandoned requests were never encoded.
        encoded = metric(client, "embedding_inputs_total") - inputs_before
        assert encoded <= (REQUESTS - abandoned // 2) * INPUTS, (encoded, abandoned)
        assert encoded < REQUESTS * INPUTS
        assert (
            metric(client, 'http_requests_total{method="POST",route="/v1/embeddings",status="499"}') >= abandoned // 2
        )
        # And the server is fine: a full-size request is served at once.
        response = client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 200 and len(response.json()["data"]) == INPUTS
        assert drained_after < 30
    assert server.process.poll() is None


def test_a_client_that_hangs_up_mid_body_does_not_hold_a_slot(server: ServerProcess) -> None:
    """Half a body, then the socket closes: the server gives up on it; nothing is queued."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
                sock.sendall(
                    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\n\r\n" + b'{"input": ["' + b"a" * 5000
                )
        time.sleep(0.5)
        assert metric(client, "embedding_queue_inputs") == 0
        assert_still_serving(client)
