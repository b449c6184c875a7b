"""Findings 9 and 15: the unauthenticated pages `/` and `/ready`.

They reuse one short-lived snapshot of the backends instead of calling every backend on each
load, are limited per client address, show models only to a valid key (its own) or the admin
token, and backend host addresses only to the admin token. The service page's endpoint list
is checked against the app's real URL map.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, write_config
from tests.fakes.ollama import FakeOllama

ALICE = "sk-exposure-alice-0123456789"  # may use llama* only
ADMIN = "exposure-admin-token-42"
MODELS = ["llama3.2:latest", "qwen3:8b"]


def sha(secret: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


@pytest.fixture
def upstream():
    """A private fake Ollama, so its request log counts only this test's calls."""
    fake = FakeOllama()
    yield fake
    fake.close()


def keyed_gateway(start_gateway, tmp_path: Path, ollama_urls: str, **env: str):
    config = write_config(
        tmp_path / "relay.toml", f'[keys.alice]\nhash = "{sha(ALICE)}"\nmodels = ["llama*"]\n'
    )
    return start_gateway(
        {
            "OLLAMA_BASE_URL": ollama_urls,
            "RELAY_CONFIG": config,
            "RELAY_METRICS_TOKEN": ADMIN,
            **env,
        }
    )


def get(gw, path: str, headers: dict[str, str] | None = None, source: str = "127.0.0.1"):
    """GET from a chosen loopback address; returns (status, headers, body text)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_rapid_loads_share_one_snapshot_of_the_backends(start_gateway, upstream, tmp_path):
    gw = keyed_gateway(start_gateway, tmp_path, upstream.url, RELAY_STATUS_PER_MINUTE="0")
    upstream.requests.clear()

    def load(n: int) -> int:
        path = "/" if n % 2 else "/ready"
        headers = {"Authorization": f"Bearer {ALICE}"} if n % 3 == 0 else {}
        return requests.get(gw.url + path, headers=headers, timeout=20).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(load, range(120)))
    assert statuses == [200] * 120
    # One refresh is a version check and a model list; the loads above take well under the
    # 5-second lifetime, so one or two refreshes at most (not two calls per load).
    calls = [r.path for r in upstream.requests]
    assert len(calls) <= 4, calls
    assert set(calls) <= {"/api/version", "/api/tags"}


class SlowOllama(FakeOllama):
    """Answers the version check only after a pause, so page loads overlap a refresh."""

    def route(self, request, body):
        if request.path == "/api/version":
            time.sleep(1.0)
        return super().route(request, body)


def test_loads_during_a_refresh_wait_for_it_instead_of_stampeding(start_gateway, tmp_path):
    slow = SlowOllama()
    try:
        gw = keyed_gateway(start_gateway, tmp_path, slow.url, RELAY_STATUS_PER_MINUTE="0")
        slow.requests.clear()
        with ThreadPoolExecutor(20) as pool:
            loads = [pool.submit(get, gw, "/ready" if n % 2 else "/") for n in range(20)]
            statuses = [f.result()[0] for f in loads]
        assert statuses == [200] * 20
        calls = [r.path for r in slow.requests]
        assert calls.count("/api/version") == 1, calls  # one refresh for twenty loads
    finally:
        slow.close()


def test_status_pages_are_limited_per_address(start_gateway, upstream, tmp_path):
    gw = keyed_gateway(start_gateway, tmp_path, upstream.url, RELAY_STATUS_PER_MINUTE="4")
    statuses = [get(gw, p)[0] for p in ("/", "/ready", "/", "/ready")]
    assert statuses == [200] * 4
    for path in ("/", "/ready"):
        status, headers, body = get(gw, path)
        assert status == 429
        assert 1 <= int(headers["Retry-After"]) <= 60
        error = json.loads(body)["error"]
        assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    # A valid key does not lift it (the pages are not the keyed API), another address is apart.
    assert get(gw, "/", {"Authorization": f"Bearer {ALICE}"})[0] == 429
    assert get(gw, "/", source="127.0.0.2")[0] == 200
    # Liveness makes no upstream call and stays unlimited for probes.
    assert {get(gw, "/health")[0] for _ in range(10)} == {200}


def test_models_only_for_a_valid_key_and_only_its_own(start_gateway, upstream, tmp_path):
    gw = keyed_gateway(start_gateway, tmp_path, upstream.url, RELAY_STATUS_PER_MINUTE="0")

    def page(headers: dict[str, str], accept: str = "application/json") -> tuple[int, str]:
        status, _, body = get(gw, "/", {**headers, "Accept": accept})
        return status, body

    nobody = [
        {},
        {"Authorization": "Bearer sk-wrong-0123456789"},
        {"X-Api-Key": "sk-wrong-0123456789"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic " + ALICE},  # not a Bearer token
        {"Authorization": f"Bearer {ADMIN}x"},
    ]
    for headers in nobody:
        for accept in ("application/json", "text/html"):
            status, body = page(headers, accept)
            assert status == 200, headers
            assert not any(m in body for m in MODELS), (headers, accept)
            assert upstream.url not in body
        info = json.loads(page(headers)[1])
        assert info["status"] == "ok" and info["endpoints"]
        assert info["backends"] == [{"name": "ollama", "type": "ollama", "status": "ok"}]

    for headers in ({"Authorization": f"Bearer {ALICE}"}, {"X-Api-Key": ALICE}):
        info = json.loads(page(headers)[1])
        assert info["backends"][0]["models"] == ["llama3.2:latest"]  # qwen3 is not hers
        assert "qwen3" not in page(headers, "text/html")[1]
        assert upstream.url not in json.dumps(info)

    admin = json.loads(page({"Authorization": f"Bearer {ADMIN}"})[1])
    assert admin["backends"][0]["models"] == MODELS
    assert admin["backends"][0]["hosts"] == [
        {"host": upstream.url, "state": "up"}
    ]  # addresses for the admin only


def test_ready_shows_host_addresses_only_to_the_admin(start_gateway, upstream, tmp_path):
    other = FakeOllama()
    try:
        gw = keyed_gateway(
            start_gateway,
            tmp_path,
            f"{upstream.url},{other.url}",
            RELAY_STATUS_PER_MINUTE="0",
        )
        for headers in ({}, {"Authorization": f"Bearer {ALICE}"}, {"Authorization": "Bearer x"}):
            status, _, body = get(gw, "/ready", headers)
            assert status == 200
            assert upstream.url not in body and other.url not in body
            assert "127.0.0.1" not in body
            hosts = json.loads(body)["backends"]["ollama"]["hosts"]
            assert hosts == [{"state": "up"}, {"state": "up"}]
        status, _, body = get(gw, "/ready", {"Authorization": f"Bearer {ADMIN}"})
        hosts = json.loads(body)["backends"]["ollama"]["hosts"]
        assert [h["host"] for h in hosts] == [upstream.url, other.url]
    finally:
        other.close()


def test_a_non_ascii_or_odd_token_on_the_pages_is_no_error(start_gateway, upstream, tmp_path):
    gw = keyed_gateway(start_gateway, tmp_path, upstream.url, RELAY_STATUS_PER_MINUTE="0")
    for raw in (b"Bearer caf\xe9-\xff\x80", b"Bearer " + b"k" * 6000, b"Bearer", b""):
        for path in ("/", "/ready"):
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
            conn.putrequest("GET", path)
            conn.putheader("Authorization", raw)
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            assert resp.status == 200, (path, raw[:20], body[:200])
            assert b"llama3.2" not in body


# --- the endpoint list --------------------------------------------------------------------

DUMP_URL_MAP = """
import json
from app import create_app
app = create_app()
rules = []
for rule in app.url_map.iter_rules():
    if rule.endpoint != "static":
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        rules.append([methods, rule.rule])
print(json.dumps(rules))
"""


def normalise(path: str) -> str:
    """'/v1/responses/<response_id>' and '/v1/responses/{id}' both become '/v1/responses/{}'."""
    out, depth = "", 0
    for ch in path:
        if ch in "<{":
            depth += 1
            out += "{}" if depth == 1 else ""
        elif ch in ">}":
            depth -= 1
        elif depth == 0:
            out += ch
    return out


def real_routes(env: dict[str, str]) -> set[tuple[str, str]]:
    full = {"PATH": os.environ["PATH"], "RELAY_ENV_FILE": "", **env}
    done = subprocess.run(
        [sys.executable, "-c", DUMP_URL_MAP],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    routes = set()
    for methods, rule in json.loads(done.stdout.strip().splitlines()[-1]):
        many = len(methods) > 2  # the pass-through takes every method
        for method in ["ANY"] if many else methods:
            routes.add((method, normalise(rule)))
    return routes


@pytest.mark.parametrize("passthrough", [False, True], ids=["plain", "passthrough"])
def test_the_endpoint_list_matches_the_url_map(start_gateway, upstream, tmp_path, passthrough):
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[backends.local]\ntype = "ollama"\nurl = "{upstream.url}"\nmodels = ["llama*"]\n'
        f'[backends.cloud]\ntype = "openai"\nurl = "{upstream.url}/v1"\nmodels = ["gpt-*"]\n'
        f"passthrough = {'true' if passthrough else 'false'}\n"
    )
    env = {"RELAY_CONFIG": str(config), "RELAY_STATUS_PER_MINUTE": "0"}
    gw = start_gateway(env)
    endpoints = requests.get(gw.url + "/").json()["endpoints"]
    shown = {(e["method"], normalise(e["path"])) for e in endpoints}
    assert shown == real_routes(env)
    assert (("ANY", "/v1/{}") in shown) is passthrough
    html = requests.get(gw.url + "/", headers={"Accept": "text/html"}).text
    for e in endpoints:
        assert f"<code>{e['method']}</code></td><td><code>{e['path']}</code>" in html
