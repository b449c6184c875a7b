"""Legacy completions and embeddings on Dify: text-generator apps answer, others say why not."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import API_KEY, wait_until
from tests.fakes.dify import FakeDify

WRITER_KEY = "app-writer-key-1"
CHAT_KEY = "app-chat-key-1"


@pytest.fixture
def dify(fake_dify: FakeDify) -> FakeDify:
    fake_dify.reset()
    fake_dify.add_app(WRITER_KEY, "completion", name="writer")
    fake_dify.add_app(CHAT_KEY, "chat", name="chatbot")
    return fake_dify


@pytest.fixture(scope="module")
def sdk(start_module_gateway, fake_dify, tmp_path_factory):
    config = tmp_path_factory.mktemp("dify") / "relay.toml"
    config.write_text(
        "[backends.dify]\n"
        'type = "dify"\n'
        f'url = "{fake_dify.url}/v1"\n'
        '[backends.dify.apps.writer]\nkey_env = "WRITER_KEY"\n'
        '[backends.dify.apps.chatbot]\nkey_env = "CHAT_KEY"\n'
    )
    gw = start_module_gateway(
        {
            "RELAY_CONFIG": str(config),
            "RELAY_API_KEYS": API_KEY,
            "WRITER_KEY": WRITER_KEY,
            "CHAT_KEY": CHAT_KEY,
        }
    )
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=API_KEY, max_retries=0) as client:
        yield client


def test_text_generator_app_completes_a_prompt(sdk, dify):
    reply = sdk.completions.create(
        model="writer", prompt="a haiku", echo=True, extra_body={"inputs": {"tone": "calm"}}
    )
    assert reply.choices[0].text == "a haikuAnswer 1 to: a haiku"
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (11, 7)
    run = dify.runs[-1]
    assert run.mode == "completion" and run.query == "a haiku"
    assert run.inputs == {"tone": "calm", "query": "a haiku"}
    assert run.response_mode == "streaming"


def test_text_generator_app_streams_list_prompts_with_usage(sdk, dify):
    stream = sdk.completions.create(
        model="writer",
        prompt=["one", "two"],
        stream=True,
        stream_options={"include_usage": True},
    )
    texts = {0: "", 1: ""}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == {0: "Answer 1 to: one", 1: "Answer 1 to: two"}
    assert (usage.prompt_tokens, usage.completion_tokens) == (22, 14)


def test_chat_apps_refuse_completions_and_point_to_chat(sdk, dify):
    with pytest.raises(openai.BadRequestError) as e:
        sdk.completions.create(model="chatbot", prompt="Hi")
    assert e.value.param == "model" and e.value.code == "unsupported_by_backend"
    assert "/v1/chat/completions" in e.value.message
    assert not dify.runs


def test_dify_has_no_embeddings(sdk, dify):
    with pytest.raises(openai.BadRequestError) as e:
        sdk.embeddings.create(model="writer", input="x")
    assert e.value.code == "unsupported_by_backend" and e.value.param == "model"


def test_abandoned_stream_stops_the_dify_task(sdk, dify):
    app = dify.apps[WRITER_KEY]
    app.answer, app.pace = ["tok "] * 300, 0.05
    stream = sdk.completions.create(model="writer", prompt="Long", stream=True)
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    stream.close()
    wait_until(lambda: dify.stops, timeout=5)
    assert dify.stops[0][0] == "completion"
