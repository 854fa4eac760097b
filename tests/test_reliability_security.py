"""Security: several API keys rotated by configuration and compared in constant time, no key in
the logs (even at trace level), no stack trace or internal path in any response, a request id on
every response and log line, CORS off unless configured.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.auth import APIKeys
from app.errors import APIError
from app.main import create_app
from app.settings import Settings
from tests.api_server import ServerProcess
from tests.reliability_server import LEAK, assert_error_envelope, assert_no_leak, start

OLD_KEY = "sk-old-Q7f3x9LmPa2"
NEW_KEY = "sk-new-Zr8Kd4Wb1Yc"
WRONG_KEY = "sk-wrong-Hh5Tn0Vs6"
ORIGIN = "https://app.example"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+ \[([^\]\s]+)\] ")


@pytest.fixture(scope="module")
def both_keys(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Mid-rotation: the old and the new key both work. Trace logging and the access log on."""
    server = start(
        tiny_model_dir,
        tmp_path_factory.mktemp("security") / "both.log",
        api_keys=f"{OLD_KEY},{NEW_KEY}",
        log_level="trace",
        access_log="true",
        cors_origins=ORIGIN,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rotated(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """After rotation: only the new key; no CORS configured."""
    server = start(
        tiny_model_dir, tmp_path_factory.mktemp("security") / "rotated.log", api_keys=NEW_KEY, log_level="debug"
    )
    yield server
    server.stop()


def embed(server: ServerProcess, key: str | None, **headers: str) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{server.url}/v1/embeddings", json={"input": "the cat", "model": "m"}, headers=headers)


def test_every_configured_key_is_accepted_and_nothing_else(both_keys: ServerProcess) -> None:
    assert embed(both_keys, OLD_KEY).status_code == 200
    assert embed(both_keys, NEW_KEY).status_code == 200
    for key in (None, WRONG_KEY, OLD_KEY + "x", OLD_KEY[:-1], NEW_KEY.upper(), f"{OLD_KEY},{NEW_KEY}"):
        response = embed(both_keys, key)
        error = assert_error_envelope(response, 401)
        assert error["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"] == "Bearer"
        assert key is None or key not in response.text  # a wrong key is shown masked, never whole
    models = httpx.get(f"{both_keys.url}/v1/models", headers={"Authorization": f"Bearer {WRONG_KEY}"})
    assert_error_envelope(models, 401)


def test_a_rotated_key_stops_working(rotated: ServerProcess) -> None:
    assert embed(rotated, NEW_KEY).status_code == 200
    assert_error_envelope(embed(rotated, OLD_KEY), 401)


def test_keys_are_compared_in_constant_time_against_every_configured_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """``hmac.compare_digest`` for every configured key, whether the first, the last or none matches."""
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("app.auth.hmac.compare_digest", counting)
    keys = APIKeys(("k-first-111111", "k-middle-22222", "k-last-3333333"))
    for presented, accepted in (("k-first-111111", True), ("k-last-3333333", True), ("k-none-0000000", False)):
        calls.clear()
        try:
            keys.check(f"Bearer {presented}")
            outcome = True
        except APIError:
            outcome = False
        assert outcome is accepted
        assert len(calls) == 3, "no early exit: every key is compared"


def test_no_key_reaches_the_logs(both_keys: ServerProcess, rotated: ServerProcess) -> None:
    for server in (both_keys, rotated):
        for key in (OLD_KEY, NEW_KEY, WRONG_KEY):
            embed(server, key)
            httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    for server in (both_keys, rotated):
        log = server.log()
        assert "ASGI" in log or server is rotated  # trace logging really was on for the first server
        for key in (OLD_KEY, NEW_KEY, WRONG_KEY):
            assert key not in log
            assert key[-8:] not in log


def test_every_response_carries_a_request_id_and_echoes_a_safe_one(both_keys: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {NEW_KEY}"}
    with httpx.Client(base_url=both_keys.url) as client:
        responses = [
            client.get("/health"),
            client.get("/ready"),
            client.get("/metrics"),
            client.get("/openapi.json"),
            client.get("/v1/models", headers=auth),
            client.get("/v1/models/nope", headers=auth),
            client.get("/no/such/path"),
            client.put("/v1/embeddings"),
            client.post("/v1/embeddings", content=b"{", headers=auth),
            client.post("/v1/embeddings", json={"input": "x", "model": "m"}),
            client.options("/v1/embeddings", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}),
        ]
        for response in responses:
            assert re.fullmatch(r"[0-9a-f]{32}", response.headers.get("x-request-id", "")), response.headers
        assert len({r.headers["x-request-id"] for r in responses}) == len(responses)

        echoed = client.get("/health", headers={"X-Request-ID": "trace-me.42:abc"})
        assert echoed.headers["x-request-id"] == "trace-me.42:abc"
        for unsafe in ("has space", "x" * 200, "semi;colon", 'quote"d', "caf\u00e9"):
            replaced = client.get("/health", headers={"X-Request-ID": unsafe.encode("utf-8")})
            assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"]), unsafe

        client.post("/v1/embeddings", json={"input": "x", "model": "m"}, headers={**auth, "X-Request-ID": "find-me-7"})
    log = both_keys.log()
    lines = [line for line in log.splitlines() if line.strip()]
    assert all(LOG_LINE.match(line) for line in lines), [line for line in lines if not LOG_LINE.match(line)][:3]
    tagged = [line for line in lines if "[find-me-7]" in line]
    assert any('"POST /v1/embeddings HTTP/1.1" 200' in line for line in tagged)  # the access log line
    assert any("request started" in line for line in tagged)


def test_cors_is_off_unless_configured(both_keys: ServerProcess, rotated: ServerProcess) -> None:
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = httpx.options(f"{both_keys.url}/v1/embeddings", headers=preflight)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(f"{both_keys.url}/v1/embeddings", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    simple = embed(both_keys, NEW_KEY, Origin="https://evil.example")
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers

    off = httpx.options(f"{rotated.url}/v1/embeddings", headers=preflight)
    assert "access-control-allow-origin" not in off.headers
    assert_error_envelope(off, 405)
    simple = embed(rotated, NEW_KEY, Origin=ORIGIN)
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


def test_an_internal_error_shows_no_trace_or_path(tiny_model_dir: Path) -> None:
    """A failure inside the service (here: the encoder raising) is a generic 500 with a request id;
    the details, with their paths, go to the log only."""
    app = create_app(Settings(model_dir=tiny_model_dir))
    secret = f"{tiny_model_dir}/model.safetensors: bad mmap in /usr/lib/python3/encoder.py line 12"

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError(secret)

    app.state.service.service.encoder.embed = broken

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/v1/embeddings", json={"input": "the cat", "model": "m"})

    response = asyncio.run(call())
    error = assert_error_envelope(response, 500)
    assert error["type"] == "server_error"
    assert secret not in response.text and not LEAK.search(response.text)
    assert_no_leak(response)
