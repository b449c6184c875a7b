"""Stored Responses conversations (previous_response_id) keep core messages in a shared store.

The gateway stores in a real Redis, so a test can look at a record, put one of the shape Relay
wrote before core message records (chat-format `history`), or corrupt one, the way a record
left from before an upgrade or damaged in Redis would be met. The official SDK is the client;
what the upstream was sent is read from the fakes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
import redis
import requests

from tests.conftest import API_KEY, Gateway, RedisServer
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI, Reply

pytestmark = pytest.mark.redis

PNG = "data:image/png;base64,iVBORw0KGgo="
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CLOCK = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}
LOOK = {
    "role": "user",
    "content": [
        {"type": "input_text", "text": "Where is this, and how is the weather?"},
        {"type": "input_image", "image_url": PNG},
    ],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(
    start_module_gateway: Callable[..., Gateway],
    fake_ollama: FakeOllama,
    fake_openai_chat: FakeOpenAI,
    store: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Gateway:
    config = tmp_path_factory.mktemp("history") / "relay.toml"
    config.write_text(
        f'[backends.local]\ntype = "ollama"\nurl = "{fake_ollama.url}"\n'
        'models = ["llama*", "qwen*"]\n\n'
        f'[backends.chatup]\ntype = "openai"\nurl = "{fake_openai_chat.url}/v1"\n'
        'models = ["gpt-*"]\n'
    )
    env = {
        "RELAY_CONFIG": str(config),
        "RELAY_API_KEYS": API_KEY,
        "RELAY_CACHE_TTL": "0",
        "REDIS_URL": store.url,
    }
    return start_module_gateway(env)


@pytest.fixture
def sdk(gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def chat_up(fake_openai_chat: FakeOpenAI) -> FakeOpenAI:
    fake_openai_chat.reset()
    return fake_openai_chat


@pytest.fixture
def db(store: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(store.url)
    yield client
    client.close()


def record_key(response_id: str) -> str:
    return f"relay:responses:{response_id}"


def read_record(db: redis.Redis, response_id: str) -> dict[str, Any]:
    raw = db.get(record_key(response_id))
    assert raw is not None, f"{response_id} is not stored"
    return json.loads(raw)  # type: ignore[no-any-return]


def write_record(db: redis.Redis, response_id: str, raw: str) -> None:
    assert db.set(record_key(response_id), raw, xx=True, keepttl=True)


class Upstream:
    """One backend of the gateway as a test sees it: what to script, what it was sent."""

    def __init__(self, model: str, ollama: FakeOllama, chat_up: FakeOpenAI) -> None:
        self.model, self.ollama, self.chat_up = model, ollama, chat_up

    def script(self, content: str = "", thinking: str = "", calls: tuple[str, ...] = ()) -> None:
        args = {"get_weather": {"city": "Oslo"}, "get_time": {}}
        if self.model.startswith("gpt-"):
            self.chat_up.reply = Reply(
                content=[content] if content else [],
                reasoning=[thinking] if thinking else [],
                tool_calls=[{"name": c, "arguments": [json.dumps(args[c])]} for c in calls],
            )
        else:
            self.ollama.script(
                self.model,
                content=[content] if content else [],
                thinking=[thinking] if thinking else [],
                tool_calls=[{"name": c, "arguments": args[c]} for c in calls],
            )

    def messages(self) -> list[dict[str, Any]]:
        """The messages of the last chat request the upstream got."""
        if self.model.startswith("gpt-"):
            return self.chat_up.last("/v1/chat/completions").body["messages"]  # type: ignore[no-any-return]
        return self.ollama.last().body["messages"]  # type: ignore[no-any-return]


@pytest.fixture(params=["qwen3:8b", "gpt-test"])
def upstream(request: pytest.FixtureRequest, ollama: FakeOllama, chat_up: FakeOpenAI) -> Upstream:
    return Upstream(request.param, ollama, chat_up)


def items(response: Any) -> list[dict[str, Any]]:
    """A response's output items as a client sends them back in `input`: messages as text."""
    sent = []
    for item in response.output:
        if item.type == "message":
            text = "".join(p.text for p in item.content if p.type == "output_text")
            sent.append({"type": "message", "role": "assistant", "content": text})
        else:
            sent.append(item.model_dump(exclude_none=True))
    return sent


def outputs(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = {"get_weather": "3 degrees and rain", "get_time": "14:05"}
    return [
        {"type": "function_call_output", "call_id": c["call_id"], "output": results[c["name"]]}
        for c in calls
    ]


def test_three_turns_with_an_image_tool_calls_and_reasoning_lose_nothing(
    sdk: openai.OpenAI, upstream: Upstream, db: redis.Redis
):
    model, tools = upstream.model, [WEATHER, CLOCK]
    upstream.script(thinking="An image; I need the weather.", calls=("get_weather", "get_time"))
    first = sdk.responses.create(model=model, input=[LOOK], tools=tools, instructions="Be brief.")
    calls = [i for i in items(first) if i["type"] == "function_call"]
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert items(first)[0]["type"] == "reasoning"

    upstream.script(thinking="Rain in Oslo.", content="Oslo: 3 degrees and rain.")
    with sdk.responses.stream(
        model=model, previous_response_id=first.id, input=outputs(calls), tools=tools
    ) as stream:
        second = stream.get_final_response()
    assert second.output_text == "Oslo: 3 degrees and rain."

    upstream.script(content="Still rain.")
    third = sdk.responses.create(
        model=model, previous_response_id=second.id, input="And tomorrow?", tools=tools
    )
    assert third.output_text == "Still rain."
    continued = upstream.messages()

    # The same conversation sent whole, as a client without previous_response_id sends it.
    upstream.script(content="Still rain.")
    whole = [LOOK, *items(first), *outputs(calls), *items(second)]
    whole.append({"role": "user", "content": "And tomorrow?"})
    sdk.responses.create(model=model, input=whole, tools=tools, store=False)
    assert continued == upstream.messages()

    # Nothing was lost on the way: the image, both calls and their results, the answers.
    roles = [m["role"] for m in continued]
    assert roles == ["user", "assistant", "tool", "tool", "assistant", "user"]
    if model.startswith("gpt-"):
        assert continued[0]["content"][1] == {"type": "image_url", "image_url": {"url": PNG}}
        assert [c["id"] for c in continued[1]["tool_calls"]] == [c["call_id"] for c in calls]
    else:
        assert continued[0]["images"] == [PNG.partition(",")[2]]
        assert all("thinking" not in m for m in continued)  # earlier reasoning is not replayed
    assert [c["function"]["name"] for c in continued[1]["tool_calls"]] == [
        "get_weather",
        "get_time",
    ]
    assert [m["content"] for m in continued[2:]] == [
        "3 degrees and rain",
        "14:05",
        "Oslo: 3 degrees and rain.",
        "And tomorrow?",
    ]

    # What is stored is core message records, and the Response object as returned.
    record = read_record(db, third.id)
    assert record["v"] == 2 and "history" not in record
    assert [m["role"] for m in record["messages"]] == [*roles, "assistant"]
    assert record["messages"][0]["content"][1] == {"type": "image", "url": PNG}
    assert record["messages"][1]["tool_calls"][1]["index"] == 1
    assert record["response"]["id"] == third.id
    assert sdk.responses.retrieve(first.id).output[0].type == "reasoning"


def old_shape(record: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """A record as Relay stored it before core message records: chat-format history."""
    return json.dumps(
        {"history": history, "response": record["response"], "owner": record["owner"]}
    )


def test_a_record_of_the_old_shape_still_continues_and_its_next_turn_is_stored_new(
    sdk: openai.OpenAI, chat_up: FakeOpenAI, db: redis.Redis
):
    chat_up.reply = Reply(content=[], tool_calls=[{"name": "get_weather", "arguments": ["{}"]}])
    old = sdk.responses.create(model="gpt-test", input=[LOOK], tools=[WEATHER])
    new = sdk.responses.create(model="gpt-test", input=[LOOK], tools=[WEATHER])
    history = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": LOOK["content"][0]["text"]},
                {"type": "image_url", "image_url": {"url": PNG}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
    ]
    write_record(db, old.id, old_shape(read_record(db, old.id), history))

    sent = []
    follow_ups = []
    for previous in (old.id, new.id):
        chat_up.reply = Reply(content=["Rain."])
        follow_ups.append(
            sdk.responses.create(
                model="gpt-test",
                previous_response_id=previous,
                input=outputs([{"call_id": "call_0", "name": "get_weather"}]),
                tools=[WEATHER],
            )
        )
        sent.append(chat_up.last("/v1/chat/completions").body["messages"])
    assert sent[0] == sent[1]
    assert sent[0][0]["content"][1]["image_url"]["url"] == PNG
    assert sdk.responses.retrieve(old.id).output[0].name == "get_weather"

    upgraded = read_record(db, follow_ups[0].id)
    assert upgraded["v"] == 2 and "history" not in upgraded
    assert upgraded["messages"] == read_record(db, follow_ups[1].id)["messages"]


def corrupt(record: dict[str, Any], how: str) -> str:
    owner, response = record["owner"], record["response"]
    messages = record["messages"]
    return {
        "not JSON": '{"v": 2, "messages": [',
        "not an object": json.dumps([record]),
        "a message of the wrong type": json.dumps({**record, "messages": [{"role": 5}]}),
        "an unknown field": json.dumps(
            {**record, "messages": [{**messages[0], "images": [PNG]}, *messages[1:]]}
        ),
        "a tool call without its index": json.dumps(
            {**record, "messages": [{"role": "assistant", "content": None, "tool_calls": [{}]}]}
        ),
        "no messages": json.dumps({"v": 2, "response": response, "owner": owner}),
        "no response": json.dumps({"v": 2, "messages": messages, "owner": owner}),
        "an unknown version": json.dumps({**record, "v": 3}),
        "an old shape with a bad message": old_shape(record, [{"role": "wizard", "content": "x"}]),
        "an old shape with a bad image": old_shape(
            record, [{"role": "user", "content": [{"type": "image_url", "image_url": "ftp://x"}]}]
        ),
    }[how]


@pytest.mark.parametrize(
    "how",
    [
        "not JSON",
        "not an object",
        "a message of the wrong type",
        "an unknown field",
        "a tool call without its index",
        "no messages",
        "no response",
        "an unknown version",
        "an old shape with a bad message",
        "an old shape with a bad image",
    ],
)
def test_a_corrupted_record_is_a_404_like_an_expired_one(
    gw: Gateway, sdk: openai.OpenAI, ollama: FakeOllama, db: redis.Redis, how: str
):
    ollama.script("llama3.2", content=["One."])
    stored = sdk.responses.create(model="llama3.2", input="Count")
    write_record(db, stored.id, corrupt(read_record(db, stored.id), how))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": "llama3.2", "input": "Next", "previous_response_id": stored.id}
    for stream in (False, True):
        resp = requests.post(
            gw.url + "/v1/responses", json={**body, "stream": stream}, headers=headers
        )
        assert resp.status_code == 404, resp.text
        error = resp.json()["error"]
        assert error["param"] == "previous_response_id" and "not found" in error["message"]
    for method in (requests.get, requests.delete):
        resp = method(f"{gw.url}/v1/responses/{stored.id}", headers=headers)
        assert resp.status_code == 404, resp.text
        assert resp.json()["error"]["param"] == "response_id"
    assert "Traceback" not in gw.logs()
    # The record's text never reaches the log, only which part of it is wrong.
    assert f"stored response {stored.id} unreadable" in gw.logs()
    assert "Count" not in gw.logs()
