"""The service's plain modules without HTTP: request parsing, response bytes, keys, model names, limits."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import numpy as np
import orjson
import pytest

from app.auth import APIKeys
from app.embedding_request import parse_embedding_request
from app.embedding_response import render_embeddings
from app.embedding_service import EmbeddingResult, EmbeddingService, TokenLimits
from app.encoder import Encoder, TokenBatch
from app.errors import APIError
from app.metrics import Metrics
from app.model_catalog import ModelCatalog, served_model_name
from app.model_format import load_model
from tests.conftest import sts_sentences

LIMITS = {"max_inputs": 2048, "vocab_size": 100, "width": 16}


def test_the_four_input_forms() -> None:
    assert parse_embedding_request({"input": "a b", "model": "m"}, **LIMITS).texts == ["a b"]
    assert parse_embedding_request({"input": ["a", "b"], "model": "m"}, **LIMITS).texts == ["a", "b"]
    one = parse_embedding_request({"input": [1, 2, 99], "model": "m"}, **LIMITS)
    assert (one.texts, one.token_ids, one.input_count) == (None, [[1, 2, 99]], 1)
    many = parse_embedding_request({"input": [[0], [5, 6]], "model": "m", "dimensions": 16}, **LIMITS)
    assert (many.token_ids, many.input_count, many.dimensions, many.encoding_format) == ([[0], [5, 6]], 2, 16, "float")
    assert many.size_estimate == 3


def test_parse_errors_carry_status_and_param() -> None:
    with pytest.raises(APIError) as raised:
        parse_embedding_request({"input": [[1], [2, 100]], "model": "m"}, **LIMITS)
    assert (raised.value.status, raised.value.param) == (400, "input[1]")
    assert "0 to 99" in raised.value.message and "not tiktoken" in raised.value.message
    with pytest.raises(APIError, match="at most 3 inputs"):
        parse_embedding_request({"input": ["a"] * 4, "model": "m"}, max_inputs=3, vocab_size=100, width=16)


@pytest.mark.parametrize("width", [1, 7, 256])
def test_base64_is_little_endian_float32_of_each_row(width: int) -> None:
    vectors = np.random.default_rng(width).standard_normal((5, width)).astype(np.float32)
    body = orjson.loads(render_embeddings(EmbeddingResult(vectors, 11), model="served", encoding_format="base64"))
    assert body["object"] == "list" and body["model"] == "served"
    assert body["usage"] == {"prompt_tokens": 11, "total_tokens": 11}
    assert [item["index"] for item in body["data"]] == list(range(5))
    for row, item in zip(vectors, body["data"], strict=True):
        assert item["object"] == "embedding"
        raw = base64.b64decode(item["embedding"])
        assert raw == row.astype("<f4").tobytes()
        np.testing.assert_array_equal(np.frombuffer(raw, dtype="<f4"), row)


def test_float_format_round_trips_float32_exactly() -> None:
    vectors = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    body = orjson.loads(render_embeddings(EmbeddingResult(vectors, 3), model="m", encoding_format="float"))
    np.testing.assert_array_equal(np.array([item["embedding"] for item in body["data"]], dtype=np.float32), vectors)


def test_api_keys() -> None:
    keys = APIKeys(("alpha-key-123", "beta-key-456"))
    keys.check("Bearer alpha-key-123")
    keys.check("bearer beta-key-456")
    for header in (None, "", "Bearer ", "Token alpha-key-123", "Bearer alpha-key-12", "Bearer alpha-key-1234"):
        with pytest.raises(APIError) as raised:
            keys.check(header)
        assert (raised.value.status, raised.value.code) == (401, "invalid_api_key")
        assert "alpha-key-1234" not in raised.value.message
    APIKeys(()).check(None)  # off by default


def test_model_names() -> None:
    lenient = ModelCatalog("static-x", aliases=("text-embedding-3-small",))
    assert lenient.resolve("gpt-anything") == "static-x"
    assert lenient.retrieve_object("unknown")["id"] == "static-x"
    strict = ModelCatalog("static-x", aliases=("text-embedding-3-small",), strict=True)
    assert strict.resolve("text-embedding-3-small") == "static-x"
    with pytest.raises(APIError) as raised:
        strict.resolve("gpt-anything")
    assert (raised.value.status, raised.value.code, raised.value.param) == (404, "model_not_found", "model")
    assert [item["id"] for item in strict.list_object()["data"]] == ["static-x", "text-embedding-3-small"]  # type: ignore[index]
    assert served_model_name("env-name", {"name": "recorded"}, Path("/m/dir")) == "env-name"
    assert served_model_name(None, {"name": "recorded"}, Path("/m/dir")) == "recorded"
    assert served_model_name(None, {}, Path("/m/dir")) == "dir"


def test_serial_tokenizing_gives_the_batch_calls_ids(default_model_dir: Path) -> None:
    """Small batches served on the event loop are tokenized text by text: the same ids, every text kind."""
    encoder = Encoder(load_model(default_model_dir))
    texts = [*sts_sentences(300), "Café crème brûlée, naïve", "日本語のテキスト", "tab\there\x00", "", "   "]
    texts.append(("plain words " * 200) + "é " * 300)  # long and not plain: tokenized in runs of words
    batch, serial = encoder.tokenize(texts), encoder.tokenize(texts, parallel=False)
    np.testing.assert_array_equal(batch.ids, serial.ids)
    np.testing.assert_array_equal(batch.lengths, serial.lengths)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder(load_model(tiny_model_dir))


def test_batch_with_one_bad_request_serves_the_others(tiny_encoder: Encoder) -> None:
    """Requests encoded together stay apart: each gets its rows, dimensions and limit check."""
    service = EmbeddingService(
        tiny_encoder,
        TokenLimits(max_input_tokens=4, max_request_tokens=100, truncate=False),
        Metrics(),
        max_batch_inputs=100,
        max_batch_tokens=10_000,
        max_queue_inputs=100,
    )
    parse = lambda body: parse_embedding_request(  # noqa: E731
        body, max_inputs=100, vocab_size=tiny_encoder.vocab_size, width=tiny_encoder.dimensions
    )
    requests = [
        parse({"input": ["the cat", "a dog ran"], "model": "m"}),
        parse({"input": ["the cat sat on the mat"], "model": "m"}),  # over 4 tokens
        parse({"input": [[60, 61], [62]], "model": "m", "dimensions": 4}),
        parse({"input": "big red car", "model": "m", "dimensions": 4}),
    ]
    outcomes = service.encode_batch(requests)
    assert isinstance(outcomes[1], APIError) and outcomes[1].param == "input[0]"
    first, third, fourth = outcomes[0], outcomes[2], outcomes[3]
    assert isinstance(first, EmbeddingResult) and isinstance(third, EmbeddingResult)
    assert isinstance(fourth, EmbeddingResult)
    np.testing.assert_array_equal(first.vectors, tiny_encoder.encode(["the cat", "a dog ran"]))
    assert first.prompt_tokens == tiny_encoder.tokenize(["the cat", "a dog ran"]).total_tokens
    np.testing.assert_array_equal(third.vectors, tiny_encoder.embed(TokenBatch.from_id_lists([[60, 61], [62]]), 4))
    np.testing.assert_array_equal(fourth.vectors, tiny_encoder.encode(["big red car"], dimensions=4))
    asyncio.run(service.batcher.stop())
