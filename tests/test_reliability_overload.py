"""Overload: past the queue bound, excess requests get 429 with Retry-After at once; memory stays
bounded; every accepted request completes with its own vectors. Also a seconds-long smoke run of
``loadtests/soak.py`` (the real soak runs for minutes, outside CI; see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.encoder import Encoder
from app.model_format import load_model
from tests.api_server import ROOT, ServerProcess
from tests.conftest import sts_sentences
from tests.reliability_server import assert_error_envelope, assert_still_serving, start

QUEUE_BOUND = 64
REQUEST_INPUTS = 64
CONCURRENT = 48
# The lead must still be encoding when the burst's refusals come back: about 700k tokens,
# a second or more of work even for the fast encoder, over the default per-request limit.
LEAD_SENTENCES = 30
LEAD_TOKENS_LIMIT = 2_000_000


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def queue_depth(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("embedding_queue_inputs "):
            return float(line.split()[1])
    raise AssertionError("no embedding_queue_inputs gauge")


@pytest.fixture(scope="module")
def server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = start(
        default_model_dir,
        tmp_path_factory.mktemp("overload") / "server.log",
        max_queue_inputs=str(QUEUE_BOUND),
        max_batch_inputs=str(REQUEST_INPUTS),
        max_request_tokens=str(LEAD_TOKENS_LIMIT),
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def encoder(default_model_dir: Path) -> Encoder:
    return Encoder(load_model(default_model_dir))


def _requests() -> tuple[list[str], list[list[str]]]:
    """A lead request of 2048 long texts (it keeps the encoder busy for a while), then CONCURRENT
    distinct requests of REQUEST_INPUTS real sentences each."""
    sentences = sts_sentences(1000)
    lead = [" ".join(sentences[(i + k) % len(sentences)] for k in range(LEAD_SENTENCES)) for i in range(2048)]
    long_texts = [" ".join(sentences[i : i + 12]) for i in range(len(sentences) - 12)]
    batches = [
        [long_texts[(r * 7 + i) % len(long_texts)] + f" request {r}" for i in range(REQUEST_INPUTS)]
        for r in range(CONCURRENT)
    ]
    return lead, batches


Outcome = tuple[int, float, httpx.Response]  # request index (-1: the lead), seconds until answered, answer


async def _burst(url: str, lead: list[str], batches: list[list[str]]) -> tuple[Outcome, list[Outcome]]:
    """Send the lead, then, while it is being encoded, every batch at once."""
    limits = httpx.Limits(max_connections=len(batches) + 1, max_keepalive_connections=len(batches) + 1)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        # Open every connection first so the burst arrives together.
        await asyncio.gather(*(client.get("/health") for _ in range(len(batches) + 1)))
        started = time.perf_counter()

        async def one(index: int, texts: list[str]) -> Outcome:
            body = {"input": texts, "model": "m", "encoding_format": "base64"}
            response = await client.post("/v1/embeddings", json=body)
            return index, time.perf_counter() - started, response

        leading = asyncio.ensure_future(one(-1, lead))
        await asyncio.sleep(0.05)
        rest = await asyncio.gather(*(one(i, texts) for i, texts in enumerate(batches)))
        return await leading, list(rest)


def test_a_burst_past_the_queue_bound_is_refused_at_once_and_the_rest_complete(
    server: ServerProcess, encoder: Encoder
) -> None:
    lead, batches = _requests()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        leads: list[Outcome] = []
        results: list[Outcome] = []
        rss_before = 0
        for burst in range(3):  # several bursts: after the first (warm-up), memory must not grow
            if burst == 1:
                rss_before = rss_bytes(server.process.pid)
            first, rest = asyncio.run(_burst(server.url, lead, batches))
            leads.append(first)
            results += rest
            # "At once": refusals come back while the lead is still being encoded.
            refused_at = [seconds for _, seconds, r in rest if r.status_code != 200]
            assert refused_at and np.median(refused_at) < first[1], (refused_at, first[1])
        rss_after = rss_bytes(server.process.pid)

        accepted = [outcome for outcome in leads + results if outcome[2].status_code == 200]
        refused = [outcome for outcome in results if outcome[2].status_code != 200]
        assert all(r.status_code == 200 for _, _, r in leads)
        for _, _, response in refused:
            error = assert_error_envelope(response, (429, 503))
            assert error["code"] == "queue_full"
            assert int(response.headers["Retry-After"]) >= 1
        # Every accepted request completed with its own inputs' vectors.
        for index, _, response in accepted:
            texts = lead if index == -1 else batches[index]
            data = response.json()["data"]
            got = np.array([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in data])
            np.testing.assert_allclose(got, encoder.encode(texts), rtol=0, atol=1e-6)
        # Memory bounded: more bursts of refused and accepted work leave the process where the first left it.
        assert rss_after < rss_before * 1.15 + 16 * 2**20, (rss_before, rss_after)
        # The queue drained, and the server serves normally again.
        deadline = time.monotonic() + 10
        while queue_depth(client) != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert queue_depth(client) == 0
        assert_still_serving(client)
        metrics = client.get("/metrics").text
        assert 'embedding_rejected_requests_total{reason="queue_full"}' in metrics


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_bodies_of_millions_of_tiny_inputs_cost_bounded_memory(server: ServerProcess) -> None:
    """16 MiB of ``"a",`` is 4 million inputs: refused with a 400, and parsing it has a fixed cost.

    The body is decoded before it can be counted, so one such request briefly costs about
    25 times its size; the point is that the cost is bounded by EMBED_MAX_BODY_BYTES and
    does not add up over requests: the peak stays where the first request put it.
    """
    max_body = 16 * 2**20
    count = (max_body - 64) // 4
    body = b'{"model":"m","input":[' + b",".join([b'"a"'] * count) + b"]}"
    assert len(body) <= max_body
    pid = server.process.pid
    with httpx.Client(base_url=server.url, timeout=120) as client:
        peak_after_first = 0
        for attempt in range(5):
            response = client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
            error = assert_error_envelope(response, 400)
            assert f"'input' has {count} items; at most 2048" in str(error["message"])
            if attempt == 0:
                peak_after_first = peak_rss_bytes(pid)
        # Each parse costs the same peak; repeats do not raise it (resident memory between
        # requests wanders below it as the allocator keeps or returns pages).
        assert peak_rss_bytes(pid) < peak_after_first * 1.05 + 16 * 2**20
        assert peak_rss_bytes(pid) < 40 * max_body + 200 * 2**20  # bounded by the body limit
        assert rss_bytes(pid) <= peak_rss_bytes(pid)
        assert_still_serving(client)


def test_the_soak_script_runs_and_reports(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A seconds-long smoke of loadtests/soak.py: it serves, reports, and finds no errors."""
    report = tmp_path / "soak.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "loadtests" / "soak.py"),
            "--model-dir",
            str(tiny_model_dir),
            "--duration",
            "4",
            "--warmup",
            "1",
            "--concurrency",
            "4",
            "--json",
            str(report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    figures = json.loads(report.read_text())
    assert figures["requests"] > 20 and figures["errors"] == 0
    assert 0 < figures["latency_ms"]["p50"] <= figures["latency_ms"]["p99"]
    assert figures["rss_start_bytes"] > 0 and figures["rss_end_bytes"] > 0
    assert "p99" in completed.stdout
