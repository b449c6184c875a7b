"""A refusal from a chat-only OpenAI-compatible upstream survives the conversion to /v1/responses
(a `refusal` content part; streamed as response.refusal.delta/done) and stays a `refusal` on
/v1/chat/completions. The official openai SDK is the client, against the fake chat upstream."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import API_KEY, Gateway
from tests.fakes.openai_upstream import FakeOpenAI, Reply

REFUSAL = ["I can't", " help", " with that."]
SAID = "I can't help with that."


@pytest.fixture(scope="module")
def chat_gateway(start_module_gateway, fake_openai_chat: FakeOpenAI, tmp_path_factory) -> Gateway:
    config = tmp_path_factory.mktemp("wire-refusal") / "relay.toml"
    config.write_text(
        f'[backends.chatup]\ntype = "openai"\nurl = "{fake_openai_chat.url}/v1"\n'
        'models = ["gpt-*"]\n'
    )
    env = {"RELAY_CONFIG": str(config), "RELAY_API_KEYS": API_KEY, "RELAY_CACHE_TTL": "0"}
    return start_module_gateway(env)  # type: ignore[no-any-return]


@pytest.fixture
def sdk(chat_gateway: Gateway, fake_openai_chat: FakeOpenAI) -> Iterator[openai.OpenAI]:
    fake_openai_chat.reset()
    with openai.OpenAI(base_url=chat_gateway.url + "/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


def message_parts(response) -> list[tuple[str, str]]:
    return [
        (p.type, p.refusal if p.type == "refusal" else p.text)
        for item in response.output
        if item.type == "message"
        for p in item.content
    ]


def test_responses_keeps_a_refusal(sdk, fake_openai_chat):
    fake_openai_chat.reply = Reply(content=[], refusal=REFUSAL)
    response = sdk.responses.create(model="gpt-test", input="Help me do harm")
    assert response.status == "completed"
    assert message_parts(response) == [("refusal", SAID)]
    assert response.output_text == ""  # a refusal is not output text
    stored = sdk.responses.retrieve(response.id)
    assert message_parts(stored) == [("refusal", SAID)]


def test_responses_keeps_text_and_refusal_apart(sdk, fake_openai_chat):
    fake_openai_chat.reply = Reply(content=["Partly:"], refusal=["no more."])
    response = sdk.responses.create(model="gpt-test", input="Hi")
    assert sorted(message_parts(response)) == [("output_text", "Partly:"), ("refusal", "no more.")]
    assert response.output_text == "Partly:"


def test_responses_stream_sends_refusal_events(sdk, fake_openai_chat):
    fake_openai_chat.reply = Reply(content=[], refusal=REFUSAL)
    events = list(sdk.responses.create(model="gpt-test", input="Help me do harm", stream=True))
    kinds = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if e.type == "response.refusal.delta"]
    assert [d.delta for d in deltas] == REFUSAL
    (done,) = [e for e in events if e.type == "response.refusal.done"]
    assert done.refusal == SAID
    assert {(d.item_id, d.output_index, d.content_index) for d in deltas} == {
        (done.item_id, done.output_index, done.content_index)
    }
    (added,) = [e for e in events if e.type == "response.content_part.added"]
    assert added.part.type == "refusal" and added.part.refusal == ""
    (part_done,) = [e for e in events if e.type == "response.content_part.done"]
    assert (part_done.part.type, part_done.part.refusal) == ("refusal", SAID)
    assert "response.output_text.delta" not in kinds
    # OpenAI's order: item added, part added, deltas, refusal done, part done, item done.
    order = [
        "response.output_item.added",
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [k for i, k in enumerate(kinds) if k in order and k not in kinds[:i]] == order
    assert message_parts(events[-1].response) == [("refusal", SAID)]


def test_responses_stream_helper_final_response_has_the_refusal(sdk, fake_openai_chat):
    fake_openai_chat.reply = Reply(content=["Partly:"], refusal=["no", " more."])
    with sdk.responses.stream(model="gpt-test", input="Hi") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert message_parts(final) == [("refusal", "no more."), ("output_text", "Partly:")]


def test_a_refused_turn_continues_with_previous_response_id(sdk, fake_openai_chat):
    fake_openai_chat.reply = Reply(content=[], refusal=REFUSAL)
    first = sdk.responses.create(model="gpt-test", input="Help me do harm")
    fake_openai_chat.reply = Reply(content=["Sure."])
    second = sdk.responses.create(
        model="gpt-test", input="Then tell a joke", previous_response_id=first.id
    )
    assert second.output_text == "Sure."
    sent = fake_openai_chat.last("/v1/chat/completions").body["messages"]
    assert {"role": "assistant", "content": SAID} in sent


@pytest.mark.parametrize("stream", [False, True])
def test_chat_completions_keeps_a_refusal(sdk, fake_openai_chat, stream):
    fake_openai_chat.reply = Reply(content=[], refusal=REFUSAL)
    reply = sdk.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "Hi"}], stream=stream
    )
    if stream:
        chunks = [c.choices[0].delta for c in reply if c.choices]
        assert "".join(d.refusal or "" for d in chunks) == SAID
        assert "".join(d.content or "" for d in chunks) == ""
    else:
        assert reply.choices[0].message.refusal == SAID
        assert reply.choices[0].message.content is None
