"""Every client mistake over real HTTP: the right status and OpenAI's error envelope, never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from app.model_format import load_model
from app.settings import Settings
from tests.api_server import API_KEY, LIMITS, MAIN, OTHER_API_KEY, ServerProcess, running_server

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="session")
def server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    return running_server(default_model_dir, tmp_path_factory.getbasetemp() / "servers", **MAIN)


@pytest.fixture(scope="session")
def limits_server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    return running_server(default_model_dir, tmp_path_factory.getbasetemp() / "servers", **LIMITS)


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def limited(limits_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=limits_server.url, timeout=30) as client:
        yield client


def assert_error(
    response: httpx.Response,
    status: int,
    *,
    param: str | None = None,
    code: str | None = None,
    says: str = "",
    type: str = "invalid_request_error",
) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (type, param, code), error
    assert says.lower() in error["message"].lower(), error["message"]
    return error


# --- 400: the request itself is wrong --------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"input": "hi", "model": "m", "temperature": 1}, "temperature", "Unrecognized request argument supplied"),
        ({"input": "hi"}, "model", "model parameter"),
        ({"model": "m"}, "input", "input parameter"),
        ({"input": "hi", "model": 3}, "model", "must be a string"),
        ({"input": "", "model": "m"}, "input", "empty string"),
        ({"input": ["a", "b", ""], "model": "m"}, "input[2]", "empty string"),
        ({"input": [], "model": "m"}, "input", "empty array"),
        ({"input": ["a", 5], "model": "m"}, "input[1]", "must be a string"),
        ({"input": [1, "a"], "model": "m"}, "input", "integer token id"),
        ({"input": [[1, 2], []], "model": "m"}, "input[1]", "empty array of token ids"),
        ({"input": [[1, 2], 3], "model": "m"}, "input[1]", "array of token ids"),
        ({"input": [5, -1], "model": "m"}, "input", "outside this model's vocabulary"),
        ({"input": [[5], [7, 10**9]], "model": "m"}, "input[1]", "outside this model's vocabulary"),
        ({"input": [1.5], "model": "m"}, "input[0]", "a string, a token id"),
        ({"input": [True], "model": "m"}, "input[0]", "a string, a token id"),
        ({"input": {"text": "a"}, "model": "m"}, "input", "got an object"),
        ({"input": None, "model": "m"}, "input", "got null"),
        ({"input": "hi", "model": "m", "encoding_format": "int8"}, "encoding_format", "'float' and 'base64'"),
        ({"input": "hi", "model": "m", "dimensions": 0}, "dimensions", "1 to 256"),
        ({"input": "hi", "model": "m", "dimensions": 257}, "dimensions", "1 to 256"),
        ({"input": "hi", "model": "m", "dimensions": "8"}, "dimensions", "must be an integer"),
        ({"input": "hi", "model": "m", "dimensions": True}, "dimensions", "must be an integer"),
        ({"input": "hi", "model": "m", "dimensions": None}, "dimensions", "must be an integer"),
        ({"input": "hi", "model": "m", "user": 42}, "user", "must be a string"),
    ],
)
def test_invalid_bodies_name_the_parameter(http: httpx.Client, body: dict[str, object], param: str, says: str) -> None:
    assert_error(http.post("/v1/embeddings", json=body), 400, param=param, says=says)


def test_vocabulary_bound_is_exact(http: httpx.Client, default_model_dir: Path) -> None:
    vocab = load_model(default_model_dir).vocab_size
    assert http.post("/v1/embeddings", json={"input": [0, vocab - 1], "model": "m"}).status_code == 200
    error = assert_error(http.post("/v1/embeddings", json={"input": [vocab], "model": "m"}), 400, param="input")
    assert f"(0 to {vocab - 1})" in str(error["message"])


def test_more_than_2048_inputs(http: httpx.Client) -> None:
    assert http.post("/v1/embeddings", json={"input": ["a"] * 2048, "model": "m"}).status_code == 200
    assert_error(
        http.post("/v1/embeddings", json={"input": ["a"] * 2049, "model": "m"}), 400, param="input", says="2048"
    )


@pytest.mark.parametrize("content", [b"{not json", b"", b'["input", "model"]', b'"text"'])
def test_body_that_is_not_a_json_object(http: httpx.Client, content: bytes) -> None:
    response = http.post("/v1/embeddings", content=content, headers={"content-type": "application/json"})
    assert_error(response, 400, says="JSON")


def test_too_many_tokens_in_one_input_names_its_index(limited: httpx.Client) -> None:
    long_text = " ".join(["word"] * 17)  # 17 tokens; the limit is 16
    response = limited.post("/v1/embeddings", json={"input": ["short", long_text], "model": "my-alias"})
    error = assert_error(response, 400, param="input[1]", code="context_length_exceeded", says="input[1] has 17 tokens")
    assert "16" in str(error["message"])
    ok = limited.post("/v1/embeddings", json={"input": ["short", " ".join(["word"] * 16)], "model": "my-alias"})
    assert ok.status_code == 200


def test_too_many_tokens_in_one_request(limited: httpx.Client) -> None:
    texts = [" ".join(["word"] * 10)] * 5  # 50 tokens; the request limit is 40
    response = limited.post("/v1/embeddings", json={"input": texts, "model": "my-alias"})
    assert_error(response, 400, param="input", code="max_tokens_per_request", says="50 tokens")


def test_configured_input_count_limit(limited: httpx.Client) -> None:
    response = limited.post("/v1/embeddings", json={"input": ["a"] * 9, "model": "my-alias"})
    assert_error(response, 400, param="input", says="at most 8 inputs")


# --- 401: API keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "didn't provide an API key"),
        ({"Authorization": "Bearer sk-not-a-real-key-42"}, "Incorrect API key provided: sk-"),
        ({"Authorization": f"Basic {API_KEY}"}, "didn't provide an API key"),
        ({"Authorization": f"Bearer {API_KEY}x"}, "Incorrect API key"),
    ],
)
def test_missing_or_wrong_key(server: ServerProcess, headers: dict[str, str], says: str) -> None:
    for method, path in (("POST", "/v1/embeddings"), ("GET", "/v1/models"), ("GET", "/v1/models/x")):
        response = httpx.request(method, server.url + path, headers=headers, json={"input": "a", "model": "m"})
        error = assert_error(response, 401, code="invalid_api_key", says=says)
        assert "not-a-real-key" not in str(error["message"])  # the wrong key is masked
        assert response.headers["www-authenticate"] == "Bearer"


def test_every_configured_key_works_and_probes_need_none(server: ServerProcess) -> None:
    for key in (API_KEY, OTHER_API_KEY):
        response = httpx.post(
            server.url + "/v1/embeddings", headers={"Authorization": f"Bearer {key}"}, json={"input": "a", "model": "m"}
        )
        assert response.status_code == 200
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(server.url + path).status_code == 200


# --- 404 and 405 ------------------------------------------------------------------------------


def test_strict_model_names(limited: httpx.Client) -> None:
    error = assert_error(
        limited.post("/v1/embeddings", json={"input": "a", "model": "gpt-4o"}),
        404,
        param="model",
        code="model_not_found",
        says="The model 'gpt-4o' does not exist",
    )
    assert "my-alias" in str(error["message"])
    assert_error(limited.get("/v1/models/gpt-4o"), 404, param="model", code="model_not_found")
    listed = [model["id"] for model in limited.get("/v1/models").json()["data"]]
    assert listed[1:] == ["text-embedding-3-small", "my-alias"]
    for name in listed:
        response = limited.post("/v1/embeddings", json={"input": "a", "model": name})
        assert response.status_code == 200
        assert response.json()["model"] == listed[0]
        assert limited.get(f"/v1/models/{name}").json()["id"] == name


def test_unknown_route_and_wrong_method(http: httpx.Client) -> None:
    assert_error(http.get("/v1/completions"), 404, code="not_found")
    assert_error(http.get("/v1/embeddings"), 405, code="method_not_allowed")
    assert_error(http.delete("/v1/models"), 405, code="method_not_allowed")


# --- 413: body too large ----------------------------------------------------------------------


def test_body_over_the_limit_by_content_length(limited: httpx.Client) -> None:
    body = {"input": ["some words here"] * 300, "model": "my-alias"}  # ~5 KB, the limit is 4096 bytes
    assert_error(limited.post("/v1/embeddings", json=body), 413, code="request_too_large", says="4096 bytes")


def test_streamed_body_over_the_limit(limited: httpx.Client) -> None:
    """No Content-Length (chunked upload): the limit is enforced on the bytes as they arrive."""

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "my-alias", "input": ['
        for _ in range(400):
            yield b'"some words here",'
        yield b'"end"]}'

    response = limited.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, code="request_too_large")


# --- 503: not ready (in process: a real server is ready before it accepts connections) ---------


def test_not_ready_and_shutting_down_are_503_with_retry_after(default_model_dir: Path) -> None:
    app = create_app(Settings(model_dir=default_model_dir))
    state = app.state.service

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = {"input": "the cat", "model": "m"}
            ok = await client.post("/v1/embeddings", json=body)
            state.ready = False
            not_ready = [await client.post("/v1/embeddings", json=body), await client.get("/ready")]
            state.ready = True
            await state.service.batcher.stop()
            stopped = await client.post("/v1/embeddings", json=body)
            return [ok, *not_ready, stopped]

    ok, not_ready, ready_probe, stopped = asyncio.run(scenario())
    assert ok.status_code == 200
    assert ready_probe.status_code == 503
    for response in (not_ready, stopped):
        assert_error(response, 503, type="server_error", code="not_ready")
        assert int(response.headers["retry-after"]) >= 1
