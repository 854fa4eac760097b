"""Property-based tests (hypothesis): the encoder on any Unicode text, and the request schema over HTTP.

Example counts are modest so the module runs in seconds; hypothesis still shrinks any
counterexample to a minimal text or request.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.embedding_request import EmbeddingRequest
from app.embedding_service import EmbeddingResult, EmbeddingService, TokenLimits
from app.encoder import Encoder
from app.metrics import Metrics
from app.model_format import load_model
from tests.api_server import ServerProcess
from tests.reliability_server import assert_error_envelope, assert_still_serving, start

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Bounds that hold for the default model whatever its exact vocabulary (~30k) and width (256).
KNOWN_IDS = 20_000
SOME_WIDTH = 128
HTTP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Any Unicode text (hypothesis leaves out lone surrogates, which JSON cannot carry as UTF-8 anyway).
any_text = st.text(min_size=0, max_size=60)
texts_batch = st.lists(any_text, min_size=1, max_size=12)


@pytest.fixture(scope="module")
def encoder(default_model_dir: Path) -> Encoder:
    return Encoder(load_model(default_model_dir))


def _has_known_token(encoder: Encoder, text: str) -> bool:
    ids = encoder.tokenize([text]).ids
    return bool(len(ids)) and bool(np.any(ids != encoder.unk_id))


@FAST
@given(text=any_text)
def test_any_text_gives_a_finite_unit_vector_or_zero_when_no_token_is_known(encoder: Encoder, text: str) -> None:
    vector = encoder.encode([text])
    assert vector.shape == (1, encoder.dimensions) and vector.dtype == np.float32
    assert np.isfinite(vector).all()
    norm = float(np.linalg.norm(vector))
    if _has_known_token(encoder, text):
        assert abs(norm - 1.0) < 1e-5, (text, norm)
    else:  # documented policy: no known token -> the zero vector
        assert norm == 0.0, (text, norm)


@FAST
@given(texts=texts_batch, dimensions=st.one_of(st.none(), st.integers(1, SOME_WIDTH)))
def test_encoding_a_batch_equals_encoding_each_text_alone(
    encoder: Encoder, texts: list[str], dimensions: int | None
) -> None:
    together = encoder.encode(texts, dimensions)
    alone = np.vstack([encoder.encode([text], dimensions) for text in texts])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6)


request_strategy = st.builds(
    lambda texts, dims: EmbeddingRequest("m", texts, None, "float", dims),
    st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=6),
    st.one_of(st.none(), st.integers(1, SOME_WIDTH)),
) | st.builds(
    lambda ids, dims: EmbeddingRequest("m", None, ids, "float", dims),
    st.lists(st.lists(st.integers(0, KNOWN_IDS), min_size=1, max_size=12), min_size=1, max_size=4),
    st.one_of(st.none(), st.integers(1, SOME_WIDTH)),
)


@FAST
@given(requests=st.lists(request_strategy, min_size=1, max_size=6))
def test_a_service_batch_gives_each_request_what_it_would_get_alone(
    encoder: Encoder, requests: list[EmbeddingRequest]
) -> None:
    """The batcher's encode step: requests of mixed forms and dimensions, encoded together, are not mixed up."""
    service = EmbeddingService(
        encoder,
        TokenLimits(8192, 300000, False),
        Metrics(),
        max_batch_inputs=4096,
        max_batch_tokens=1 << 20,
        max_queue_inputs=1 << 16,
    )
    together = service.encode_batch(requests)
    for request, result in zip(requests, together, strict=True):
        (alone,) = service.encode_batch([request])
        assert isinstance(result, EmbeddingResult) and isinstance(alone, EmbeddingResult)
        assert result.prompt_tokens == alone.prompt_tokens
        assert result.vectors.shape == (request.input_count, request.dimensions or encoder.dimensions)
        np.testing.assert_allclose(result.vectors, alone.vectors, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- the request schema, over HTTP


@pytest.fixture(scope="module")
def client(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    server: ServerProcess = start(default_model_dir, tmp_path_factory.mktemp("properties") / "server.log")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
    server.stop()


texts_input = st.one_of(
    st.text(min_size=1, max_size=80),
    st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=16),
)
ids_input = st.one_of(
    st.lists(st.integers(0, KNOWN_IDS), min_size=1, max_size=32),
    st.lists(st.lists(st.integers(0, KNOWN_IDS), min_size=1, max_size=16), min_size=1, max_size=8),
)
valid_request = st.fixed_dictionaries(
    {"input": st.one_of(texts_input, ids_input), "model": st.text(max_size=30)},
    optional={
        "encoding_format": st.sampled_from(["float", "base64"]),
        "dimensions": st.integers(1, SOME_WIDTH),
        "user": st.text(max_size=20),
    },
)


def _count(value: object) -> int:
    if isinstance(value, str) or (isinstance(value, list) and value and isinstance(value[0], int)):
        return 1
    assert isinstance(value, list)
    return len(value)


@HTTP
@given(body=valid_request)
def test_valid_requests_are_accepted_with_one_vector_per_input(client: httpx.Client, body: dict[str, object]) -> None:
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 200, (body, response.text)
    answer = response.json()
    assert [item["index"] for item in answer["data"]] == list(range(_count(body["input"])))
    widths = set()
    for item in answer["data"]:
        raw = item["embedding"]
        vector = (
            np.frombuffer(base64.b64decode(raw), dtype="<f4")
            if body.get("encoding_format") == "base64"
            else np.asarray(raw, dtype=np.float32)
        )
        widths.add(vector.shape)
        assert np.isfinite(vector).all()
        assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5) or not vector.any()
    assert len(widths) == 1 and ("dimensions" not in body or widths == {(body["dimensions"],)})
    assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] >= 0


json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10))
# Each strategy turns a valid request into one that breaks exactly one rule of the schema.
breakages = st.one_of(
    st.tuples(
        st.just("unknown field"),
        st.text(min_size=1, max_size=12).filter(
            lambda name: name not in {"input", "model", "encoding_format", "dimensions", "user"}
        ),
        json_scalar,
    ),
    st.tuples(
        st.just("input"),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False),
            st.just(""),
            st.just([]),
            st.dictionaries(st.text(max_size=3), json_scalar),
        ),
    ),
    st.tuples(st.just("input"), st.lists(st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False)), min_size=1)),
    st.tuples(st.just("input"), st.lists(st.integers(max_value=-1) | st.integers(min_value=10**7), min_size=1)),
    st.tuples(st.just("model"), st.one_of(st.none(), st.booleans(), st.integers(), st.lists(st.text(), max_size=2))),
    st.tuples(st.just("encoding_format"), json_scalar.filter(lambda v: v not in ("float", "base64"))),
    st.tuples(
        st.just("dimensions"),
        st.one_of(
            st.integers(max_value=0),
            st.integers(min_value=100_000),
            st.floats(allow_nan=False),
            st.text(max_size=4),
            st.booleans(),
        ),
    ),
    st.tuples(st.just("user"), st.one_of(st.integers(), st.booleans(), st.lists(st.text(), max_size=2))),
    st.tuples(st.just("missing"), st.sampled_from(["input", "model"]), st.none()),
)


@HTTP
@given(body=valid_request, breakage=breakages)
def test_invalid_requests_are_rejected_with_a_4xx_envelope(
    client: httpx.Client, body: dict[str, object], breakage: tuple[object, ...]
) -> None:
    broken = dict(body)
    kind = breakage[0]
    if kind == "unknown field":
        broken[str(breakage[1])] = breakage[2]
    elif kind == "missing":
        broken.pop(str(breakage[1]))
    else:
        broken[str(kind)] = breakage[1]
    # json.dumps writes infinities as ``Infinity``, which is not JSON: one more way to be wrong.
    content = json.dumps(broken).encode()
    response = client.post("/v1/embeddings", content=content, headers={"content-type": "application/json"})
    error = assert_error_envelope(response, 400)
    assert error["type"] == "invalid_request_error"


def test_the_server_survived_the_generated_requests(client: httpx.Client) -> None:
    assert_still_serving(client)
    assert 'status="500"' not in client.get("/metrics").text
