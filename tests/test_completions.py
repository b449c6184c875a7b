"""Legacy completions on Ollama through the gateway, with the official openai SDK as the client."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import wait_until
from tests.fakes.ollama import FakeOllama


def generate_bodies(ollama: FakeOllama) -> list[dict]:
    return [r.body for r in ollama.requests if r.path == "/api/generate"]


def sse_events(raw: bytes) -> list[str]:
    assert raw.endswith(b"\n\n")
    events = raw.decode().split("\n\n")[:-1]
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    return [e[len("data: ") :] for e in events]


def test_string_prompt_is_continued_verbatim_with_usage(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=["Hel", "lo!"], prompt_eval_count=7, eval_count=2)
    reply = client.completions.create(model="llama3.2", prompt="Say")

    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.model == "llama3.2"
    assert len(reply.choices) == 1
    choice = reply.choices[0]
    assert (choice.text, choice.index, choice.finish_reason) == ("Hello!", 0, "stop")
    assert choice.logprobs is None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 2)
    assert reply.usage.total_tokens == 9
    # No max_tokens given: no num_predict, so the model's own limit applies (not OpenAI's 16).
    assert generate_bodies(ollama) == [
        {"model": "llama3.2", "prompt": "Say", "raw": True, "stream": False}
    ]


def test_list_prompt_gives_one_choice_per_prompt_and_summed_usage(client, ollama):
    ollama.script("llama3.2", content=["x"], prompt_eval_count=3, eval_count=1)
    reply = client.completions.create(model="llama3.2", prompt=["a", "b", "c"])
    assert [(c.index, c.text) for c in reply.choices] == [(0, "x"), (1, "x"), (2, "x")]
    assert [b["prompt"] for b in generate_bodies(ollama)] == ["a", "b", "c"]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (9, 3)


def test_fields_reach_ollama_and_suffix_uses_the_template(client, ollama):
    reply = client.completions.create(
        model="llama3.2",
        prompt="def add(a, b):",
        suffix="\n    return c",
        max_tokens=32,
        stop=["\n\n", "END"],
        temperature=0.2,
        top_p=0.5,
        seed=7,
        echo=True,
        user="someone",
        extra_body={"options": {"num_ctx": 4096}, "keep_alive": "5m"},
    )
    assert reply.choices[0].text == "def add(a, b):Hello from fake Ollama."
    assert generate_bodies(ollama)[-1] == {
        "model": "llama3.2",
        "prompt": "def add(a, b):",
        "raw": False,  # Ollama fills in the middle through the template; raw ignores suffix
        "suffix": "\n    return c",
        "options": {
            "temperature": 0.2,
            "top_p": 0.5,
            "num_predict": 32,
            "seed": 7,
            "stop": ["\n\n", "END"],
            "num_ctx": 4096,
        },
        "keep_alive": "5m",
        "stream": False,
    }


def test_raw_can_be_turned_off_per_request(client, ollama):
    client.completions.create(model="llama3.2", prompt="Hi", extra_body={"raw": False})
    assert generate_bodies(ollama)[-1]["raw"] is False


def test_length_finish_streamed_and_not(client, ollama):
    ollama.script("llama3.2", content=["cut", " off"], done_reason="length")
    whole = client.completions.create(model="llama3.2", prompt="Go", max_tokens=2)
    assert whole.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(model="llama3.2", prompt="Go", stream=True))
    assert chunks[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].text for c in chunks) == "cut off"


def test_thinking_is_not_part_of_the_text(client, ollama):
    ollama.script("qwen3:8b", thinking=["hmm"], content=["42"])
    assert client.completions.create(model="qwen3:8b", prompt="Q").choices[0].text == "42"
    streamed = client.completions.create(model="qwen3:8b", prompt="Q", stream=True)
    assert "".join(c.choices[0].text for c in streamed) == "42"


def test_stream_frames_one_id_finish_on_last_text_chunk_usage_and_done(gateway, http, ollama):
    ollama.script("llama3.2", content=["Hel", "lo", "!"], prompt_eval_count=4, eval_count=3)
    resp = http.post(
        gateway.url + "/v1/completions",
        json={
            "model": "llama3.2",
            "prompt": "Say",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        stream=True,
    )
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(resp.content)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["id"].startswith("cmpl-")
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert [c["choices"] for c in chunks[:-1]] == [
        [{"text": "Hel", "index": 0, "logprobs": None, "finish_reason": None}],
        [{"text": "lo", "index": 0, "logprobs": None, "finish_reason": None}],
        [{"text": "!", "index": 0, "logprobs": None, "finish_reason": "stop"}],
    ]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert generate_bodies(ollama)[-1]["stream"] is True


def test_sdk_stream_with_list_prompt_echo_and_usage(client, ollama):
    ollama.script("llama3.2", content=["A", "B"], prompt_eval_count=2, eval_count=2)
    stream = client.completions.create(
        model="llama3.2",
        prompt=["one ", "two "],
        echo=True,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts: dict[int, str] = {0: "", 1: ""}
    finishes = {}
    usage = None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: "one AB", 1: "two AB"}
    assert finishes == {0: "stop", 1: "stop"}
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (4, 4, 8)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": [[1, 2], [3]]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"n": 2}, "n"),
        ({"best_of": 3}, "best_of"),
        ({"logprobs": 2}, "logprobs"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": [1]}, "stop"),
        ({"suffix": 5}, "suffix"),
        ({"echo": "yes"}, "echo"),
    ],
)
def test_bad_fields_are_a_400_naming_the_param(gateway, http, ollama, fields, param):
    body = {"model": "llama3.2", "prompt": "Hi", **fields}
    resp = http.post(gateway.url + "/v1/completions", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
    assert not generate_bodies(ollama)


def test_token_prompt_message_says_to_send_text(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="llama3.2", prompt=[1, 2, 3])
    assert "Send 'prompt' as a string" in e.value.message


def test_unknown_model_is_a_404_before_the_stream_starts(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="llama9", prompt="Hi", stream=True)
    assert e.value.code == "model_not_found"


def test_midstream_failure_ends_the_stream_with_an_error_frame(gateway, http, ollama):
    ollama.script("llama3.2", content=["partial"], midstream_error="runner crashed")
    body = {"model": "llama3.2", "prompt": "Hi", "stream": True}
    resp = http.post(gateway.url + "/v1/completions", json=body, stream=True)
    events = sse_events(resp.content)
    error = json.loads(events[-1])["error"]
    assert "runner crashed" in error["message"] and error["code"] == "bad_gateway"
    assert "[DONE]" not in events


def test_abandoned_stream_closes_the_upstream(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=["tok "] * 400, pace=0.05)
    stream = client.completions.create(model="llama3.2", prompt="Go", stream=True)
    for i, _chunk in enumerate(stream):
        if i == 3:
            break
    stream.close()
    wait_until(lambda: ollama.disconnects, timeout=5)
    assert ollama.disconnects[0][0] == "llama3.2"
    assert "llama3.2" not in ollama.completed
