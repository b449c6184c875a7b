"""Start-up under gunicorn: configuration sources, clear refusals, open-access rules."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

import config
from tests.conftest import API_KEY, ROOT, free_port

USER = [{"role": "user", "content": "Hi"}]


def run_gunicorn(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ["PATH"], "RELAY_ENV_FILE": "", "PORT": str(free_port()), **env}
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "wsgi:app"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "abc"}, "PORT must be a whole number, got 'abc'"),
        ({"PORT": "70000"}, "PORT must be between 1 and 65535"),
        ({"OLLAMA_BASE_URL": "ftp://ollama"}, "OLLAMA_BASE_URL must be an http(s) URL"),
        ({"OLLAMA_API": "localhost:11434"}, "OLLAMA_API must be an http(s) URL"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of error, warn, info, debug"),
        ({"RELAY_READ_TIMEOUT": "soon"}, "RELAY_READ_TIMEOUT must be a number of seconds"),
        ({"RELAY_FETCH_IMAGE_URLS": "perhaps"}, "RELAY_FETCH_IMAGE_URLS must be true or false"),
        ({"RELAY_API_KEYS": "short"}, "RELAY_API_KEYS has a key shorter than 8 characters"),
        ({"RELAY_CONFIG": "/nonexistent/relay.toml"}, "RELAY_CONFIG cannot read"),
        ({"HOST": "0.0.0.0"}, "RELAY_API_KEYS is empty but Relay would listen on 0.0.0.0"),
    ],
)
def test_bad_configuration_stops_start_up_with_one_line(env, named):
    result = run_gunicorn(env)
    assert result.returncode == 2
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("relay: configuration error:")
    ]
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Listening at" not in result.stderr


def test_bad_toml_names_the_file_setting(tmp_path):
    bad = tmp_path / "relay.toml"
    bad.write_text("[backends.gpu]\ntype = 'ollama'\nurl = 'not a url'\n")
    result = run_gunicorn({"RELAY_CONFIG": str(bad)})
    assert result.returncode == 2
    assert "RELAY_CONFIG backends.gpu.url must be an http(s) URL" in result.stderr
    bad.write_text("this is = = not toml")
    result = run_gunicorn({"RELAY_CONFIG": str(bad)})
    assert result.returncode == 2 and "is not valid TOML" in result.stderr


def test_open_access_on_loopback_warns_and_lets_callers_in(start_gateway, fake_ollama, ollama):
    gw = start_gateway({"OLLAMA_BASE_URL": fake_ollama.url})
    resp = requests.post(
        gw.url + "/v1/chat/completions", json={"model": "llama3.2", "messages": USER}
    )
    assert resp.status_code == 200
    assert (
        "no API keys configured (RELAY_API_KEYS): every caller is let in (loopback only)"
        in gw.logs()
    )


def test_exposure_rules():
    open_settings = config.load({"RELAY_ENV_FILE": ""})
    assert "loopback only" in config.check_exposure(open_settings, ["127.0.0.1", "::1"])
    with pytest.raises(config.ConfigError):
        config.check_exposure(open_settings, ["0.0.0.0"])
    opted_in = config.load({"RELAY_ENV_FILE": "", "RELAY_ALLOW_OPEN": "true"})
    assert "every address" in config.check_exposure(opted_in, ["0.0.0.0"])
    keyed = config.load({"RELAY_ENV_FILE": "", "RELAY_API_KEYS": "k" * 20})
    assert config.check_exposure(keyed, ["0.0.0.0"]) is None


def test_workers_default_to_one_per_core_only_when_redis_shares_state():
    cores = len(os.sched_getaffinity(0))
    redis = {"RELAY_ENV_FILE": "", "REDIS_URL": "redis://127.0.0.1:6379/0"}
    assert config.load(redis).workers == cores
    assert config.load({"RELAY_ENV_FILE": ""}).workers == 1  # per-worker limits: stay exact
    assert config.load({**redis, "RELAY_WORKERS": "3"}).workers == 3  # the setting wins
    assert config.load({"RELAY_ENV_FILE": "", "RELAY_WORKERS": "3"}).workers == 3


def test_dotenv_file_and_ollama_api_alias(app_client, fake_ollama, ollama, tmp_path):
    dotenv = tmp_path / "relay.env"
    dotenv.write_text(f"OLLAMA_API={fake_ollama.url}\nRELAY_API_KEYS=sk-from-dotenv-1,{API_KEY}\n")
    relay = app_client({"RELAY_ENV_FILE": str(dotenv)}).client  # settings only: no gunicorn
    url = "/v1/chat/completions"
    body = {"model": "llama3.2", "messages": USER}
    assert relay.post(url, json=body).status_code == 401
    ok = relay.post(url, json=body, headers={"Authorization": "Bearer sk-from-dotenv-1"})
    assert ok.status_code == 200
    assert ollama.last().body["model"] == "llama3.2"


def test_config_file_routes_models_to_backends_by_glob(app_client, fake_ollama, ollama, tmp_path):
    toml = tmp_path / "relay.toml"
    toml.write_text(
        f"""
[server]
log_level = "debug"

[backends.gpu]
type = "ollama"
url = "{fake_ollama.url}"
models = ["llama*"]

[backends.spare]
type = "ollama"
url = "http://127.0.0.1:{free_port()}"
models = ["*"]
connect_timeout = 0.5
"""
    )
    relay = app_client({"RELAY_CONFIG": str(toml)})  # routing is configuration: no gunicorn
    url = "/v1/chat/completions"
    first = relay.client.post(url, json={"model": "llama3.2", "messages": USER})
    assert first.status_code == 200
    other = relay.client.post(url, json={"model": "qwen3:8b", "messages": USER})
    assert other.status_code == 503
    assert "Ollama backend 'spare'" in other.json["error"]["message"]
    models = relay.client.get("/v1/models").json["data"]
    assert [m["id"] for m in models] == ["llama3.2:latest"]
    assert all(m["owned_by"] == "gpu" for m in models)
    assert "[DEBUG]" in relay.logs()
