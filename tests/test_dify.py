"""Dify apps behind the gateway: app types, conversation memory, files, errors, cancellation."""

from __future__ import annotations

import base64
import hashlib
import time

import openai
import pytest
import requests

from tests.conftest import API_KEY, free_port, wait_until
from tests.fakes.dify import FakeDify

KEYS = {
    "chatbot": ("app-chatbot-key", "chat"),
    "agent-classic": ("app-agent-chat-key", "agent-chat"),
    "agent-new": ("app-agent-key", "agent"),
    "chatflow": ("app-chatflow-key", "advanced-chat"),
    "writer": ("app-completion-key", "completion"),
    "flow": ("app-workflow-key", "workflow"),
    "historian": ("app-history-key", "chat"),
}
ENV_NAMES = {app: "DIFY_KEY_" + app.upper().replace("-", "_") for app in KEYS}
USER_KEY_NAME = "env-" + hashlib.sha256(API_KEY.encode()).hexdigest()[:8]


@pytest.fixture
def dify(fake_dify: FakeDify) -> FakeDify:
    """The fake Dify with a fresh app of every type for each test."""
    fake_dify.reset()
    fake_dify.serve_files = True
    for name, (key, mode) in KEYS.items():
        fake_dify.add_app(key, mode, name=name)
    return fake_dify


def dify_config(tmp_path, url: str, **backend: str) -> str:
    lines = ["[backends.dify]", 'type = "dify"', f'url = "{url}/v1"']
    lines += [f"{k} = {v}" for k, v in backend.items()]
    for app in KEYS:
        lines += [f'[backends.dify.apps."{app}"]', f'key_env = "{ENV_NAMES[app]}"']
        if app == "historian":
            lines.append('memory = "history"')
        if app == "chatbot":
            lines.append('inputs = {tone = "friendly"}')
    path = tmp_path / "dify.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def dify_gateway(start_module_gateway, fake_dify, tmp_path_factory):
    config = dify_config(tmp_path_factory.mktemp("dify"), fake_dify.url, allow_caller_keys="true")
    env = {"RELAY_CONFIG": config, "RELAY_API_KEYS": API_KEY}
    env.update({ENV_NAMES[app]: key for app, (key, _mode) in KEYS.items()})
    return start_module_gateway(env)


@pytest.fixture
def sdk(dify_gateway):
    with openai.OpenAI(base_url=dify_gateway.url + "/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


def text_of(stream) -> str:
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def chat_requests(dify: FakeDify, path: str = "/v1/chat-messages"):
    return [r for r in dify.requests if r.path == path and r.method == "POST"]


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


# --- every app type ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "app", ["chatbot", "agent-classic", "agent-new", "chatflow", "writer", "flow"]
)
def test_every_app_type_streamed_and_not(sdk, dify, app):
    messages = [{"role": "user", "content": "Hi"}]
    whole = sdk.chat.completions.create(model=app, messages=messages)
    assert whole.choices[0].message.content == "Answer 1 to: Hi"
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage.total_tokens > 0
    streamed = text_of(sdk.chat.completions.create(model=app, messages=messages, stream=True))
    assert streamed.endswith("to: Hi")
    path = {"writer": "/v1/completion-messages", "flow": "/v1/workflows/run"}.get(
        app, "/v1/chat-messages"
    )
    bodies = [r.body for r in chat_requests(dify, path)]
    assert len(bodies) == 2 and all(b["response_mode"] == "streaming" for b in bodies)
    if app == "flow":
        assert bodies[0]["inputs"]["query"] == "Hi"


def test_workflow_answer_only_in_outputs(sdk, dify):
    app = dify.add_app(KEYS["flow"][0], "workflow", name="flow")
    app.workflow_text_chunks = False
    app.workflow_outputs = {"answer": "From outputs", "debug": 3}
    reply = sdk.chat.completions.create(model="flow", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "From outputs"


def test_failed_workflow_is_a_502_naming_the_app(sdk, dify):
    dify.add_app(KEYS["flow"][0], "workflow", name="flow").workflow_status = "failed"
    with pytest.raises(openai.InternalServerError) as e:
        sdk.chat.completions.create(model="flow", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.status_code == 502 and "Dify app 'flow'" in e.value.message


def test_message_replace_replaces_the_whole_answer(sdk, dify):
    dify.add_app(
        KEYS["chatbot"][0], "chat", name="chatbot"
    ).replace_with = "[removed by moderation]"
    messages = [{"role": "user", "content": "Hi"}]
    whole = sdk.chat.completions.create(model="chatbot", messages=messages)
    assert whole.choices[0].message.content == "[removed by moderation]"
    streamed = text_of(sdk.chat.completions.create(model="chatbot", messages=messages, stream=True))
    assert streamed.endswith("\n\n[removed by moderation]")


# --- files -------------------------------------------------------------------------------


def test_images_go_to_dify_and_files_come_back_as_absolute_links(sdk, dify):
    png = b"\x89PNG\r\n\x1a\n" + b"x" * 32
    app = dify.add_app(KEYS["chatbot"][0], "chat", name="chatbot")
    app.files = [
        {
            "type": "image",
            "url": "/files/tools/cat.png?timestamp=1&nonce=n&sign=s",
            "filename": "cat.png",
            "mime_type": "image/png",
        }
    ]
    content = [
        {"type": "text", "text": "Look"},
        {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()},
        },
        {"type": "image_url", "image_url": {"url": "https://example.com/dog.jpg"}},
    ]
    reply = sdk.chat.completions.create(
        model="chatbot", messages=[{"role": "user", "content": content}]
    )
    [upload] = dify.uploads.values()
    assert upload.data == png and upload.mime_type == "image/png" and upload.user == USER_KEY_NAME
    files = chat_requests(dify)[-1].body["files"]
    assert (
        files[0]["transfer_method"] == "local_file" and files[0]["upload_file_id"] in dify.uploads
    )
    assert files[1] == {
        "type": "image",
        "transfer_method": "remote_url",
        "url": "https://example.com/dog.jpg",
    }
    link = f"{dify.url}/files/tools/cat.png?timestamp=1&nonce=n&sign=s"
    assert reply.choices[0].message.content == f"Answer 1 to: Look\n\n![cat.png]({link})"
    assert requests.get(link).content.startswith(b"\x89PNG")


def test_non_image_data_is_a_400(sdk, dify):
    bad = "data:image/svg+xml;base64," + base64.b64encode(b"<svg/>").decode()
    with pytest.raises(openai.BadRequestError) as e:
        sdk.chat.completions.create(
            model="chatbot",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": bad}}]}
            ],
        )
    assert "image/png" in e.value.message and not dify.uploads


# --- errors and cancellation -------------------------------------------------------------


def test_midstream_dify_error_is_one_error_frame(dify_gateway, dify):
    app = dify.add_app(KEYS["chatbot"][0], "chat", name="chatbot")
    app.error_midstream = {
        "status": 400,
        "code": "completion_request_error",
        "message": "Rate limit of provider",
    }
    resp = requests.post(
        dify_gateway.url + "/v1/chat/completions",
        json={"model": "chatbot", "messages": [{"role": "user", "content": "Hi"}], "stream": True},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    frames = [f for f in resp.text.split("\n\n") if f]
    assert resp.status_code == 200 and "[DONE]" not in resp.text
    assert frames[-1].startswith('data: {"error":')
    assert "Rate limit of provider" in frames[-1] and "Dify app 'chatbot'" in frames[-1]


@pytest.mark.parametrize(
    ("status", "body", "expected", "sdk_error"),
    [
        (
            400,
            {"code": "invalid_param", "message": "city is required in input form", "status": 400},
            400,
            openai.BadRequestError,
        ),
        (
            429,
            {"code": "too_many_requests", "message": "Too many requests.", "status": 429},
            429,
            openai.RateLimitError,
        ),
        (
            500,
            {"code": "internal_server_error", "message": "Internal Server Error", "status": 500},
            502,
            openai.InternalServerError,
        ),
    ],
)
def test_dify_errors_map_to_openai_statuses(sdk, dify, status, body, expected, sdk_error):
    dify.add_app(KEYS["chatbot"][0], "chat", name="chatbot").error_before = (status, body)
    with pytest.raises(sdk_error) as e:
        sdk.chat.completions.create(model="chatbot", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.status_code == expected and body["message"] in e.value.message
    if expected == 429:
        assert e.value.response.headers["Retry-After"] == "5"


def test_refused_operator_key_is_502_and_refused_caller_key_is_401(sdk, dify, dify_gateway):
    dify.reset()  # the configured keys are now unknown to Dify
    with pytest.raises(openai.InternalServerError) as e:
        sdk.chat.completions.create(model="chatbot", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.status_code == 502 and "refused the gateway's app key" in e.value.message
    assert "app-chatbot-key" not in e.value.message
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(
            model="anything",
            messages=[{"role": "user", "content": "Hi"}],
            extra_headers={"X-Dify-Api-Key": "app-not-registered"},
        )


def test_caller_brings_own_dify_key(sdk, dify, dify_gateway):
    dify.add_app("app-callers-own", "chat", name="own")
    reply = sdk.chat.completions.create(
        model="whatever",
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"X-Dify-Api-Key": "app-callers-own"},
    )
    assert reply.choices[0].message.content == "Answer 1 to: Hi"
    assert chat_requests(dify)[-1].headers["Authorization"] == "Bearer app-callers-own"
    assert "app-callers-own" not in dify_gateway.logs()


def test_abandoned_stream_stops_the_dify_task(sdk, dify):
    app = dify.add_app(KEYS["chatbot"][0], "chat", name="chatbot")
    app.answer, app.pace = ["tok "] * 300, 0.05
    stream = sdk.chat.completions.create(
        model="chatbot", messages=[{"role": "user", "content": "Long"}], stream=True
    )
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    stream.close()
    wait_until(lambda: dify.stops, timeout=3)
    kind, task_id, user = dify.stops[0]
    assert kind == "chat" and task_id and user == USER_KEY_NAME


def test_unreachable_and_slow_dify(start_gateway, fake_dify, dify, tmp_path):
    env = {ENV_NAMES[a]: k for a, (k, _m) in KEYS.items()}
    dead = start_gateway(
        {"RELAY_CONFIG": dify_config(tmp_path, f"http://127.0.0.1:{free_port()}"), **env}
    )
    resp = requests.post(
        dead.url + "/v1/chat/completions",
        json={"model": "chatbot", "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert resp.status_code == 503 and "Dify backend 'dify'" in resp.json()["error"]["message"]

    slow_dir = tmp_path / "slow"
    slow_dir.mkdir()
    slow = start_gateway(
        {"RELAY_CONFIG": dify_config(slow_dir, fake_dify.url), "RELAY_READ_TIMEOUT": "0.5", **env}
    )
    app = dify.add_app(KEYS["chatbot"][0], "chat", name="chatbot")
    app.pace = 2.0
    started = time.monotonic()
    resp = requests.post(
        slow.url + "/v1/chat/completions",
        json={"model": "chatbot", "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert resp.status_code == 504 and time.monotonic() - started < 10


def test_quick_start_with_dify_variables(start_gateway, dify):
    gw = start_gateway({"DIFY_API_URL": dify.url, "DIFY_API_KEY": KEYS["chatbot"][0]})
    models = requests.get(gw.url + "/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["dify"]
    resp = requests.post(
        gw.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert resp.json()["choices"][0]["message"]["content"] == "Answer 1 to: Hi"
    assert resp.json()["model"] == "gpt-4o"
    assert requests.get(gw.url + "/ready").json()["backends"]["dify"]["status"] == "ok"


def test_workflow_file_outputs_and_chatflow_reasoning(sdk, dify):
    flow = dify.add_app(KEYS["flow"][0], "workflow", name="flow")
    flow.files = [
        {
            "type": "image",
            "url": "/files/tools/chart.png?sign=s",
            "filename": "chart.png",
            "mime_type": "image/png",
        }
    ]
    reply = sdk.chat.completions.create(
        model="flow", messages=[{"role": "user", "content": "Plot"}]
    )
    content = reply.choices[0].message.content
    assert content.startswith("Answer 1 to: Plot")
    assert content.count(f"![chart.png]({dify.url}/files/tools/chart.png?sign=s)") == 1

    chatflow = dify.add_app(KEYS["chatflow"][0], "advanced-chat", name="chatflow")
    chatflow.reasoning = ["Think", "ing..."]
    reply = sdk.chat.completions.create(
        model="chatflow", messages=[{"role": "user", "content": "Q"}]
    )
    assert reply.choices[0].message.model_extra["reasoning_content"] == "Thinking..."
    assert reply.choices[0].message.content == "Answer 1 to: Q"


def test_responses_api_reaches_dify_apps(sdk, dify):
    first = sdk.responses.create(model="chatbot", input="Hi")
    assert first.output_text == "Answer 1 to: Hi"
    second = sdk.responses.create(model="chatbot", input="More", previous_response_id=first.id)
    assert second.output_text == "Answer 2 to: More"
    assert chat_requests(dify)[-1].body["query"] == "More"
