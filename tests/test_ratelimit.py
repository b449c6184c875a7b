"""Rate limits through the gateway: headers, exact admission under concurrency, token limits,
the per-address limit for requests without a valid key, and the 429 envelope."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from tests.conftest import API_KEY, wait_until
from tests.fakes.ollama import FakeOllama

USER = [{"role": "user", "content": "Hi"}]
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def limited_env(fake: FakeOllama, **extra: str) -> dict[str, str]:
    return {"OLLAMA_BASE_URL": fake.url, "RELAY_API_KEYS": API_KEY, "RELAY_CACHE_TTL": "0", **extra}


def concurrent_posts(
    urls: list[str], count: int, fake: FakeOllama, gate: threading.Event
) -> list[requests.Response]:
    """Send `count` chat requests at once, spread over `urls`, while the fake holds its answers."""
    start = threading.Barrier(count)

    def one(i: int) -> requests.Response:
        start.wait()
        body = {"model": "llama3.2", "messages": USER}
        return requests.post(urls[i % len(urls)] + "/v1/chat/completions", json=body, headers=AUTH)

    def held() -> int:
        return len([r for r in fake.requests if r.path == "/api/chat"])

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(one, i) for i in range(count)]
        # Release the fake once every request is accounted for: held upstream or answered.
        wait_until(lambda: held() + sum(f.done() for f in futures) >= count, timeout=20)
        gate.set()
        return [f.result() for f in futures]


def assert_exactly(responses: list[requests.Response], admitted: int) -> None:
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * admitted + [429] * (len(responses) - admitted), statuses
    for r in responses:
        if r.status_code == 429:
            assert_429(r, "requests")


def assert_429(resp: requests.Response, kind: str) -> None:
    error = resp.json()["error"]
    assert error["type"] == kind and error["code"] == "rate_limit_exceeded", error
    assert set(error) == {"message", "type", "param", "code"}
    assert f"Rate limit reached for {kind}" in error["message"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert resp.headers["x-ratelimit-remaining-" + kind] == "0"


def test_limit_headers_are_on_every_response_in_openai_format(start_gateway, fake_ollama, ollama):
    gw = start_gateway(
        limited_env(
            fake_ollama,
            RELAY_REQUESTS_PER_MINUTE="100",
            RELAY_REQUESTS_PER_DAY="1000",
            RELAY_TOKENS_PER_MINUTE="5000",
        )
    )
    ollama.script("llama3.2", prompt_eval_count=12, eval_count=5)
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0)
    raw = sdk.chat.completions.with_raw_response.create(model="llama3.2", messages=USER)
    h = raw.headers
    assert h["x-ratelimit-limit-requests"] == "100"
    assert h["x-ratelimit-remaining-requests"] == "99"
    assert GO_DURATION.match(h["x-ratelimit-reset-requests"]), h["x-ratelimit-reset-requests"]
    assert h["x-ratelimit-limit-tokens"] == "5000"
    assert h["x-ratelimit-remaining-tokens"] == "4983"  # 12 + 5 charged, by real usage
    assert GO_DURATION.match(h["x-ratelimit-reset-tokens"])
    for resp in (
        requests.get(gw.url + "/v1/models", headers=AUTH),
        requests.post(gw.url + "/v1/chat/completions", json={"model": "nope"}, headers=AUTH),
    ):
        assert resp.headers["x-ratelimit-limit-requests"] == "100", resp.headers
        assert "x-ratelimit-remaining-tokens" in resp.headers
    assert (
        requests.get(gw.url + "/v1/models", headers=AUTH).headers["x-ratelimit-remaining-requests"]
        == "96"
    )
    assert "x-ratelimit-limit-requests" not in requests.get(gw.url + "/health").headers


def test_exactly_n_of_n_plus_k_concurrent_requests_pass_on_one_worker(
    start_gateway, fake_ollama, ollama
):
    gw = start_gateway(limited_env(fake_ollama, RELAY_REQUESTS_PER_MINUTE="5"))
    gate = threading.Event()
    ollama.script("llama3.2", gate=gate)
    assert_exactly(concurrent_posts([gw.url], 12, ollama, gate), admitted=5)
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError) as e:
        sdk.models.list()
    assert e.value.code == "rate_limit_exceeded" and e.value.type == "requests"
    assert "requests per min (RPM)" in e.value.message


def test_token_limit_trips_after_usage_crosses_it(start_gateway, fake_ollama, ollama):
    gw = start_gateway(limited_env(fake_ollama, RELAY_TOKENS_PER_MINUTE="30"))
    ollama.script("llama3.2", prompt_eval_count=12, eval_count=5)  # 17 tokens a reply
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0)
    sdk.chat.completions.create(model="llama3.2", messages=USER)  # 17 used, 13 left
    chunks = sdk.chat.completions.create(model="llama3.2", messages=USER, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # The stream is charged when it closes; then the budget (34 of 30) is gone.
    url = gw.url + "/v1/chat/completions"
    body = {"model": "llama3.2", "messages": USER}

    def tokens_left() -> str:
        resp = requests.get(gw.url + "/v1/models", headers=AUTH)
        return resp.headers["x-ratelimit-remaining-tokens"]

    wait_until(lambda: tokens_left() == "0")
    resp = requests.post(url, json=body, headers=AUTH)
    assert_429(resp, "tokens")
    assert "tokens per min (TPM)" in resp.json()["error"]["message"]
    assert "Limit 30, Used 34" in resp.json()["error"]["message"]
    with pytest.raises(openai.RateLimitError) as e:
        sdk.chat.completions.create(model="llama3.2", messages=USER)
    assert e.value.type == "tokens"
    assert len([r for r in ollama.requests if r.path == "/api/chat"]) == 2
    # Listing models spends no tokens and stays allowed.
    assert requests.get(gw.url + "/v1/models", headers=AUTH).status_code == 200


def test_requests_without_a_valid_key_are_limited_per_address(start_gateway, fake_ollama, ollama):
    gw = start_gateway(limited_env(fake_ollama, RELAY_UNAUTHENTICATED_PER_MINUTE="3"))
    url = gw.url + "/v1/models"
    guesses = [
        requests.get(url, headers={"Authorization": f"Bearer sk-guess-{i:08d}"}) for i in range(5)
    ]
    assert [r.status_code for r in guesses] == [401, 401, 401, 429, 429]
    assert guesses[3].json()["error"]["code"] == "rate_limit_exceeded"
    assert "your address" in guesses[3].json()["error"]["message"]
    assert 1 <= int(guesses[3].headers["Retry-After"]) <= 60
    # A caller with a valid key is not held back by the guesses.
    assert requests.get(url, headers=AUTH).status_code == 200


def test_per_key_limits_override_the_default(start_gateway, fake_ollama, ollama, tmp_path):
    from tests.test_keys import sha

    path = tmp_path / "relay.toml"
    path.write_text(
        f'[limits]\nrequests_per_minute = 100\n\n[keys.small]\nhash = "{sha("sk-small-00000")}"\n'
        "limits = { requests_per_minute = 2 }\n"
    )
    gw = start_gateway(limited_env(fake_ollama, RELAY_CONFIG=str(path)))
    small = {"Authorization": "Bearer sk-small-00000"}
    statuses = [requests.get(gw.url + "/v1/models", headers=small).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    big = requests.get(gw.url + "/v1/models", headers=AUTH)
    assert big.status_code == 200 and big.headers["x-ratelimit-limit-requests"] == "100"
