"""Named keys from the config file, the key tool, and keys changing without a restart."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import ROOT, wait_until, write_config
from tests.fakes.ollama import FakeOllama

USER = [{"role": "user", "content": "Hi"}]
ALICE, BOB, OLD, OFF = (
    "sk-alice-0123456789",
    "sk-bob-0123456789",
    "sk-old-0123456789",
    "sk-off-0123456789",
)


def sha(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


@pytest.fixture(scope="module")
def keyed(start_module_gateway, fake_ollama, tmp_path_factory):
    path = write_config(
        tmp_path_factory.mktemp("keys") / "relay.toml",
        f"""
[keys.alice]
hash = "{sha(ALICE)}"
models = ["llama*"]

[keys.bob]
env = "RELAY_TEST_BOB_KEY"

[keys.old]
hash = "{sha(OLD)}"
expires = 2020-01-01T00:00:00Z

[keys.off]
hash = "{sha(OFF)}"
enabled = false
""",
    )
    env = {
        "OLLAMA_BASE_URL": fake_ollama.url,
        "RELAY_CONFIG": path,
        "RELAY_TEST_BOB_KEY": BOB,
        "RELAY_CACHE_TTL": "0",
    }
    return start_module_gateway(env)


def sdk(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def test_a_key_may_use_only_its_models_and_sees_only_them(keyed, ollama: FakeOllama):
    alice = sdk(keyed, ALICE)
    assert alice.chat.completions.create(model="llama3.2", messages=USER).choices[0]
    assert [m.id for m in alice.models.list()] == ["llama3.2:latest"]
    with pytest.raises(openai.PermissionDeniedError) as e:
        alice.chat.completions.create(model="qwen3:8b", messages=USER)
    assert e.value.status_code == 403
    assert e.value.type == "permission_error" and e.value.code == "model_not_allowed"
    assert e.value.param == "model" and "qwen3:8b" in e.value.message
    with pytest.raises(openai.PermissionDeniedError):
        alice.models.retrieve("qwen3:8b")
    with pytest.raises(openai.PermissionDeniedError):
        alice.responses.create(model="qwen3:8b", input="Hi")
    assert all(r.body["model"] != "qwen3:8b" for r in ollama.requests if r.path == "/api/chat")
    # bob's secret comes from an environment variable; bob may use every model
    bob = sdk(keyed, BOB)
    assert [m.id for m in bob.models.list()] == ["llama3.2:latest", "qwen3:8b"]
    assert bob.chat.completions.create(model="qwen3:8b", messages=USER).choices[0]


def test_missing_unknown_expired_and_revoked_keys_are_401(keyed, ollama):
    url = keyed.url + "/v1/chat/completions"
    body = {"model": "llama3.2", "messages": USER}
    for key, words in [
        (None, "Missing API key"),
        ("sk-nobody-01234567", "Incorrect API key"),
        (OLD, "expired"),
        (OFF, "revoked"),
    ]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        resp = requests.post(url, json=body, headers=headers)
        assert resp.status_code == 401, resp.text
        error = resp.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
        assert words in error["message"]
    with pytest.raises(openai.AuthenticationError):
        sdk(keyed, OLD).models.list()
    assert not ollama.requests


def test_logs_name_the_key_and_never_carry_a_secret(keyed, ollama):
    sdk(keyed, ALICE).chat.completions.create(model="llama3.2", messages=USER)
    requests.get(keyed.url + "/v1/models", headers={"Authorization": f"Bearer {OFF}"})
    logs = keyed.logs()
    assert "key=alice POST /v1/chat/completions" in logs
    for secret in (ALICE, BOB, OLD, OFF):
        assert secret not in logs


def run_tool(config_path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "RELAY_ENV_FILE": "", "RELAY_CONFIG": config_path}
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "keys", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_key_tool_round_trip_takes_effect_without_a_restart(
    start_gateway, fake_ollama, ollama, tmp_path
):
    path = write_config(tmp_path / "relay.toml", '# keys below\n[server]\nlog_level = "info"\n')
    gw = start_gateway(
        {"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_CONFIG": path, "RELAY_API_KEYS": ALICE}
    )
    created = run_tool(path, "create", "carol", "--model", "llama*", "--rpm", "50")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("sk-relay-") and len(secret) > 40
    text = Path(path).read_text()
    assert secret not in text and sha(secret) in text and "# keys below" in text
    assert run_tool(path, "create", "carol").returncode != 0  # names are unique

    def status() -> int:
        headers = {"Authorization": f"Bearer {secret}"}
        return requests.get(gw.url + "/v1/models", headers=headers).status_code

    wait_until(lambda: status() == 200)
    models = sdk(gw, secret).models.list()
    assert [m.id for m in models] == ["llama3.2:latest"]

    listed = run_tool(path, "list")
    assert listed.returncode == 0 and listed.stdout.startswith("carol\tenabled\t")
    assert "requests_per_minute=50" in listed.stdout and secret not in listed.stdout

    revoked = run_tool(path, "revoke", "carol")
    assert revoked.returncode == 0, revoked.stderr
    wait_until(lambda: status() == 401)
    assert run_tool(path, "list").stdout.startswith("carol\trevoked\t")
    assert run_tool(path, "revoke", "nobody").returncode != 0
    assert "keys reloaded" in gw.logs()


def test_a_broken_key_file_keeps_the_old_keys(start_gateway, fake_ollama, ollama, tmp_path):
    path = write_config(tmp_path / "relay.toml", f'[keys.alice]\nhash = "{sha(ALICE)}"\n')
    gw = start_gateway({"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_CONFIG": path})
    with open(path, "a") as f:
        f.write("[keys.broken\n")

    def alice_status() -> int:
        headers = {"Authorization": f"Bearer {ALICE}"}
        return requests.get(gw.url + "/v1/models", headers=headers).status_code

    # The file is looked at when requests come in, at most once a second.
    wait_until(lambda: alice_status() == 200 and "keys not reloaded" in gw.logs())
    assert alice_status() == 200


def test_bad_key_tables_stop_start_up_with_one_line(start_gateway, fake_ollama, tmp_path):
    cases = {
        '[keys.a]\nhash = "md5:abc"\n': "keys.a.hash must be",
        '[keys.a]\nenv = "NOT_SET_ANYWHERE"\n': "keys.a.env names NOT_SET_ANYWHERE",
        f'[keys.a]\nhash = "{sha(ALICE)}"\nexpires = "soon"\n': "keys.a.expires must be",
        f'[keys.a]\nhash = "{sha(ALICE)}"\nlimits = {{ rpm = 3 }}\n': "keys.a.limits may only",
    }
    for text, message in cases.items():
        path = write_config(tmp_path / "bad.toml", text)
        gw = start_gateway({"RELAY_CONFIG": path}, wait=False)
        assert gw.proc.wait(20) != 0
        assert message in gw.logs(), gw.logs()


def test_a_key_limited_to_some_models_is_limited_on_every_endpoint(keyed, ollama):
    auth = {"Authorization": f"Bearer {ALICE}"}
    for path, body in (
        ("/v1/embeddings", {"model": "qwen3:8b", "input": "x"}),
        ("/v1/completions", {"model": "qwen3:8b", "prompt": "x"}),
        ("/v1/completions", {"model": "qwen3:8b", "prompt": "x", "stream": True}),
        ("/v1/responses", {"model": "qwen3:8b", "input": "x"}),
    ):
        resp = requests.post(keyed.url + path, json=body, headers=auth)
        assert resp.status_code == 403, (path, resp.text)
        assert resp.json()["error"]["type"] == "permission_error"
    assert not [
        r for r in ollama.requests if r.path in ("/api/embed", "/api/generate", "/api/chat")
    ]
