"""Every Dify app type behind the gateway, streamed and not; files both ways; Responses."""

from __future__ import annotations

import base64

import openai
import pytest
import requests

from tests.dify.conftest import KEYS, USER_KEY_NAME, chat_requests, text_of

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
