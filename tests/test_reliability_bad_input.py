"""Every kind of bad input, sent over real HTTP to ``python -m app``: a 4xx in OpenAI's envelope
whose message says what to fix, never a 500, and the server keeps serving after each.

The cases live in ``CASES``; the table in ``docs/reliability-bad-inputs.md`` is written from
the answers the server actually gave (``python -m tests.test_reliability_bad_input`` rewrites
it, and ``test_the_documented_table_is_current`` fails when it is stale).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.api_server import ROOT, ServerProcess
from tests.reliability_server import assert_error_envelope, assert_no_leak, assert_still_serving, start

TABLE = ROOT / "docs" / "reliability-bad-inputs.md"
REWRITE_ENV = "EMBED_TEST_REWRITE_DOCS"
JSON_TYPE = {"content-type": "application/json"}
VOCAB = 29528  # rows of the default model's table (all-MiniLM-L6-v2's vocabulary less unused entries)
WIDTH = 256
MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    """One request and what the answer must say. ``body`` is sent as-is when bytes, as JSON otherwise."""

    name: str  # what the table shows in its first column
    body: object
    status: int
    says: str  # the answer's message contains this: it tells the client what to fix
    param: str | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_TYPE))
    method: str = "POST"
    path: str = "/v1/embeddings"
    chunked: bool = False

    def content(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


def _ok(**fields: object) -> dict[str, object]:
    return {"input": "hello world", "model": "text-embedding-3-small", **fields}


def _words(count: int) -> str:
    return " ".join(["river"] * count)


def _chunks(payload: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    for offset in range(0, len(payload), size):
        yield payload[offset : offset + size]


CASES: tuple[Case, ...] = (
    # The body itself
    Case("invalid JSON (truncated object)", b'{"input": "hello", "model": ', 400, "could not parse the JSON body"),
    Case("JSON that is not an object (an array)", ["hello"], 400, "must be a JSON object"),
    Case("JSON nested 2000 levels deep", b"[" * 2000 + b"]" * 2000, 400, "depth limit exceeded"),
    Case(
        "Content-Type: text/plain", _ok(), 400, "Content-Type: application/json", headers={"content-type": "text/plain"}
    ),
    Case(
        "form-encoded body (curl -d without -H)",
        b"input=hello&model=m",
        400,
        "Content-Type: application/json",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    Case("invalid UTF-8 (raw byte 0xff in a string)", b'{"input": "caf\xff", "model": "m"}', 400, "not valid UTF-8"),
    Case(
        "overlong UTF-8 encoding of '/' (0xc0 0xaf)", b'{"input": "a\xc0\xafb", "model": "m"}', 400, "not valid UTF-8"
    ),
    Case(
        "UTF-16 surrogate encoded as UTF-8 bytes (0xed 0xa0 0x80)",
        b'{"input": "\xed\xa0\x80", "model": "m"}',
        400,
        "not valid UTF-8",
    ),
    Case("lone high surrogate escape \\ud800", b'{"input": "a\\ud800b", "model": "m"}', 400, "surrogate"),
    Case("lone low surrogate escape \\udc00", b'{"input": "\\udc00", "model": "m"}', 400, "surrogate"),
    Case("raw NUL byte inside a string", b'{"input": "a\x00b", "model": "m"}', 400, "control character"),
    Case("raw NUL byte between tokens", b'{"input": "ab",\x00 "model": "m"}', 400, "could not parse the JSON body"),
    Case("number too large for a double (1e400)", b'{"input": [1e400], "model": "m"}', 400, "infinity"),
    Case(
        "body over the size limit (Content-Length 16 MiB + 1)",
        b"[" + b" " * (MAX_BODY - 1) + b"]",
        413,
        "exceeds the limit of 16777216 bytes",
    ),
    Case(
        "body over the size limit, chunked (no Content-Length)",
        b'{"input": "' + b"a" * MAX_BODY + b'", "model": "m"}',
        413,
        "exceeds the limit of 16777216 bytes",
        chunked=True,
    ),
    # Fields
    Case("missing 'input'", {"model": "m"}, 400, "provide an input parameter", "input"),
    Case("missing 'model'", {"input": "hello"}, 400, "provide a model parameter", "model"),
    Case("'model' is a number", {"input": "hello", "model": 3}, 400, "'model' must be a string", "model"),
    Case("'input' is null", {"input": None, "model": "m"}, 400, "'input' must be a string", "input"),
    Case("'input' is a number", {"input": 42, "model": "m"}, 400, "'input' must be a string", "input"),
    Case("'input' is an object", {"input": {"text": "hi"}, "model": "m"}, 400, "'input' must be a string", "input"),
    Case("'user' is a number", _ok(user=7), 400, "'user' must be a string", "user"),
    Case(
        "unknown field 'temperature'",
        _ok(temperature=0.5),
        400,
        "Unrecognized request argument supplied: temperature",
        "temperature",
    ),
    Case(
        "misspelled field 'inputs'",
        {"inputs": ["hi"], "model": "m"},
        400,
        "Unrecognized request argument supplied: inputs",
        "inputs",
    ),
    # Input shapes and sizes
    Case("empty string", _ok(input=""), 400, "cannot be an empty string", "input"),
    Case(
        "empty string inside an array", _ok(input=["fine", ""]), 400, "input[1] cannot be an empty string", "input[1]"
    ),
    Case("empty input array", _ok(input=[]), 400, "cannot be an empty array", "input"),
    Case("2049 inputs (limit 2048)", _ok(input=["hi"] * 2049), 400, "at most 2048 inputs", "input"),
    Case(
        "a huge number of tiny inputs (200000 x 'a')", _ok(input=["a"] * 200_000), 400, "at most 2048 inputs", "input"
    ),
    Case(
        "a text over the token limit (9000 tokens, limit 8192)",
        _ok(input=["short", _words(9000)]),
        400,
        "input[1] has 9000 tokens; the maximum per input is 8192",
        "input[1]",
    ),
    Case(
        "a token-id array over the token limit (9000 ids)",
        _ok(input=[[7] * 9000]),
        400,
        "input[0] has 9000 tokens; the maximum per input is 8192",
        "input[0]",
    ),
    Case(
        "one flat token-id array of 2049 ids (OpenAI caps any array at 2048)",
        _ok(input=[7] * 2049),
        400,
        "at most 2048",
        "input",
    ),
    Case(
        "over the per-request token total (2048 x 150 tokens)",
        _ok(input=[_words(150)] * 2048),
        400,
        "maximum per request is 300000",
        "input",
    ),
    Case(
        "token id past the vocabulary",
        _ok(input=[101, VOCAB]),
        400,
        f"outside this model's vocabulary (0 to {VOCAB - 1})",
        "input",
    ),
    Case("token id 2**40", _ok(input=[2**40]), 400, "outside this model's vocabulary", "input"),
    Case(
        "token id 2**70 (beyond 64 bits)", _ok(input=[2**70]), 400, "input[0] must be a string, a token id", "input[0]"
    ),
    Case("negative token id", _ok(input=[[101, -1]]), 400, "input[0][1] is token id -1", "input[0]"),
    Case("token id as a float", _ok(input=[101, 1.5]), 400, "input[1] must be an integer token id", "input"),
    Case(
        "token id as a boolean", _ok(input=[True]), 400, "input[0] must be a string, a token id or an array", "input[0]"
    ),
    Case(
        "strings then a number", _ok(input=["a", 1]), 400, "input[1] must be a string like the other items", "input[1]"
    ),
    Case("token ids then a string", _ok(input=[1, "a"]), 400, "input[1] must be an integer token id", "input"),
    Case(
        "token-id arrays then a string",
        _ok(input=[[1, 2], "a"]),
        400,
        "input[1] must be an array of token ids",
        "input[1]",
    ),
    Case("token ids then an array", _ok(input=[1, [2]]), 400, "input[1] must be an integer token id", "input"),
    Case(
        "string inside a token-id array",
        _ok(input=[[1, "a"]]),
        400,
        "input[0][1] must be an integer token id",
        "input[0]",
    ),
    Case("empty token-id array", _ok(input=[[]]), 400, "input[0] cannot be an empty array of token ids", "input[0]"),
    Case("three levels of arrays", _ok(input=[[[1]]]), 400, "input[0][0] must be an integer token id", "input[0]"),
    Case("array of nulls", _ok(input=[None]), 400, "input[0] must be a string, a token id or an array", "input[0]"),
    # Options
    Case("dimensions 0", _ok(dimensions=0), 400, f"supports 1 to {WIDTH} dimensions", "dimensions"),
    Case("dimensions negative", _ok(dimensions=-8), 400, f"supports 1 to {WIDTH} dimensions", "dimensions"),
    Case(
        "dimensions above the model's width",
        _ok(dimensions=WIDTH + 1),
        400,
        f"supports 1 to {WIDTH} dimensions",
        "dimensions",
    ),
    Case(
        "dimensions not an integer (64.5)", _ok(dimensions=64.5), 400, "'dimensions' must be an integer", "dimensions"
    ),
    Case("dimensions as a string", _ok(dimensions="64"), 400, "'dimensions' must be an integer", "dimensions"),
    Case("dimensions as a boolean", _ok(dimensions=True), 400, "'dimensions' must be an integer", "dimensions"),
    Case(
        "unknown encoding_format 'float16'",
        _ok(encoding_format="float16"),
        400,
        "supported values are 'float' and 'base64'",
        "encoding_format",
    ),
    Case(
        "encoding_format null",
        _ok(encoding_format=None),
        400,
        "supported values are 'float' and 'base64'",
        "encoding_format",
    ),
    # Routes
    Case("GET on the POST route", None, 405, "Method not allowed", method="GET", headers={}),
    Case("unknown path", _ok(), 404, "serves /v1/embeddings", path="/v1/embedding"),
)

# Inputs that look odd but are valid: each gets a 200, and the table says what policy applies.
ACCEPTED: tuple[tuple[Case, str], ...] = (
    (
        Case("NUL as a JSON escape (\\u0000) inside a text", _ok(input=["a\u0000b"]), 200, ""),
        "embedded; the tokenizer drops control characters",
    ),
    (Case("only whitespace", _ok(input=["   \t\n"]), 200, ""), "zero vector: no token"),
    (
        Case("only characters the vocabulary lacks", _ok(input=["\U0001f9ea\U0001f9ea"]), 200, ""),
        "zero vector: no known token",
    ),
    (Case("2048 one-letter inputs", _ok(input=["a"] * 2048), 200, ""), "2048 unit vectors"),
    (
        Case("Content-Type with charset", _ok(), 200, "", headers={"content-type": "application/json; charset=utf-8"}),
        "accepted",
    ),
    (
        Case("unknown model name (lenient default)", _ok(model="gpt-4o"), 200, ""),
        "served by the default model, named in 'model'",
    ),
)


@pytest.fixture(scope="module")
def server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = start(default_model_dir, tmp_path_factory.mktemp("bad-input") / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def send(client: httpx.Client, case: Case) -> httpx.Response:
    content: bytes | Iterator[bytes] | None = None if case.body is None else case.content()
    if case.chunked and isinstance(content, bytes):
        content = _chunks(content)
    return client.request(case.method, case.path, content=content, headers=case.headers)


_answers: dict[str, tuple[int, str]] = {}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gets_a_4xx_that_says_what_to_fix(client: httpx.Client, case: Case) -> None:
    response = send(client, case)
    error = assert_error_envelope(response, case.status)
    assert case.says in str(error["message"]), error["message"]
    if case.param is not None:
        assert error["param"] == case.param, error
    assert error["type"] == "invalid_request_error"
    _answers[case.name] = (response.status_code, str(error["message"]))
    assert_still_serving(client)


@pytest.mark.parametrize(("case", "policy"), ACCEPTED, ids=[case.name for case, _ in ACCEPTED])
def test_odd_but_valid_input_is_served(client: httpx.Client, case: Case, policy: str) -> None:
    response = send(client, case)
    assert response.status_code == 200, response.text
    assert_no_leak(response)
    body = response.json()
    vectors = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
    assert np.isfinite(vectors).all()
    norms = np.linalg.norm(vectors, axis=1)
    if policy.startswith("zero vector"):
        assert np.all(norms == 0) and body["usage"]["prompt_tokens"] >= 0
    else:
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    _answers[case.name] = (200, policy)


def test_the_server_answered_every_bad_input_and_still_serves(server: ServerProcess, client: httpx.Client) -> None:
    """After all of the above: same process, no 500 counted, and the log holds no traceback."""
    assert server.process.poll() is None
    assert_still_serving(client)
    metrics = client.get("/metrics").text
    assert 'status="500"' not in metrics
    assert "Traceback" not in server.log()


def render_table(answers: dict[str, tuple[int, str]]) -> str:
    """The markdown page: every case, in order, with the status and message the server gave."""
    lines = [
        "# Bad inputs and the answers they get",
        "",
        "Generated by `python -m tests.test_reliability_bad_input` from the answers a real",
        "`python -m app` (default model, default limits) gave over HTTP; `make test` fails if",
        "this file is stale. Every answer is OpenAI's error envelope",
        '`{"error": {"message", "type", "param", "code"}}` with `type` `invalid_request_error`,',
        "and the server keeps serving after each (checked after every case).",
        "",
        "| Input sent to `POST /v1/embeddings` | Status | Message |",
        "|---|---|---|",
    ]
    for case in CASES:
        status, message = answers[case.name]
        lines.append(f"| {_cell(case.name)} | {status} | {_cell(message)} |")
    lines += [
        "",
        "## Odd but valid inputs",
        "",
        "| Input | Status | What happens |",
        "|---|---|---|",
    ]
    for case, _ in ACCEPTED:
        status, policy = answers[case.name]
        lines.append(f"| {_cell(case.name)} | {status} | {_cell(policy)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def test_the_documented_table_is_current(client: httpx.Client) -> None:
    """Re-run any case not answered yet in this session (e.g. under -k), then compare with the docs."""
    for case in CASES:
        if case.name not in _answers:
            response = send(client, case)
            _answers[case.name] = (response.status_code, str(response.json()["error"]["message"]))
    for case, policy in ACCEPTED:
        _answers.setdefault(case.name, (send(client, case).status_code, policy))
    expected = render_table(_answers)
    if os.environ.get(REWRITE_ENV) == "1":
        TABLE.write_text(expected, encoding="utf-8")
    if not TABLE.exists() or TABLE.read_text(encoding="utf-8") != expected:
        pytest.fail(
            f"{TABLE.relative_to(ROOT)} is stale; regenerate it with: python -m tests.test_reliability_bad_input"
        )


if __name__ == "__main__":  # rewrite the table from a fresh run of these tests
    os.environ[REWRITE_ENV] = "1"
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
