"""State that must survive a change of worker: Dify conversation memory and stored Responses,
shared through Redis by two gateway processes; stored Responses belong to the key that made them."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import API_KEY
from tests.fakes.dify import FakeDify

OTHER_KEY = "sk-relay-test-key-0002"


@pytest.fixture
def two_gateways(start_gateway, fake_ollama, redis_server, tmp_path):
    dify = FakeDify()
    dify.add_app("app-shared-key", "chat", name="shared")
    env = {
        "OLLAMA_BASE_URL": fake_ollama.url,
        "DIFY_API_URL": dify.url,
        "DIFY_API_KEY": "app-shared-key",
        "DIFY_MODEL": "shared",
        "RELAY_API_KEYS": f"{API_KEY},{OTHER_KEY}",
        "REDIS_URL": redis_server.url,
        "RELAY_CACHE_TTL": "0",
    }
    yield start_gateway(env), start_gateway(env), dify
    dify.close()


@pytest.fixture
def sdk():
    """Make SDK clients for a gateway and key; all are closed after the test."""
    made: list[openai.OpenAI] = []

    def make(gw, key: str = API_KEY) -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_dify_memory_and_responses_carry_over_to_another_gateway(two_gateways, ollama, sdk):
    first, second, dify = two_gateways
    history = [{"role": "user", "content": "Hi"}]
    reply = sdk(first).chat.completions.create(model="shared", messages=history)
    history += [
        {"role": "assistant", "content": reply.choices[0].message.content},
        {"role": "user", "content": "Again"},
    ]
    again = sdk(second).chat.completions.create(model="shared", messages=history)
    assert again.choices[0].message.content == "Answer 2 to: Again"
    sent = dify.last("/v1/chat-messages").body
    assert sent["query"] == "Again" and sent["conversation_id"]

    ollama.script("llama3.2", content=["One."])
    stored = sdk(first).responses.create(model="llama3.2", input="Count")
    ollama.script("llama3.2", content=["Two."])
    follow = sdk(second).responses.create(
        model="llama3.2", input="Next", previous_response_id=stored.id
    )
    assert follow.output_text == "Two."
    assert sdk(second).responses.retrieve(stored.id).output_text == "One."


def test_a_stored_response_belongs_to_the_key_that_made_it(start_gateway, fake_ollama, ollama, sdk):
    gw = start_gateway(
        {"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_API_KEYS": f"{API_KEY},{OTHER_KEY}"}
    )
    mine = sdk(gw).responses.create(model="llama3.2", input="private")
    other = sdk(gw, OTHER_KEY)
    for attempt in (
        lambda: other.responses.retrieve(mine.id),
        lambda: other.responses.delete(mine.id),
        lambda: other.responses.create(model="llama3.2", input="x", previous_response_id=mine.id),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert sdk(gw).responses.retrieve(mine.id).id == mine.id
