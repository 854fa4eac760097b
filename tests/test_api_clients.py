"""The official OpenAI clients (Python and Node), unchanged but for ``base_url``, against a real server.

Every vector is checked against the in-process encoder on the same model directory.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from openai import OpenAI

from app.encoder import Encoder
from app.model_format import load_model
from tests.api_server import API_KEY, MAIN, ServerProcess, running_server
from tests.conftest import sts_sentences

NODE_DIR = Path(__file__).resolve().parent / "node"


@pytest.fixture(scope="session")
def server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    return running_server(default_model_dir, tmp_path_factory.getbasetemp() / "servers", **MAIN)


@pytest.fixture(scope="session")
def encoder(default_model_dir: Path) -> Encoder:
    return Encoder(load_model(default_model_dir))


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0)


def assert_same_vectors(got: object, expected: np.ndarray) -> None:
    vectors = np.asarray(got, dtype=np.float64)
    assert vectors.shape == expected.shape
    norms = np.linalg.norm(vectors, axis=1)
    cosine = (vectors * expected).sum(axis=1) / np.maximum(norms * np.linalg.norm(expected, axis=1), 1e-12)
    assert cosine.min() >= 0.9999
    np.testing.assert_allclose(vectors, expected, rtol=0, atol=1e-6)


def test_default_arguments_use_base64_and_match_the_encoder(client: OpenAI, encoder: Encoder) -> None:
    texts = sts_sentences(40)
    response = client.embeddings.create(model="text-embedding-3-small", input=texts)
    assert [item.index for item in response.data] == list(range(len(texts)))
    assert response.object == "list"
    # base64 of little-endian float32 is exact: the decoded floats are the encoder's, bit for bit.
    np.testing.assert_array_equal(
        np.array([item.embedding for item in response.data], np.float32), encoder.encode(texts)
    )
    assert response.usage.prompt_tokens == encoder.tokenize(texts).total_tokens
    assert response.usage.total_tokens == response.usage.prompt_tokens


def test_lenient_model_names_say_which_model_answered(client: OpenAI, default_model_dir: Path) -> None:
    served = json.loads((default_model_dir / "config.json").read_text())["static_embed"]["name"]
    for requested in ("text-embedding-3-small", "text-embedding-ada-002", served):
        assert client.embeddings.create(model=requested, input="hello").model == served


def test_float_format_matches_the_encoder(client: OpenAI, encoder: Encoder) -> None:
    texts = sts_sentences(60)[20:]
    response = client.embeddings.create(model="any", input=texts, encoding_format="float")
    assert_same_vectors([item.embedding for item in response.data], encoder.encode(texts))


def test_single_string_input(client: OpenAI, encoder: Encoder) -> None:
    text = "A man is playing a flute."
    response = client.embeddings.create(model="any", input=text, encoding_format="float")
    assert len(response.data) == 1
    assert_same_vectors([response.data[0].embedding], encoder.encode([text]))


@pytest.mark.parametrize("encoding_format", ["default", "float", "base64"])
@pytest.mark.parametrize("dimensions", [1, 32, 256])
def test_dimensions_truncate_and_renormalize(
    client: OpenAI, encoder: Encoder, dimensions: int, encoding_format: str
) -> None:
    texts = sts_sentences(8)
    options = {} if encoding_format == "default" else {"encoding_format": encoding_format}
    response = client.embeddings.create(model="any", input=texts, dimensions=dimensions, **options)  # type: ignore[arg-type]
    if encoding_format == "base64":  # asked for explicitly, the client hands the strings over undecoded
        rows = [np.frombuffer(base64.b64decode(item.embedding), dtype="<f4") for item in response.data]
    else:
        rows = [item.embedding for item in response.data]
    vectors = np.array(rows, dtype=np.float64)
    assert vectors.shape == (len(texts), dimensions)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert_same_vectors(vectors, encoder.encode(texts, dimensions=dimensions))


def test_token_id_inputs_match_text_inputs(client: OpenAI, encoder: Encoder) -> None:
    texts = sts_sentences(6)
    batch = encoder.tokenize(texts)
    starts = np.concatenate(([0], np.cumsum(batch.lengths)))
    id_lists = [batch.ids[starts[i] : starts[i + 1]].tolist() for i in range(len(texts))]

    many = client.embeddings.create(model="any", input=id_lists, encoding_format="float")
    assert_same_vectors([item.embedding for item in many.data], encoder.encode(texts))
    assert many.usage.prompt_tokens == batch.total_tokens

    one = client.embeddings.create(model="any", input=id_lists[0])
    assert len(one.data) == 1
    np.testing.assert_array_equal(np.array(one.data[0].embedding, np.float32), encoder.encode(texts[:1])[0])
    assert one.usage.prompt_tokens == len(id_lists[0])


def test_models_list_and_retrieve(client: OpenAI, default_model_dir: Path) -> None:
    served = json.loads((default_model_dir / "config.json").read_text())["static_embed"]["name"]
    assert [model.id for model in client.models.list()] == [served]
    model = client.models.retrieve(served)
    assert (model.id, model.object, model.owned_by) == (served, "model", "static-embed")
    assert model.created > 1_600_000_000


@pytest.fixture(scope="session")
def node_client_dir() -> Path:
    """The pinned `openai` npm package, installed from the committed lockfile."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("node and npm are required for the Node client test")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True, timeout=300)
    return NODE_DIR


def test_official_node_client(node_client_dir: Path, server: ServerProcess, encoder: Encoder) -> None:
    texts = sts_sentences(12)
    completed = subprocess.run(
        ["node", "embed.mjs", server.v1, API_KEY],
        cwd=node_client_dir,
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    expected = encoder.encode(texts)
    assert result["indices"] == list(range(len(texts)))
    np.testing.assert_array_equal(np.array(result["byDefault"], np.float32), expected)  # base64, exact
    assert_same_vectors(result["asFloat"], expected)
    assert_same_vectors(result["truncated"], encoder.encode(texts[:1], dimensions=32))
    assert result["usage"]["prompt_tokens"] == encoder.tokenize(texts).total_tokens
    assert result["models"] == [result["model"]]
    assert result["authError"] == {"status": 401, "code": "invalid_api_key", "type": "invalid_request_error"}
