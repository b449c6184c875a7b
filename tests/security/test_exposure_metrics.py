"""Finding 8 (caller input as Prometheus labels) and part of 13 (the /metrics token compare).

A model name is a label only when a backend took the request; made-up names, however many and
however long, are counted as `other`, so /metrics stays small. The admin token is compared as
bytes: odd tokens get the 403 envelope, never a 500.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, wait_until, write_config

ALICE = "sk-exposure-alice-0123456789"  # may use llama* only
BOB = "sk-exposure-bob-0123456789"  # may use any model
ADMIN = "exposure-metrics-admin-token"
USER = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def gw(start_module_gateway, fake_ollama, tmp_path_factory):
    digest, bob = (hashlib.sha256(k.encode()).hexdigest() for k in (ALICE, BOB))
    config = write_config(
        tmp_path_factory.mktemp("metrics") / "relay.toml",
        f'[backends.local]\ntype = "ollama"\nurl = "{fake_ollama.url}"\n'
        'models = ["llama*", "qwen*"]\n'
        f'[keys.alice]\nhash = "sha256:{digest}"\nmodels = ["llama*"]\n'
        f'[keys.bob]\nhash = "sha256:{bob}"\n',
    )
    return start_module_gateway(
        {
            "RELAY_CONFIG": config,
            "RELAY_CACHE_TTL": "0",
            "RELAY_METRICS_ALLOW": "127.0.0.1",
            "RELAY_METRICS_TOKEN": ADMIN,
        }
    )


def body_for(route: str, model: str, stream: bool = False) -> dict[str, object]:
    if route.endswith("/chat/completions"):
        return {"model": model, "messages": USER, "stream": stream}
    if route == "/v1/completions":
        return {"model": model, "prompt": "Hi", "stream": stream}
    if route == "/v1/embeddings":
        return {"model": model, "input": "Hi"}
    if route == "/v1/responses":
        return {"model": model, "input": "Hi", "stream": stream}
    return {"model": model, "prompt": "a cat"}  # /v1/images/generations


ROUTES = [
    "/v1/chat/completions",
    "/api/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/images/generations",
]


def test_made_up_model_names_never_become_labels(gw, ollama):
    alice, bob = ({"Authorization": f"Bearer {k}"} for k in (ALICE, BOB))
    baseline = len(requests.get(gw.url + "/metrics").content)
    markers: list[str] = []

    def name(prefix: str, size: int) -> str:
        marker = secrets.token_hex(8)
        markers.append(marker)
        return prefix + marker + "x" * size

    variants = [
        # (who, name prefix, extra length, what the gateway answers)
        (alice, "qwen-", 20_000, {403}),  # a backend serves qwen*, but not for this key
        (alice, "unknown-", 20_000, {403}),
        (bob, "unknown-", 20_000, {404}),  # no backend serves it
        (bob, "unknown-", 40, {404}),
        (bob, "llama-", 20_000, {400, 404}),  # routed; the upstream does not know it
        (bob, "llama-", 40, {400, 404}),  # (images: Ollama cannot, a 400)
        (alice, "qwen-", 40, {403}),
    ]
    for route in ROUTES:
        for stream in (False, True):
            if stream and route in ("/v1/embeddings", "/v1/images/generations"):
                continue
            for who, prefix, size, expected in variants:
                reply = requests.post(
                    gw.url + route, json=body_for(route, name(prefix, size), stream), headers=who
                )
                assert reply.status_code in expected, (route, prefix, reply.text[:300])
    auth = alice

    ok = requests.post(gw.url + ROUTES[0], json=body_for(ROUTES[0], "llama3.2"), headers=auth)
    assert ok.status_code == 200

    def scraped() -> str:
        return requests.get(gw.url + "/metrics").text

    wait_until(lambda: 'model="llama3.2"' in scraped())  # a real, routed name is still a label
    text = scraped()
    assert not [m for m in markers if m in text]
    # The label sets grow with routes, statuses and metrics, not with the names: a single leaked
    # 20 KB name (of the 84 sent) would pass this bound on its own many times over.
    assert len(text) < baseline + 100_000, len(text)
    models = {
        s.labels["model"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "model" in s.labels
    }
    assert models <= {"-", "llama3.2", "other"}, models  # "-": requests without a model


def metrics_from_elsewhere(gw, authorization: bytes | None) -> tuple[int, bytes]:
    """GET /metrics from 127.0.0.7, an address the gateway does not allow."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", gw.port, timeout=10, source_address=("127.0.0.7", 0)
    )
    try:
        conn.putrequest("GET", "/metrics")
        if authorization is not None:
            conn.putheader("Authorization", authorization)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer tökén".encode(),  # UTF-8
        b"Bearer caf\xe9",  # latin-1
        b"Bearer \xff\xfe\x80\x81",
        ("Bearer " + ADMIN[:-1] + "é").encode(),
        b"Bearer " + b"a" * 7000,
        b"Bearer ",
        b"Bearer",
        b"",
        None,
    ],
    ids=["utf8", "latin1", "high-bytes", "near-miss", "long", "empty", "no-token", "blank", "none"],
)
def test_odd_metrics_tokens_are_a_403_envelope(gw, authorization):
    status, body = metrics_from_elsewhere(gw, authorization)
    assert status == 403
    error = json.loads(body)["error"]
    assert error["type"] == "permission_error" and error["code"] == "metrics_forbidden"


def test_the_admin_token_still_opens_metrics(gw):
    assert metrics_from_elsewhere(gw, f"Bearer {ADMIN}".encode())[0] == 200


def test_a_non_ascii_admin_token_works_when_sent_as_utf8(start_gateway, fake_ollama):
    token = "jeton-sécurité-ü"
    other = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_METRICS_ALLOW": "127.0.0.1",
            "RELAY_METRICS_TOKEN": token,
        }
    )
    assert metrics_from_elsewhere(other, f"Bearer {token}".encode())[0] == 200
    assert metrics_from_elsewhere(other, f"Bearer {token}".encode("latin-1"))[0] == 403


def test_failing_made_up_names_cannot_use_up_the_label_places(
    start_gateway, fake_ollama, ollama, tmp_path
):
    # Names a backend takes by glob but cannot answer (here: it is down, a 503) would each take
    # one of the worker's bounded label places, leaving real models counted as `other`.
    config = write_config(
        tmp_path / "relay.toml",
        f'[backends.local]\ntype = "ollama"\nurl = "{fake_ollama.url}"\nmodels = ["llama*"]\n'
        f'[backends.down]\ntype = "ollama"\nurl = "http://127.0.0.1:{free_port()}"\n'
        'models = ["gone-*"]\n',
    )
    gw = start_gateway({"RELAY_CONFIG": config, "RELAY_METRICS_ALLOW": "127.0.0.1"})
    for _ in range(110):
        name = "gone-" + secrets.token_hex(6)
        reply = requests.post(gw.url + ROUTES[0], json=body_for(ROUTES[0], name))
        assert reply.status_code == 503, reply.text[:200]
    chat = requests.post(gw.url + ROUTES[0], json=body_for(ROUTES[0], "llama3.2"))
    assert chat.status_code == 200, chat.text[:200]
    wait_until(lambda: 'model="llama3.2"' in requests.get(gw.url + "/metrics").text)
