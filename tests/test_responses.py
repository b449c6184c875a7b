"""The Responses API on top of the chat core, with the official SDK as the client."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from tests.fakes.ollama import FakeOllama

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def test_create_maps_fields_and_returns_a_response_object(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=["Hel", "lo"], prompt_eval_count=5, eval_count=2)
    resp = client.responses.create(
        model="llama3.2",
        instructions="Be brief.",
        input="Hi",
        max_output_tokens=50,
        temperature=0.3,
        metadata={"team": "a"},
    )
    assert resp.id.startswith("resp_") and resp.object == "response"
    assert resp.status == "completed" and resp.output_text == "Hello"
    [item] = resp.output
    assert item.type == "message" and item.content[0].text == "Hello"
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (5, 2, 7)
    assert resp.metadata == {"team": "a"} and resp.instructions == "Be brief."
    sent = ollama.last().body
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert sent["options"] == {"temperature": 0.3, "num_predict": 50}


def test_streamed_events_follow_the_documented_sequence(client, ollama: FakeOllama):
    ollama.script("qwen3:8b", thinking=["Hm", "m."], content=["4", "2"])
    events = list(client.responses.create(model="qwen3:8b", input="Q", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds.index("response.reasoning_summary_text.delta") < kinds.index(
        "response.output_text.delta"
    )
    added = [e for e in events if e.type == "response.output_item.added"]
    assert [(e.output_index, e.item.type) for e in added] == [(0, "reasoning"), (1, "message")]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text == "42" and final.output_text == "42"
    assert final.output[0].summary[0].text == "Hmm."


def test_stream_helper_reaches_the_final_response(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=["Stream", "ed"])
    with client.responses.stream(model="llama3.2", input="Hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Streamed" and final.status == "completed"


def test_function_call_round_trip(client, ollama: FakeOllama):
    ollama.script(
        "llama3.2", content=[], tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    )
    first = client.responses.create(model="llama3.2", input="Weather in Oslo?", tools=[WEATHER])
    [call] = [i for i in first.output if i.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"}
    assert ollama.last().body["tools"][0]["function"]["name"] == "get_weather"

    ollama.script("llama3.2", content=["It is 3 degrees."])
    second = client.responses.create(
        model="llama3.2",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "3 degrees"}],
        tools=[WEATHER],
    )
    assert second.output_text == "It is 3 degrees."
    sent = ollama.last().body["messages"]
    assert sent[0] == {"role": "user", "content": "Weather in Oslo?"}
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[2] == {
        "role": "tool",
        "content": "3 degrees",
        "tool_name": "get_weather",
        "tool_call_id": call.call_id,
    }


def test_streamed_function_call(client, ollama: FakeOllama):
    ollama.script(
        "llama3.2", content=[], tool_calls=[{"name": "get_weather", "arguments": {"city": "Rome"}}]
    )
    with client.responses.stream(model="llama3.2", input="Rome?", tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    [call] = final.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Rome"}


def test_previous_response_id_chains_three_turns_and_responses_can_be_retrieved(client, ollama):
    ollama.script("llama3.2", content=["One."])
    first = client.responses.create(model="llama3.2", input="Count", instructions="Only digits")
    ollama.script("llama3.2", content=["Two."])
    second = client.responses.create(model="llama3.2", input="Next", previous_response_id=first.id)
    ollama.script("llama3.2", content=["Three."])
    third = client.responses.create(model="llama3.2", input="Next", previous_response_id=second.id)
    assert third.output_text == "Three." and third.previous_response_id == second.id
    assert [(m["role"], m["content"]) for m in ollama.last().body["messages"]] == [
        ("user", "Count"),
        ("assistant", "One."),
        ("user", "Next"),
        ("assistant", "Two."),
        ("user", "Next"),
    ]
    assert client.responses.retrieve(second.id).output_text == "Two."
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="llama3.2", input="x", previous_response_id="resp_unknown")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_unknown")
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_store_false_keeps_nothing(client, ollama):
    resp = client.responses.create(model="llama3.2", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)


class City(BaseModel):
    name: str
    population: int


def test_structured_output_with_parse(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=['{"name": "Oslo", "population": 700000}'])
    resp = client.responses.parse(model="llama3.2", input="Oslo", text_format=City)
    assert resp.output_parsed == City(name="Oslo", population=700000)
    assert ollama.last().body["format"]["properties"]["population"]["type"] == "integer"


def test_cut_off_reply_is_incomplete(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=["cut"], done_reason="length")
    resp = client.responses.create(model="llama3.2", input="x", max_output_tokens=1)
    assert resp.status == "incomplete" and resp.incomplete_details.reason == "max_output_tokens"
    events = list(client.responses.create(model="llama3.2", input="x", stream=True))
    assert events[-1].type == "response.incomplete"


def test_failure_mid_stream_is_response_failed(client, ollama: FakeOllama):
    ollama.script("llama3.2", content=["part"], midstream_error="model crashed")
    events = list(client.responses.create(model="llama3.2", input="x", stream=True))
    assert events[-1].type == "response.failed"
    assert "model crashed" in events[-1].response.error.message
    kinds = [e.type for e in events]
    assert "response.output_item.done" in kinds  # the open message item was closed first


def test_bad_input_is_a_400_naming_the_param(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="llama3.2", input=[{"type": "input_file", "file_id": "f"}])
    assert e.value.param == "input[0].type"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="llama3.2", input="x", text={"format": {"type": "yaml"}})
    assert e.value.param == "text.format"


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "input_image", "image_url": "ftp://example.com/a.png"}, "image_url"),
        ({"type": "input_image", "image_url": "data:text/plain;base64,aGk="}, "image_url"),
        ({"type": "input_text", "text": 5}, "text"),
    ],
)
def test_a_bad_content_part_is_a_400_naming_the_responses_field(client, part, param):
    message = {"role": "user", "content": [{"type": "input_text", "text": "Look"}, part]}
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="llama3.2", input=[message])
    assert e.value.param == f"input[0].content[1].{param}"  # never messages[...].image_url.url
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="llama3.2", input=[{**message, "content": [part]}])
    assert e.value.param == f"input[0].content[0].{param}"


def test_bad_tool_fields_are_400s_naming_the_responses_fields(client):
    tool = {"type": "function", "name": "f", "parameters": "nope"}
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="llama3.2", input="x", tools=[tool])
    assert e.value.param == "tools[0].parameters"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="llama3.2", input="x", reasoning={"effort": "huge"})
    assert e.value.param == "reasoning.effort"
