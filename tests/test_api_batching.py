"""Batching, the bounded queue and metrics: the batcher on its own, then real servers under concurrent load."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.batching import Batcher, BatcherStopped, QueueFull
from app.encoder import Encoder
from app.model_format import load_model
from tests.api_server import API_KEY, MAIN, ServerProcess, running_server
from tests.conftest import sts_sentences

AUTH = {"Authorization": f"Bearer {API_KEY}"}
BUSY = {"max_queue_inputs": "4", "truncate": "true", "max_input_tokens": "8"}


# --- the batcher without HTTP -----------------------------------------------------------------


class Recorder:
    """A batch function that records its batches and can hold the first one until released."""

    def __init__(self, hold_first: bool = True) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not hold_first:
            self.release.set()
        self.queue_deltas: list[int] = []

    def __call__(self, jobs: Sequence[str]) -> list[str | BaseException]:
        self.batches.append(list(jobs))
        self.started.set()
        self.release.wait(10)
        return [ValueError(job) if job.startswith("bad") else job.upper() for job in jobs]

    def queue_changed(self, delta: int) -> None:
        self.queue_deltas.append(delta)


def make_batcher(recorder: Recorder, **limits: int) -> Batcher[str, str]:
    options = {"max_batch_inputs": 100, "max_batch_tokens": 10_000, "max_queue_inputs": 1_000, **limits}
    return Batcher(recorder, observer=recorder, **options)


async def wait_until_encoding(recorder: Recorder) -> None:
    await asyncio.get_running_loop().run_in_executor(None, recorder.started.wait, 10)


def test_lone_job_starts_at_once_and_waiting_jobs_form_the_next_batch() -> None:
    recorder = Recorder()

    async def scenario() -> list[str]:
        batcher = make_batcher(recorder)
        first = asyncio.ensure_future(batcher.submit("a", inputs=1, tokens=1))
        await wait_until_encoding(recorder)  # "a" is being encoded alone: nothing waited for company
        rest = [asyncio.ensure_future(batcher.submit(job, inputs=1, tokens=1)) for job in "bcde"]
        await asyncio.sleep(0.05)
        assert batcher.queued_inputs == 4
        recorder.release.set()
        results = await asyncio.gather(first, *rest)
        await batcher.stop()
        return results

    assert asyncio.run(scenario()) == ["A", "B", "C", "D", "E"]
    assert recorder.batches == [["a"], ["b", "c", "d", "e"]]
    assert sum(recorder.queue_deltas) == 0


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({"max_batch_inputs": 5}, [["a"], ["b", "c"], ["d", "e"]]),  # 2 inputs per job
        ({"max_batch_tokens": 25}, [["a"], ["b", "c"], ["d", "e"]]),  # 10 tokens per job
        ({"max_batch_inputs": 1}, [["a"], ["b"], ["c"], ["d"], ["e"]]),  # a job bigger than the limit still runs
    ],
)
def test_batches_respect_input_and_token_limits(limits: dict[str, int], expected: list[list[str]]) -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = make_batcher(recorder, **limits)
        first = asyncio.ensure_future(batcher.submit("a", inputs=2, tokens=10))
        await wait_until_encoding(recorder)
        rest = [asyncio.ensure_future(batcher.submit(job, inputs=2, tokens=10)) for job in "bcde"]
        await asyncio.sleep(0.05)
        recorder.release.set()
        await asyncio.gather(first, *rest)
        await batcher.stop()

    asyncio.run(scenario())
    assert recorder.batches == expected


def test_full_queue_refuses_at_once_and_one_bad_job_fails_alone() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = make_batcher(recorder, max_queue_inputs=3)
        first = asyncio.ensure_future(batcher.submit("a", inputs=1, tokens=1))
        await wait_until_encoding(recorder)
        queued = [asyncio.ensure_future(batcher.submit(job, inputs=1, tokens=1)) for job in ("b", "bad", "c")]
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFull) as refused:
            await batcher.submit("d", inputs=1, tokens=1)
        assert refused.value.retry_after >= 1
        assert refused.value.queued_inputs == 3
        recorder.release.set()
        assert await first == "A"
        results = await asyncio.gather(*queued, return_exceptions=True)
        assert results[0] == "B" and results[2] == "C"
        assert isinstance(results[1], ValueError)
        await batcher.stop()

    asyncio.run(scenario())
    assert recorder.batches == [["a"], ["b", "bad", "c"]]


def test_small_batches_run_on_the_event_loop_and_large_ones_in_the_thread() -> None:
    threaded, inline = Recorder(hold_first=False), Recorder(hold_first=False)
    loop_thread: list[int] = []

    def on_loop(jobs: Sequence[str]) -> list[str | BaseException]:
        loop_thread.append(threading.get_ident())
        return inline(jobs)

    async def scenario() -> list[str]:
        batcher = make_batcher(threaded, max_queue_inputs=1_000)
        batcher._process_inline, batcher.max_inline_size = on_loop, 10
        small = [batcher.submit(job, inputs=1, tokens=5) for job in ("a", "b")]  # 10: on the loop
        results = await asyncio.gather(*small)
        results.append(await batcher.submit("big", inputs=1, tokens=11))  # over the bound: the thread
        await batcher.stop()
        return results

    assert asyncio.run(scenario()) == ["A", "B", "BIG"]
    assert inline.batches == [["a", "b"]] and threaded.batches == [["big"]]
    assert loop_thread == [threading.get_ident()]


def test_cancelled_jobs_are_skipped_and_stop_fails_the_rest() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = make_batcher(recorder)
        first = asyncio.ensure_future(batcher.submit("a", inputs=1, tokens=1))
        await wait_until_encoding(recorder)
        gone = asyncio.ensure_future(batcher.submit("gone", inputs=1, tokens=1))
        kept = asyncio.ensure_future(batcher.submit("kept", inputs=1, tokens=1))
        await asyncio.sleep(0.01)
        gone.cancel()
        recorder.release.set()
        assert await kept == "KEPT"
        await first
        recorder.release.clear()
        recorder.started.clear()
        holder = asyncio.ensure_future(batcher.submit("held", inputs=1, tokens=1))
        await wait_until_encoding(recorder)
        waiting = asyncio.ensure_future(batcher.submit("waiting", inputs=1, tokens=1))
        await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.01)
        recorder.release.set()
        await stopping
        with pytest.raises(BatcherStopped):
            await waiting
        assert await holder == "HELD"  # the batch in flight when stopping still completes
        with pytest.raises(BatcherStopped):
            await batcher.submit("late", inputs=1, tokens=1)

    asyncio.run(scenario())
    assert ["gone"] not in recorder.batches and all("gone" not in batch for batch in recorder.batches)
    assert sum(recorder.queue_deltas) == 0


# --- real servers -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    return running_server(default_model_dir, tmp_path_factory.getbasetemp() / "servers", **MAIN)


@pytest.fixture(scope="session")
def encoder(default_model_dir: Path) -> Encoder:
    return Encoder(load_model(default_model_dir))


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by name and sorted labels."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def long_texts(count: int, words: int) -> list[str]:
    pool = " ".join(sts_sentences(400)).split()
    return [" ".join(pool[(i * 7) % 300 : (i * 7) % 300 + words]) + f" {i}" for i in range(count)]


async def post_all(
    url: str, bodies: list[dict[str, object]], lead: dict[str, object] | None, head_start: float = 0.05
) -> list[httpx.Response]:
    """Send ``lead`` first (a long request that keeps the encoder busy), then all ``bodies`` at once."""
    limits = httpx.Limits(max_connections=len(bodies) + 1)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as client:
        leading = asyncio.ensure_future(client.post("/v1/embeddings", json=lead)) if lead else None
        await asyncio.sleep(head_start)
        responses = await asyncio.gather(*(client.post("/v1/embeddings", json=body) for body in bodies))
        if leading is not None:
            assert (await leading).status_code == 200
        return list(responses)


def test_concurrent_requests_each_get_their_own_vectors(server: ServerProcess, encoder: Encoder) -> None:
    before = scrape(server.url)
    sentences = sts_sentences(200)
    # 48 requests with distinct inputs, different sizes, formats and dimensions, all in flight together.
    bodies: list[dict[str, object]] = []
    for i in range(48):
        texts = sentences[i * 4 : i * 4 + 1 + i % 4]
        body: dict[str, object] = {"input": texts, "model": "m", "encoding_format": "float"}
        if i % 3 == 1:
            body["dimensions"] = 64
        if i % 5 == 2:
            batch = encoder.tokenize(texts)
            starts = np.concatenate(([0], np.cumsum(batch.lengths)))
            body["input"] = [batch.ids[starts[k] : starts[k + 1]].tolist() for k in range(len(texts))]
        body["_texts"] = texts
        bodies.append(body)
    lead = {"input": long_texts(600, 120), "model": "m"}
    sent = [{k: v for k, v in body.items() if k != "_texts"} for body in bodies]
    responses = asyncio.run(post_all(server.url, sent, lead))

    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200, response.text
        texts = body["_texts"]
        assert isinstance(texts, list)
        got = np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)
        expected = encoder.encode(texts, dimensions=body.get("dimensions"))  # type: ignore[arg-type]
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert response.json()["usage"]["prompt_tokens"] == encoder.tokenize(texts).total_tokens

    after = scrape(server.url)
    inputs = 600 + sum(len(body["_texts"]) for body in bodies)  # type: ignore[arg-type]
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    assert delta[("embedding_inputs_total", ())] == inputs
    assert delta[("embedding_batch_inputs_sum", ())] == inputs
    assert delta[("embedding_batch_inputs_count", ())] < len(bodies) + 1  # requests were encoded together
    ok = (("method", "POST"), ("route", "/v1/embeddings"), ("status", "200"))
    assert delta[("http_requests_total", ok)] == len(bodies) + 1
    assert delta[("http_request_duration_seconds_count", (("method", "POST"), ("route", "/v1/embeddings")))] >= 49
    assert delta[("embedding_encode_seconds_count", ())] == delta[("embedding_batch_inputs_count", ())]
    assert delta[("embedding_tokens_total", ())] > inputs
    assert after[("embedding_queue_inputs", ())] == 0


@pytest.fixture(scope="session")
def busy_server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    return running_server(default_model_dir, tmp_path_factory.getbasetemp() / "servers", **BUSY)


def test_full_queue_answers_429_with_retry_after(busy_server: ServerProcess, encoder: Encoder) -> None:
    before = scrape(busy_server.url)
    sentences = sts_sentences(40)
    bodies: list[dict[str, object]] = [{"input": [text], "model": "m"} for text in sentences[:30]]
    # Truncated to 8 tokens each, but tokenized in full: about 2.4 M tokens (10 MB of JSON), 0.4 s or more.
    lead = {"input": long_texts(2048, 1000), "model": "m"}
    responses = asyncio.run(post_all(busy_server.url, bodies, lead, head_start=0.2))

    refused = [r for r in responses if r.status_code == 429]
    served = [(b, r) for b, r in zip(bodies, responses, strict=True) if r.status_code == 200]
    assert refused and len(refused) + len(served) == len(bodies)
    for response in refused:
        error = response.json()["error"]
        assert (error["type"], error["code"], error["param"]) == ("rate_limit_exceeded", "queue_full", None)
        assert int(response.headers["retry-after"]) >= 1
    for body, response in served:
        texts = body["input"]
        assert isinstance(texts, list)
        expected = encoder.embed(encoder.tokenize(texts).truncate(8))
        np.testing.assert_allclose(response.json()["data"][0]["embedding"], expected[0], atol=1e-6)
    after = scrape(busy_server.url)
    rejected = (("reason", "queue_full"),)
    assert after[("embedding_rejected_requests_total", rejected)] - before.get(
        ("embedding_rejected_requests_total", rejected), 0.0
    ) == len(refused)


def test_truncation_is_visible_in_usage(busy_server: ServerProcess, encoder: Encoder) -> None:
    text = "The quick brown fox jumps over the lazy dog and keeps running far away"
    assert encoder.tokenize([text]).total_tokens > 8
    body = {"input": text, "model": "m", "encoding_format": "base64"}
    response = httpx.post(f"{busy_server.url}/v1/embeddings", json=body, timeout=30)
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] == 8
    got = np.frombuffer(base64.b64decode(response.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(got, encoder.embed(encoder.tokenize([text]).truncate(8))[0])
    assert not np.allclose(got, encoder.encode([text])[0], atol=1e-3)  # truncation really happened


def test_metrics_add_up_across_worker_processes(
    default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, encoder: Encoder
) -> None:
    server = running_server(default_model_dir, tmp_path_factory.getbasetemp() / "servers", workers="2")
    texts = sts_sentences(60)

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/embeddings", json={"input": texts[i : i + 2], "model": "m"})
                    for i in range(0, 60, 2)
                )
            )

    responses = asyncio.run(send())
    for i, response in enumerate(responses):
        assert response.status_code == 200
        got = np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, encoder.encode(texts[2 * i : 2 * i + 2]), atol=1e-6)
    # Whichever worker answers /metrics, it reports the traffic of both.
    for _ in range(4):
        samples = scrape(server.url)
        ok = (("method", "POST"), ("route", "/v1/embeddings"), ("status", "200"))
        assert samples[("http_requests_total", ok)] == 30
        assert samples[("embedding_inputs_total", ())] == 60
        assert samples[("embedding_queue_inputs", ())] == 0
