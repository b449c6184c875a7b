"""Dify conversation memory behind the gateway: one Dify conversation per chat, history mode,
edited histories, explicit ids, the conversation header, namespaced users."""

from __future__ import annotations

import openai
import pytest

from tests.dify.conftest import KEYS, USER_KEY_NAME, chat_requests, text_of

# --- conversation memory -----------------------------------------------------------------


def test_three_turns_send_only_the_newest_text_into_one_dify_conversation(sdk, dify):
    history = [{"role": "system", "content": "Be nice"}, {"role": "user", "content": "Hi"}]
    raw = sdk.chat.completions.with_raw_response.create(model="chatbot", messages=history)
    first = raw.parse()
    assert first.choices[0].message.content == "Answer 1 to: Hi"
    conversation = raw.headers["X-Dify-Conversation-Id"]
    sent = chat_requests(dify)[-1].body
    assert sent["query"] == "Hi" and sent["conversation_id"] == ""
    assert sent["response_mode"] == "streaming" and sent["auto_generate_name"] is False
    assert sent["user"] == USER_KEY_NAME
    assert sent["inputs"] == {"tone": "friendly"}

    history += [
        {"role": "assistant", "content": "Answer 1 to: Hi"},
        {"role": "user", "content": "And?"},
    ]
    second = sdk.chat.completions.create(model="chatbot", messages=history)
    assert second.choices[0].message.content == "Answer 2 to: And?"
    sent = chat_requests(dify)[-1].body
    assert (sent["query"], sent["conversation_id"]) == ("And?", conversation)

    history += [
        {"role": "assistant", "content": "Answer 2 to: And?"},
        {"role": "user", "content": "Last"},
    ]
    third = text_of(sdk.chat.completions.create(model="chatbot", messages=history, stream=True))
    assert third == "Answer 3 to: Last"
    sent = chat_requests(dify)[-1].body
    assert (sent["query"], sent["conversation_id"]) == ("Last", conversation)
    assert [q for q, _a in dify.conversations(KEYS["chatbot"][0], USER_KEY_NAME)[conversation]] == [
        "Hi",
        "And?",
        "Last",
    ]


def test_history_mode_sends_the_transcript_to_a_new_conversation_every_time(sdk, dify):
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Again"},
    ]
    sdk.chat.completions.create(model="historian", messages=history)
    sent = chat_requests(dify)[-1].body
    assert sent["conversation_id"] == ""
    assert sent["query"] == "USER:\nHi\n\nASSISTANT:\nHello!\n\nUSER:\nAgain"


def test_edited_history_starts_a_new_conversation_with_the_full_transcript(sdk, dify):
    first = [{"role": "user", "content": "Hi"}]
    sdk.chat.completions.create(model="chatbot", messages=first)
    edited = [
        {"role": "user", "content": "Hi there, edited"},
        {"role": "assistant", "content": "Answer 1 to: Hi"},
        {"role": "user", "content": "Go on"},
    ]
    reply = sdk.chat.completions.create(model="chatbot", messages=edited)
    sent = chat_requests(dify)[-1].body
    assert sent["conversation_id"] == ""
    assert "Hi there, edited" in sent["query"] and sent["query"].endswith("USER:\nGo on")
    assert reply.choices[0].message.content.startswith("Answer 1 to: USER:")


def test_conversation_gone_on_dify_falls_back_without_losing_context(sdk, dify):
    history = [{"role": "user", "content": "Remember 42"}]
    sdk.chat.completions.create(model="chatbot", messages=history)
    gone = chat_requests(dify)[-1]
    dify.reset()  # Dify forgot every conversation (deleted, or another server)
    for name, (key, mode) in KEYS.items():
        dify.add_app(key, mode, name=name)
    history += [
        {"role": "assistant", "content": "Answer 1 to: Remember 42"},
        {"role": "user", "content": "What number?"},
    ]
    reply = sdk.chat.completions.create(model="chatbot", messages=history)
    tried, retried = chat_requests(dify)[-2:]
    assert tried.body["conversation_id"] != "" and tried.body["query"] == "What number?"
    assert retried.body["conversation_id"] == ""
    assert "Remember 42" in retried.body["query"] and "What number?" in retried.body["query"]
    assert reply.choices[0].message.content.startswith("Answer 1 to:")
    assert gone.body["conversation_id"] == ""


def test_explicit_conversation_id_wins_and_an_unknown_one_is_404(sdk, dify, dify_gateway):
    raw = sdk.chat.completions.with_raw_response.create(
        model="chatbot", messages=[{"role": "user", "content": "One"}]
    )
    conversation = raw.headers["X-Dify-Conversation-Id"]
    reply = sdk.chat.completions.create(
        model="chatbot",
        messages=[{"role": "user", "content": "Two"}],
        extra_headers={"X-Dify-Conversation-Id": conversation},
    )
    assert reply.choices[0].message.content == "Answer 2 to: Two"
    sdk.chat.completions.create(
        model="chatbot",
        messages=[{"role": "user", "content": "Three"}],
        extra_body={"conversation_id": conversation},
    )
    assert chat_requests(dify)[-1].body["conversation_id"] == conversation
    with pytest.raises(openai.NotFoundError) as e:
        sdk.chat.completions.create(
            model="chatbot",
            messages=[{"role": "user", "content": "Four"}],
            extra_headers={"X-Dify-Conversation-Id": "5f0c9e0e-1a55-4a55-9f55-0b0c0d0e0f10"},
        )
    assert e.value.code == "conversation_not_found"


def test_streamed_replies_carry_the_conversation_header(sdk, dify, dify_gateway):
    # The core hands the header up in its outcome, before the stream's first byte.
    with sdk.chat.completions.with_streaming_response.create(
        model="chatbot", messages=[{"role": "user", "content": "One"}], stream=True
    ) as raw:
        conversation = raw.headers["X-Dify-Conversation-Id"]
        assert "".join(raw.iter_lines()).endswith("data: [DONE]")
    assert conversation
    with sdk.responses.with_streaming_response.create(
        model="chatbot", input="Two", stream=True
    ) as raw:
        assert raw.headers["X-Dify-Conversation-Id"]
        "".join(raw.iter_lines())
    reply = sdk.responses.with_raw_response.create(model="chatbot", input="Three")
    assert reply.headers["X-Dify-Conversation-Id"]


def test_openai_user_field_becomes_a_namespaced_dify_user(sdk, dify):
    sdk.chat.completions.create(
        model="chatbot", messages=[{"role": "user", "content": "Hi"}], user="alice"
    )
    assert chat_requests(dify)[-1].body["user"] == f"{USER_KEY_NAME}:alice"
