"""Stored Responses are bounded in bytes: per key, per worker and per conversation (finding 7).

Replies are scripted large (REPLY characters) and the budgets set small, so a few stored
responses fill them; a single worker holds the in-memory store. The same budgets per key and per
conversation are checked with Redis.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from tests.conftest import Gateway
from tests.fakes.ollama import FakeOllama

KEYS = [f"sk-relay-memory-key-{i:04d}" for i in range(6)]
# Characters per scripted reply. A stored one-turn response holds it three times (~150 KB): in
# its history, and as the Response's output and output_text.
REPLY = 50_000
BUDGETS = {
    "RELAY_RESPONSES_MAX_BYTES_PER_KEY": "500000",  # three one-turn responses, not four
    "RELAY_RESPONSES_MAX_BYTES": "1150000",  # seven of them, across keys
    "RELAY_RESPONSES_MAX_CONVERSATION_BYTES": "220000",  # about four turns of history
}


def env_for(fake: FakeOllama, **extra: str) -> dict[str, str]:
    return {
        "OLLAMA_BASE_URL": fake.url,
        "RELAY_API_KEYS": ",".join(KEYS),
        "RELAY_CACHE_TTL": "0",
        "RELAY_WORKERS": "1",
        **BUDGETS,
        **extra,
    }


@pytest.fixture(scope="module")
def budgeted(start_module_gateway: Callable[..., Gateway], fake_ollama: FakeOllama) -> Gateway:
    return start_module_gateway(env_for(fake_ollama))


def create(gw: Gateway, key: str, **body: object) -> requests.Response:
    payload = {"model": "llama3.2", "input": "Tell me everything.", **body}
    return requests.post(
        gw.url + "/v1/responses", json=payload, headers={"Authorization": f"Bearer {key}"}
    )


def stored(gw: Gateway, key: str, response_id: str) -> bool:
    got = requests.get(
        f"{gw.url}/v1/responses/{response_id}", headers={"Authorization": f"Bearer {key}"}
    )
    assert got.status_code in (200, 404), got.text
    return got.status_code == 200


def store_many(gw: Gateway, key: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        resp = create(gw, key)
        assert resp.status_code == 200, resp.text
        ids.append(resp.json()["id"])
    return ids


def assert_not_found(resp: requests.Response) -> None:
    assert resp.status_code == 404, resp.text
    error = resp.json()["error"]
    assert error["param"] == "previous_response_id" and "not found" in error["message"]


def test_a_key_over_its_budget_loses_its_oldest_responses(budgeted, ollama: FakeOllama):
    ollama.script("llama3.2", content=["x" * REPLY])
    first, *rest = store_many(budgeted, KEYS[0], 5)
    assert not stored(budgeted, KEYS[0], first)
    assert_not_found(create(budgeted, KEYS[0], previous_response_id=first))
    assert all(stored(budgeted, KEYS[0], rid) for rid in rest[-3:])
    follow = create(budgeted, KEYS[0], previous_response_id=rest[-1], input="More.")
    assert follow.status_code == 200, follow.text


def test_one_key_filling_its_budget_leaves_another_keys_responses(budgeted, ollama):
    ollama.script("llama3.2", content=["y" * REPLY])
    [theirs] = store_many(budgeted, KEYS[1], 1)
    mine = store_many(budgeted, KEYS[2], 8)  # far over the key's budget, under the global one
    assert stored(budgeted, KEYS[1], theirs)
    assert not stored(budgeted, KEYS[2], mine[0]) and stored(budgeted, KEYS[2], mine[-1])


def test_the_worker_budget_evicts_the_least_recently_used_across_keys(
    start_gateway, fake_ollama, ollama
):
    gw = start_gateway(env_for(fake_ollama))
    ollama.script("llama3.2", content=["z" * REPLY])
    # Three keys at their own budget each: together over the worker's.
    a, b, c = (store_many(gw, key, 3) for key in KEYS[:3])
    assert not stored(gw, KEYS[0], a[0])  # the oldest of all went first
    assert all(stored(gw, KEYS[1], rid) for rid in b)
    assert all(stored(gw, KEYS[2], rid) for rid in c)


def test_a_response_larger_than_the_key_budget_is_not_stored(budgeted, ollama):
    ollama.script("llama3.2", content=["w" * REPLY])
    [kept] = store_many(budgeted, KEYS[3], 1)
    ollama.script("llama3.2", content=["w" * 200_000])  # stored three times: over 500 KB
    huge = create(budgeted, KEYS[3])
    assert huge.status_code == 200 and huge.json()["status"] == "completed"
    assert not stored(budgeted, KEYS[3], huge.json()["id"])
    assert_not_found(create(budgeted, KEYS[3], previous_response_id=huge.json()["id"]))
    assert stored(budgeted, KEYS[3], kept)  # refusing the huge one evicted nothing


def continue_until_refused(gw: Gateway, key: str, limit: int = 10) -> tuple[int, str, dict]:
    """Continue one conversation turn after turn; return the refused turn, the last id, error."""
    previous = create(gw, key).json()["id"]
    for turn in range(2, limit + 1):
        resp = create(gw, key, previous_response_id=previous, input=f"Turn {turn}.")
        if resp.status_code != 200:
            assert resp.status_code == 400, resp.text
            return turn, previous, resp.json()
        previous = resp.json()["id"]
    raise AssertionError(f"a {limit}-turn conversation of {REPLY}-character replies was stored")


def assert_too_long(body: dict) -> None:
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == "previous_response_id"
    assert "too long to store" in error["message"] and error["code"] == "conversation_too_long"


def test_a_conversation_past_its_cap_is_refused_with_a_400(budgeted, ollama):
    ollama.script("llama3.2", content=["v" * REPLY])
    turn, last, body = continue_until_refused(budgeted, KEYS[4])
    # 220 KB of history is four 50 KB replies and a bit: the sixth turn is refused.
    assert turn == 6
    assert_too_long(body)
    assert stored(budgeted, KEYS[4], last)  # the last stored turn is still there to read
    streamed = create(budgeted, KEYS[4], previous_response_id=last, stream=True)
    assert streamed.status_code == 400 and "text/event-stream" not in streamed.headers.get(
        "Content-Type", ""
    )
    assert_too_long(streamed.json())
    # Without storing, the conversation may still be continued: nothing grows.
    unstored = create(budgeted, KEYS[4], previous_response_id=last, store=False)
    assert unstored.status_code == 200, unstored.text
    assert not stored(budgeted, KEYS[4], unstored.json()["id"])


def test_redis_keeps_the_per_key_budget_and_the_conversation_cap(
    start_gateway, fake_ollama, ollama, redis_server
):
    gw = start_gateway(env_for(fake_ollama, REDIS_URL=redis_server.url, RELAY_WORKERS="2"))
    ollama.script("llama3.2", content=["r" * REPLY])
    [theirs] = store_many(gw, KEYS[1], 1)
    mine = store_many(gw, KEYS[0], 5)
    assert not stored(gw, KEYS[0], mine[0]) and not stored(gw, KEYS[0], mine[1])
    assert all(stored(gw, KEYS[0], rid) for rid in mine[2:])
    assert stored(gw, KEYS[1], theirs)
    turn, _, body = continue_until_refused(gw, KEYS[2])
    assert turn == 6
    assert_too_long(body)
    ollama.script("llama3.2", content=["r" * 200_000])
    huge = create(gw, KEYS[3]).json()["id"]
    assert not stored(gw, KEYS[3], huge)
    # Deleting a response gives its bytes back to its key.
    assert requests.delete(
        f"{gw.url}/v1/responses/{mine[-1]}", headers={"Authorization": f"Bearer {KEYS[0]}"}
    ).json()["deleted"]
    ollama.script("llama3.2", content=["r" * REPLY])
    store_many(gw, KEYS[0], 1)
    assert stored(gw, KEYS[0], mine[2])
