"""Fuzzing of the HTTP API from its own OpenAPI schema (``/openapi.json``) with schemathesis.

Bounded for CI (a fixed number of cases per operation, a fixed seed so a failure reproduces).
Checks: no 5xx, status codes, content types, headers and bodies as the schema documents them,
schema-invalid requests rejected. Left out: ``positive_data_acceptance``, because the schema
cannot express limits known only at run time (the model's vocabulary and width, token
limits), so some schema-valid requests are rightly answered 400. (Conformance to OpenAI's
own published schema is tested separately in the API tests.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api_server import ServerProcess
from tests.reliability_server import assert_still_serving, start

MAX_EXAMPLES = os.environ.get("EMBED_TEST_FUZZ_EXAMPLES", "40")
SEED = os.environ.get("EMBED_TEST_FUZZ_SEED", "20261127")


@pytest.fixture(scope="module")
def server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = start(default_model_dir, tmp_path_factory.mktemp("fuzz") / "server.log")
    yield running
    running.stop()


def test_fuzzing_from_the_service_schema_finds_no_5xx_and_no_schema_violation(
    server: ServerProcess, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{server.url}/openapi.json",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        SEED,
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--workers",
        "2",
        "--no-color",
    ]
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    report = completed.stdout + completed.stderr
    assert completed.returncode == 0, report[-6000:]
    assert "passed" in report and "Tested: 6" in report, report[-3000:]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert_still_serving(client)
        assert 'status="500"' not in client.get("/metrics").text
    assert "Traceback" not in server.log()
