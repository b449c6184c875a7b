"""An attacker's review of the Anthropic and Ollama faces (docs/threat-model.md "The Ollama
and Anthropic faces").

Ollama is a Go server: its encoding/json matches a JSON key to a field without regard to case
(folding Unicode too: "ſ" reads as "s", the Kelvin sign as "k") and keeps the last of two keys
that match one field. Relay reads keys exactly. Model management passes the caller's body to
Ollama as it came, and the native routes send the fields Relay does not model on as they came:
a field spelled another way (`From`, `ſtream`, `Messages`) was never checked by Relay and read
by Ollama all the same. The fake Ollama here is Python and reads keys exactly, so the tests
assert what reaches it: no spelling a Go server would read as another field.
"""

from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import wait_until
from tests.fakes.ollama import FakeOllama

ADMIN = "sk-review-admin-0001"  # ollama_admin, models mine* and llama3.2*
PLAIN = "sk-review-plain-0002"  # models llama3.2*
HOSTED = "sk-review-hosted-0003"  # ollama_admin, models registry.example/team/*
EVERY = "sk-review-every-0004"  # ollama_admin, every model
HI = [{"role": "user", "content": "Hi"}]


def go_fold(name: str) -> str:
    return "".join(c.lower().upper() for c in name)


def _config(tmp, ollama_url: str) -> str:
    config = tmp / "relay.toml"
    config.write_text(
        f"""
[backends.local]
type = "ollama"
url = "{ollama_url}"

[keys.admin]
env = "KEY_ADMIN"
ollama_admin = true
models = ["mine*", "llama3.2*"]

[keys.plain]
env = "KEY_PLAIN"
models = ["llama3.2*"]

[keys.hosted]
env = "KEY_HOSTED"
ollama_admin = true
models = ["registry.example/team/*"]

[keys.every]
env = "KEY_EVERY"
ollama_admin = true
"""
    )
    return str(config)


@pytest.fixture(scope="module")
def gw(start_module_gateway, fake_ollama, tmp_path_factory):
    env = {
        "RELAY_CONFIG": _config(tmp_path_factory.mktemp("faces"), fake_ollama.url),
        "RELAY_CACHE_TTL": "0",
        "RELAY_UNAUTHENTICATED_PER_MINUTE": "0",
        "KEY_ADMIN": ADMIN,
        "KEY_PLAIN": PLAIN,
        "KEY_HOSTED": HOSTED,
        "KEY_EVERY": EVERY,
    }
    return start_module_gateway(env)


def _send(gw, method: str, path: str, body: dict, key: str = ADMIN, **kw) -> requests.Response:
    return requests.request(
        method,
        gw.url + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=10,
        **kw,
    )


def _foreign_spellings(ollama: FakeOllama) -> list[str]:
    """Top-level keys that reached Ollama spelled otherwise than Ollama's own lowercase fields."""
    return [
        k
        for r in ollama.requests
        if isinstance(r.body, dict)
        for k in r.body
        if k != go_fold(k).lower()
    ]


# --- findings 17, 19, 22: management fields spelled another way, missing, or old --------


@pytest.mark.parametrize("spelling", ["From", "FROM", "fRoM"])
def test_create_from_a_model_outside_the_list_in_another_case_is_refused(
    gw, ollama: FakeOllama, spelling
):
    # Ollama reads `From` as `from`: the admin key would make its own `mine` out of qwen3:8b,
    # a model its list does not allow, and then chat with it.
    resp = _send(gw, "POST", "/api/create", {"model": "mine", spelling: "qwen3:8b"})
    assert resp.status_code == 400, resp.text
    assert list(resp.json()) == ["error"] and "from" in resp.json()["error"]
    assert [r for r in ollama.requests if r.path == "/api/create"] == []


@pytest.mark.parametrize(
    ("path", "method", "body"),
    [
        ("/api/copy", "POST", {"source": "llama3.2", "Destination": "qwen3:8b"}),
        ("/api/copy", "POST", {"ſource": "qwen3:8b", "destination": "mine"}),
        ("/api/pull", "POST", {"name": "mine", "MODEL": "qwen3:8b"}),
        ("/api/delete", "DELETE", {"name": "mine", "Model": "qwen3:8b"}),
        ("/api/create", "POST", {"model": "mine", "Name": "qwen3:8b", "from": "llama3.2"}),
    ],
)
def test_no_management_field_reaches_ollama_spelled_another_way(
    gw, ollama: FakeOllama, path, method, body
):
    resp = _send(gw, method, path, body)
    assert resp.status_code == 400, resp.text
    assert list(resp.json()) == ["error"]
    assert [r for r in ollama.requests if r.path == path] == []


@pytest.mark.parametrize("field", ["modelfile", "path"])
def test_create_from_an_old_modelfile_is_refused(gw, ollama: FakeOllama, field):
    # Ollama before 0.5.5 read a Modelfile (`FROM qwen3:8b`) or a file on its own disk: names
    # Relay never sees. Today's Ollama ignores both; no client of this API sends them.
    body = {"model": "mine", field: "FROM qwen3:8b" if field == "modelfile" else "/etc/x"}
    resp = _send(gw, "POST", "/api/create", body)
    assert resp.status_code == 400, resp.text
    assert field in resp.json()["error"]
    assert [r for r in ollama.requests if r.path == "/api/create"] == []


@pytest.mark.parametrize(
    "body",
    [{"destination": "mine2"}, {"source": "llama3.2"}, {"source": "llama3.2", "destination": ""}],
)
def test_a_copy_missing_a_name_is_a_400_not_a_500(gw, ollama: FakeOllama, body):
    resp = _send(gw, "POST", "/api/copy", body)
    assert resp.status_code == 400, resp.text
    assert list(resp.json()) == ["error"]
    assert [r for r in ollama.requests if r.path == "/api/copy"] == []


def test_create_and_copy_with_names_the_key_allows_still_work(gw, ollama: FakeOllama):
    made = _send(gw, "POST", "/api/create", {"model": "mine", "from": "llama3.2", "stream": False})
    assert made.status_code == 200, made.text
    copied = _send(gw, "POST", "/api/copy", {"source": "llama3.2", "destination": "mine2"})
    assert copied.status_code == 200, copied.text
    assert "mine2:latest" in ollama.models
    assert _foreign_spellings(ollama) == []


# --- finding 18: native fields spelled another way on chat and generate -------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # Relay streams (stream left out), Ollama would read `ſtream` and answer one object.
        ("/api/chat", {"model": "llama3.2", "messages": HI, "ſtream": False}),
        # Relay checks no message; Ollama would run the ones under `Messages`, images unchecked.
        ("/api/chat", {"model": "llama3.2", "Messages": HI, "stream": False}),
        ("/api/generate", {"model": "llama3.2", "Prompt": "Hi", "stream": False}),
        ("/api/embed", {"model": "llama3.2", "Input": "Hi"}),
        ("/api/show", {"model": "llama3.2", "Options": {}}),
    ],
)
def test_native_fields_spelled_another_way_never_reach_ollama(gw, ollama: FakeOllama, path, body):
    resp = _send(gw, "POST", path, body, key=PLAIN)
    assert resp.status_code == 400, resp.text
    assert list(resp.json()) == ["error"]
    assert _foreign_spellings(ollama) == []


def test_native_fields_spelled_as_ollama_spells_them_still_pass(gw, ollama: FakeOllama):
    body = {"model": "llama3.2", "messages": HI, "stream": False, "keep_alive": "1m", "x_y": 1}
    resp = _send(gw, "POST", "/api/chat", body, key=PLAIN)
    assert resp.status_code == 200, resp.text
    assert ollama.last("/api/chat").body["keep_alive"] == "1m"
    assert _foreign_spellings(ollama) == []


# --- finding 21: a pattern's wildcard reaching into a registry host ----------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        # `llama3.2*` was meant for llama3.2's tags; Ollama reads the first of three parts as
        # the registry to call, so the key chose the host Ollama connects to (any address its
        # name resolves to, plain HTTP with `insecure`) and where pushed weights go.
        ("/api/pull", {"model": "llama3.2.registry.example/x/y", "insecure": True}),
        ("/api/push", {"model": "mine.registry.example:5000/x/y"}),
        ("/api/push", {"model": "mine.registry.example\\x\\y"}),  # Windows: `\\` is `/`
        ("/api/pull", {"model": "https://mine.registry.example/x/y"}),
        ("/api/create", {"model": "mine", "from": "mine.registry.example/x/y"}),
    ],
)
def test_a_wildcard_does_not_choose_the_registry_host(gw, ollama: FakeOllama, path, body):
    resp = _send(gw, "POST", path, body)
    assert resp.status_code == 403, resp.text
    assert list(resp.json()) == ["error"] and "registry" in resp.json()["error"]
    assert [r for r in ollama.requests if r.path == path] == []


def test_a_registry_host_named_in_the_keys_list_or_every_model_still_works(gw, ollama):
    named = _send(gw, "POST", "/api/pull", {"model": "registry.example/team/m"}, key=HOSTED)
    assert named.status_code == 200, named.text
    other = _send(gw, "POST", "/api/pull", {"model": "registry.example/teamx/m"}, key=HOSTED)
    assert other.status_code == 403
    every = _send(gw, "POST", "/api/pull", {"model": "hf.co/org/m", "stream": False}, key=EVERY)
    assert every.status_code == 200, every.text
    plain = _send(gw, "POST", "/api/pull", {"model": "llama3.2:1b", "stream": False})
    assert plain.status_code == 200, plain.text


# --- what held: streams whose client leaves -----------------------------------------------


def test_a_pull_whose_client_leaves_closes_the_upstream(gw, ollama: FakeOllama):
    ollama.pull_pace = 0.3
    resp = _send(gw, "POST", "/api/pull", {"model": "mine-big"}, stream=True)
    assert resp.status_code == 200
    next(resp.iter_lines())
    resp.close()
    wait_until(lambda: ollama.disconnects, timeout=10)
    assert ollama.disconnects[0][0] == "pull mine-big"


def test_a_generate_stream_whose_client_leaves_closes_the_upstream(gw, ollama: FakeOllama):
    ollama.script("llama3.2", content=["tok"] * 200, pace=0.05)
    resp = _send(
        gw, "POST", "/api/generate", {"model": "llama3.2", "prompt": "Hi"}, PLAIN, stream=True
    )
    assert json.loads(next(resp.iter_lines()))["response"] == "tok"
    resp.close()
    wait_until(lambda: ollama.disconnects, timeout=10)
    assert ollama.disconnects[0][0] == "llama3.2" and "llama3.2" not in ollama.completed


# --- findings 20, 23: the Anthropic key fallback -----------------------------------------


def test_two_keys_in_one_request_count_as_two_tries(start_gateway, fake_ollama, tmp_path):
    gw = start_gateway(
        {
            "RELAY_CONFIG": _config(tmp_path, fake_ollama.url),
            "RELAY_UNAUTHENTICATED_PER_MINUTE": "4",
            "RELAY_WORKERS": "1",
            "KEY_ADMIN": ADMIN,
            "KEY_PLAIN": PLAIN,
            "KEY_HOSTED": HOSTED,
            "KEY_EVERY": EVERY,
        }
    )
    statuses = []
    for n in range(4):
        resp = requests.post(
            gw.url + "/v1/messages",
            json={"model": "llama3.2", "max_tokens": 5, "messages": HI},
            headers={
                "x-api-key": f"sk-ant-guess-a-{n}",
                "Authorization": f"Bearer guess-b-{n}",
                "anthropic-version": "2023-06-01",
            },
            timeout=10,
        )
        statuses.append(resp.status_code)
        assert resp.json()["type"] == "error"
    # Four tries a minute: two requests of two keys each, then the address is refused.
    assert statuses == [401, 401, 429, 429]
    # A stale x-api-key beside a valid Bearer key still works, for that key's own budget.
    ok = requests.post(
        gw.url + "/v1/messages/count_tokens",
        json={"model": "llama3.2", "messages": HI},
        headers={
            "x-api-key": "sk-ant-stale",
            "Authorization": f"Bearer {PLAIN}",
            "anthropic-version": "2023-06-01",
        },
        timeout=10,
    )
    assert ok.status_code == 200, ok.text


def test_a_key_holder_cannot_guess_other_keys_for_free_beside_its_own(
    start_gateway, fake_ollama, tmp_path
):
    # A wrong x-api-key beside a valid Bearer key was tried, then the Bearer key answered: each
    # guess cost the holder's own budget (none, for a key without limits) instead of the
    # address's few unauthenticated tries, and a right guess ran as the other key (an oracle).
    gw = start_gateway(
        {
            "RELAY_CONFIG": _config(tmp_path, fake_ollama.url),
            "RELAY_UNAUTHENTICATED_PER_MINUTE": "2",
            "RELAY_WORKERS": "1",
            "KEY_ADMIN": ADMIN,
            "KEY_PLAIN": PLAIN,
            "KEY_HOSTED": HOSTED,
            "KEY_EVERY": EVERY,
        }
    )

    def count(x_api_key: str) -> requests.Response:
        return requests.post(
            gw.url + "/v1/messages/count_tokens",
            json={"model": "llama3.2", "messages": HI},
            headers={
                "x-api-key": x_api_key,
                "Authorization": f"Bearer {PLAIN}",
                "anthropic-version": "2023-06-01",
            },
            timeout=10,
        )

    statuses = [count(f"sk-review-guess-{n:04d}").status_code for n in range(4)]
    assert statuses == [401, 401, 429, 429]
    # A stale Anthropic key (Anthropic's keys start with sk-ant-) still falls back.
    assert count("sk-ant-api03-stale").status_code == 200


# --- what held: the keyless probe, Anthropic image URLs -----------------------------------


def test_the_keyless_probe_reveals_nothing_and_is_limited(start_gateway, fake_ollama, tmp_path):
    gw = start_gateway(
        {
            "RELAY_CONFIG": _config(tmp_path, fake_ollama.url),
            "RELAY_UNAUTHENTICATED_PER_MINUTE": "3",
            "RELAY_WORKERS": "1",
            "KEY_ADMIN": ADMIN,
            "KEY_PLAIN": PLAIN,
            "KEY_HOSTED": HOSTED,
            "KEY_EVERY": EVERY,
        }
    )
    answers = [requests.get(gw.url + "/api/hello", timeout=10) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    first = answers[0]
    assert first.content == b""
    shown = {k.lower() for k in first.headers}
    assert shown <= {
        "server", "date", "connection", "content-type", "content-length",
        "request-id", "x-request-id", "x-cache",
        # the address's own unauthenticated budget, as on a 401
        "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    }  # fmt: skip
    assert "ollama" not in first.text.lower() and fake_ollama.url not in str(first.headers)
    assert answers[3].json()["type"] == "error"  # Anthropic's envelope, even when limited


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x.png",
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.1:9\\@1.1.1.1/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://2130706433/x.png",
    ],
)
def test_anthropic_image_urls_go_through_the_guarded_fetcher(
    start_gateway, fake_ollama, ollama, tmp_path, url
):
    gw = start_gateway(
        {
            "RELAY_CONFIG": _config(tmp_path, fake_ollama.url),
            "RELAY_FETCH_IMAGE_URLS": "true",
            "KEY_ADMIN": ADMIN,
            "KEY_PLAIN": PLAIN,
            "KEY_HOSTED": HOSTED,
            "KEY_EVERY": EVERY,
        }
    )
    image = {"type": "image", "source": {"type": "url", "url": url}}
    body = {
        "model": "llama3.2",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": [image]}],
    }
    resp = requests.post(
        gw.url + "/v1/messages", json=body, headers={"x-api-key": PLAIN}, timeout=10
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert [r for r in ollama.requests if r.path == "/api/chat"] == []
