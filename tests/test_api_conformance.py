"""Conformance with OpenAI's own OpenAPI document: schemathesis against a running server.

Requests generated from ``../shared/openai/openapi-embeddings.yaml`` hit a real server
with API keys on (so the auth checks have something to check). Schema-violating requests
must get a 4xx, responses must validate against the spec, nothing may be a 5xx.

Three deliberate adjustments, all OpenAI's own behaviour that the spec does not encode:
base64 embeddings are strings (``schemathesis_hooks.py`` decodes and checks them first);
the spec documents only 200 and 429, while OpenAI answers 400/401/404/413 too, so
``status_code_conformance`` is off; and some schema-valid requests are rejected with a
400 exactly as OpenAI rejects them (an empty string, a token id outside the vocabulary,
``dimensions`` above the model's width), so ``positive_data_acceptance`` accepts 400.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.api_server import API_KEY, MAIN, ROOT, ServerProcess, running_server

SPEC = ROOT.parent / "shared" / "openai" / "openapi-embeddings.yaml"
HOOKS = Path(__file__).resolve().parent / "schemathesis_hooks.py"
CONFIG = f"""
hooks = "{HOOKS}"

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "400"]
"""
MAX_SECONDS = 30


@pytest.fixture(scope="session")
def server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    return running_server(default_model_dir, tmp_path_factory.getbasetemp() / "servers", **MAIN)


def test_schemathesis_against_openai_spec(server: ServerProcess, tmp_path: Path) -> None:
    assert SPEC.is_file(), f"{SPEC} is missing (../shared beside the repository)"
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "--no-color",
            "run",
            str(SPEC),
            "--url",
            server.v1,
            "--header",
            f"Authorization: Bearer {API_KEY}",
            "--checks",
            "all",
            "--exclude-checks",
            "status_code_conformance",
            "--max-time",
            str(MAX_SECONDS),
            "--seed",
            "20261127",
            "--generation-database",
            "none",
            "--workers",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=MAX_SECONDS + 60,
        check=False,
    )
    report = completed.stdout + completed.stderr
    assert completed.returncode == 0, report[-6000:]
    assert "Tested: 3" in report, report[-3000:]
    assert "Traceback" not in server.log() and "unhandled error" not in server.log()
