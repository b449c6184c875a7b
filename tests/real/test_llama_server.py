"""Relay in front of a real upstream: llama.cpp's OpenAI-compatible server (llama-cpp-python)
running the tiny model of tiny_model.py. At temperature 0 chat answers the alphabet and stops
by itself; a prompt ending in a digit counts on until a limit stops it."""

from __future__ import annotations

import base64
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from tests.conftest import API_KEY, wait_until
from tests.real.conftest import CHAT, EMBED, relay_config

pytestmark = pytest.mark.real_upstream

ALPHABET = "abcdefghijklmnopqrstuvwxyz"
USER = [{"role": "user", "content": "Hi"}]


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def stream_text(chunks) -> tuple[str, list[str | None], object]:
    text, finishes, usage = "", [], None
    for c in chunks:
        if c.choices:
            text += c.choices[0].delta.content or ""
            finishes.append(c.choices[0].finish_reason)
        if c.usage is not None:
            usage = c.usage
    return text, [f for f in finishes if f], usage


# --- chat ------------------------------------------------------------------------------------


def test_chat_answers_as_the_server_does_with_its_usage(relay, direct):
    via = relay.chat.completions.create(model=CHAT, messages=USER, temperature=0)
    own = direct.chat.completions.create(model=CHAT, messages=USER, temperature=0)
    assert via.choices[0].message.content == own.choices[0].message.content == ALPHABET
    assert via.choices[0].finish_reason == own.choices[0].finish_reason == "stop"
    assert via.usage.prompt_tokens == own.usage.prompt_tokens > 0
    assert via.usage.completion_tokens == own.usage.completion_tokens > 0


def test_stop_sequence_ends_the_reply(relay):
    reply = relay.chat.completions.create(model=CHAT, messages=USER, temperature=0, stop=["g"])
    assert reply.choices[0].message.content == "abcdef"
    assert reply.choices[0].finish_reason == "stop"


def test_a_seed_repeats_its_reply_and_other_seeds_differ(relay):
    def ask(seed: int) -> str:
        reply = relay.chat.completions.create(model=CHAT, messages=USER, temperature=1.0, seed=seed)
        return reply.choices[0].message.content

    first = ask(11)
    assert ask(11) == first
    assert ALPHABET.endswith(first)
    assert len({ask(s) for s in range(12)}) > 1


def test_extra_fields_reach_the_server(relay):
    # logit_bias (by token id: 98 is the byte `b`) makes `b` impossible after `a`.
    reply = relay.chat.completions.create(
        model=CHAT, messages=USER, temperature=0, extra_body={"logit_bias": {"98": -100}}
    )
    assert reply.choices[0].message.content.startswith("a")
    assert not reply.choices[0].message.content.startswith("ab")


# --- finding 1: the token limit -------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("stream", [False, True])
def test_the_token_limit_holds(relay, stream, field):
    limit = {field: 5}
    if stream:
        text, finishes, usage = stream_text(
            relay.chat.completions.create(
                model=CHAT,
                messages=USER,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
                **limit,
            )
        )
        assert (text, finishes) == ("abcde", ["length"])
        assert usage.completion_tokens == 5
    else:
        reply = relay.chat.completions.create(model=CHAT, messages=USER, temperature=0, **limit)
        assert reply.choices[0].message.content == "abcde"
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage.completion_tokens == 5


def test_max_tokens_holds_with_the_name_as_sent(cached_gateway):
    # The default (max_tokens_field = "as_sent"): the caller's max_tokens goes on as max_tokens.
    sdk = openai.OpenAI(base_url=cached_gateway.url + "/v1", api_key=API_KEY, max_retries=0)
    prompt = [{"role": "user", "content": "limit"}]
    reply = sdk.chat.completions.create(model=CHAT, messages=prompt, temperature=0, max_tokens=3)
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == ("abc", "length")


def test_responses_max_output_tokens_holds(relay):
    response = relay.responses.create(model=CHAT, input="Hi", max_output_tokens=4, temperature=0)
    assert response.output_text == "abcd"
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"


# --- finding 2: usage of streams the server gives none for -----------------------------------


def test_streams_report_counted_usage_not_zero(relay, real_gateway):
    whole = relay.chat.completions.create(model=CHAT, messages=USER, temperature=0)
    text, finishes, usage = stream_text(
        relay.chat.completions.create(
            model=CHAT,
            messages=USER,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert (text, finishes) == (ALPHABET, ["stop"])
    # The server ignores stream_options: Relay counts the pieces it streamed (one token each)
    # and estimates the prompt.
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens > 0
    wait_until(
        lambda: f"tokens=~{usage.prompt_tokens}+{usage.completion_tokens}" in real_gateway.logs()
    )
    metrics = requests.get(real_gateway.url + "/metrics", timeout=5).text
    assert 'relay_tokens_estimated_total{backend="llama",direction="out"}' in metrics


def gateway_with(start_gateway, llama, tmp_path_factory, **env: str):
    config = tmp_path_factory.mktemp("relay") / "relay.toml"
    config.write_text(relay_config(llama))
    return start_gateway({"RELAY_CONFIG": str(config), "RELAY_API_KEYS": API_KEY, **env})


@pytest.fixture(scope="module")
def limited_gateway(start_module_gateway, llama, tmp_path_factory):
    """A tokens-per-minute limit of 100; the default max_tokens_field."""
    return gateway_with(
        start_module_gateway,
        llama,
        tmp_path_factory,
        RELAY_TOKENS_PER_MINUTE="100",
        RELAY_CACHE_TTL="0",
    )


@pytest.fixture(scope="module")
def cached_gateway(start_module_gateway, llama, tmp_path_factory):
    """The reply cache on."""
    return gateway_with(start_module_gateway, llama, tmp_path_factory, RELAY_CACHE_TTL="300")


def test_streams_are_charged_to_the_token_limit(limited_gateway):
    sdk = openai.OpenAI(base_url=limited_gateway.url + "/v1", api_key=API_KEY, max_retries=0)
    accepted = 0
    with pytest.raises(openai.RateLimitError):
        for i in range(10):  # a different prompt each time: no cached answer, no free ride
            prompt = [{"role": "user", "content": f"Hi {i}"}]
            list(sdk.chat.completions.create(model=CHAT, messages=prompt, stream=True))
            accepted += 1
    # Each stream is ~30 tokens: the budget of 100 is spent after a few, not after ten.
    assert 1 <= accepted <= 4


def test_the_cache_keeps_the_counted_usage_of_a_stream(cached_gateway):
    sdk = openai.OpenAI(base_url=cached_gateway.url + "/v1", api_key=API_KEY, max_retries=0)
    list(sdk.chat.completions.create(model=CHAT, messages=USER, temperature=0, stream=True))
    raw = sdk.chat.completions.with_raw_response.create(model=CHAT, messages=USER, temperature=0)
    assert raw.headers["x-cache"] == "HIT"
    reply = raw.parse()
    assert reply.choices[0].message.content == ALPHABET
    assert reply.usage.completion_tokens == 26 and reply.usage.prompt_tokens > 0


# --- finding 3: log probabilities ------------------------------------------------------------


def test_logprobs_come_through(relay, direct):
    kwargs = {"model": CHAT, "messages": USER, "temperature": 0, "max_tokens": 3}
    via = relay.chat.completions.create(**kwargs, logprobs=True, top_logprobs=2)
    own = direct.chat.completions.create(**kwargs, logprobs=True, top_logprobs=2)
    assert via.choices[0].logprobs is not None
    assert [t.token for t in via.choices[0].logprobs.content] == ["a", "b", "c"]
    assert via.choices[0].logprobs.model_dump() == own.choices[0].logprobs.model_dump()
    assert len(via.choices[0].logprobs.content[0].top_logprobs) == 2
    chunks = list(
        relay.chat.completions.create(**kwargs, logprobs=True, top_logprobs=1, stream=True)
    )
    tokens = [
        t.token
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content
    ]
    assert tokens == ["a", "b", "c"]


# --- finding 4: legacy completions -----------------------------------------------------------


def test_completions_reach_the_server(relay, direct):
    via = relay.completions.create(model=CHAT, prompt="w", temperature=0, max_tokens=10)
    own = direct.completions.create(model=CHAT, prompt="w", temperature=0, max_tokens=10)
    assert via.choices[0].text == own.choices[0].text == "xyz"
    assert via.choices[0].finish_reason == "stop"
    assert via.usage.completion_tokens == own.usage.completion_tokens
    limited = relay.completions.create(model=CHAT, prompt="0", temperature=0, max_tokens=5)
    assert (limited.choices[0].text, limited.choices[0].finish_reason) == ("12345", "length")
    chunks = list(
        relay.completions.create(
            model=CHAT,
            prompt="0",
            temperature=0,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "12345"
    assert chunks[-1].usage.completion_tokens == 5


# --- embeddings ------------------------------------------------------------------------------


def test_embeddings_are_the_servers_own(relay, direct):
    via = relay.embeddings.create(model=EMBED, input=["abc", "xyz"])
    own = direct.embeddings.create(model=EMBED, input=["abc", "xyz"])
    assert [d.embedding for d in via.data] == [d.embedding for d in own.data]
    assert len(via.data[0].embedding) == 64
    # Base64, which the server lacks, encodes the same little-endian float32 values.
    encoded = relay.embeddings.create(model=EMBED, input="abc", encoding_format="base64")
    raw = base64.b64decode(encoded.data[0].embedding)
    floats = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert floats == pytest.approx(own.data[0].embedding, rel=1e-6, abs=1e-7)  # float32


# --- finding 5: a prompt longer than the context ---------------------------------------------

LONG = [{"role": "user", "content": "q" * 2500}]  # 2500 tokens: the context holds 2048


def test_an_over_long_prompt_is_the_same_400_streamed_or_not(relay):
    with pytest.raises(openai.BadRequestError) as whole:
        relay.chat.completions.create(model=CHAT, messages=LONG)
    with pytest.raises(openai.BadRequestError) as streamed:
        list(relay.chat.completions.create(model=CHAT, messages=LONG, stream=True))
    for e in (whole, streamed):
        assert e.value.code == "context_length_exceeded"
        assert e.value.param == "messages"


def test_an_over_long_responses_input_names_input(relay):
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as e:
            reply = relay.responses.create(model=CHAT, input="q" * 2500, stream=stream)
            if stream:
                list(reply)
        assert e.value.code == "context_length_exceeded"
        assert e.value.param == "input"


# --- finding 6: model ids with slashes -------------------------------------------------------


def test_every_listed_model_can_be_retrieved(relay, direct, llama):
    ids = [m.id for m in relay.models.list()]
    assert llama.model_path in ids  # the entry without an alias is named by its file path
    for model_id in ids:
        assert relay.models.retrieve(model_id).id == model_id
    reply = relay.chat.completions.create(model=llama.model_path, messages=USER, temperature=0)
    assert reply.choices[0].message.content == ALPHABET


def test_a_hugging_face_style_id_reaches_the_route(real_gateway):
    # Not served here: a 404 naming it whole (not a redirect to a path without a slash).
    for raw in ("Qwen/Qwen3-8B", "Qwen%2FQwen3-8B", "%2Fmodels%2Fx.gguf"):
        r = requests.get(
            f"{real_gateway.url}/v1/models/{raw}", headers=auth(), allow_redirects=False, timeout=5
        )
        assert r.status_code == 404, (raw, r.status_code)
        assert r.json()["error"]["param"] == "model"


# --- a client that leaves --------------------------------------------------------------------


def test_a_client_that_leaves_stops_the_generation(real_gateway, llama):
    body = {"model": CHAT, "prompt": "0", "temperature": 0, "max_tokens": 2000, "stream": True}
    with requests.post(
        real_gateway.url + "/v1/completions", json=body, headers=auth(), stream=True, timeout=30
    ) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(b"data:" in line for line in got)
    # The server notices at its next token, says so, and is free for the next request at once.
    wait_until(lambda: "Disconnected from client" in llama.logs(), timeout=10)
    started = time.monotonic()
    reply = requests.post(
        llama.url + "/v1/completions",
        json={"model": CHAT, "prompt": "x", "temperature": 0, "max_tokens": 3},
        timeout=30,
    )
    assert reply.json()["choices"][0]["text"] == "yz"
    assert time.monotonic() - started < 2


def test_other_routes_keep_their_shape(real_gateway, relay):
    # The model-id route takes anything after /v1/models/: the /api alias, stored responses
    # and the model list itself still answer as before.
    r = requests.post(
        real_gateway.url + "/api/chat/completions",
        json={"model": CHAT, "messages": USER, "temperature": 0},
        headers=auth(),
        timeout=10,
    )
    assert r.json()["choices"][0]["message"]["content"] == ALPHABET
    stored = relay.responses.create(model=CHAT, input="Hi", temperature=0)
    assert relay.responses.retrieve(stored.id).output_text == ALPHABET
    gone = requests.get(real_gateway.url + "/v1/responses/resp_nope", headers=auth(), timeout=5)
    assert gone.status_code == 404 and gone.json()["error"]["param"] == "response_id"
    listed = requests.get(real_gateway.url + "/v1/models", headers=auth(), timeout=5)
    assert {m["id"] for m in listed.json()["data"]} >= {CHAT, EMBED}


def test_an_over_long_completion_prompt_is_a_400_streamed_too(relay):
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as e:
            reply = relay.completions.create(model=CHAT, prompt="q" * 2500, stream=stream)
            if stream:
                list(reply)
        assert e.value.code == "context_length_exceeded"


def test_tool_call_streams_come_through(relay, direct):
    # The tiny model cannot call tools, but the server's tool-call path (a forced function)
    # still runs: the same call streamed through Relay as directly, its id and name once.
    tool = {
        "type": "function",
        "function": {
            "name": "spell",
            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
        },
    }
    kwargs = {
        "model": CHAT,
        "messages": USER,
        "temperature": 0,
        "max_tokens": 8,
        "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "spell"}},
    }
    own = direct.chat.completions.create(**kwargs)
    via = relay.chat.completions.create(**kwargs)
    assert via.choices[0].message.tool_calls[0].function.name == "spell"
    assert (
        via.choices[0].message.tool_calls[0].function.arguments
        == own.choices[0].message.tool_calls[0].function.arguments
    )
    chunks = list(relay.chat.completions.create(**kwargs, stream=True))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert [tc.function.name for tc in calls if tc.function.name] == ["spell"]
    assert "".join(tc.function.arguments or "" for tc in calls) == (
        own.choices[0].message.tool_calls[0].function.arguments
    )


# --- concurrency -----------------------------------------------------------------------------


def _concurrent_streams(base_url: str, count: int) -> list[str]:
    def one(i: int) -> str:
        with openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0) as sdk:
            prompt = [{"role": "user", "content": f"Hi {i}"}]
            chunks = sdk.chat.completions.create(
                model=CHAT, messages=prompt, temperature=0, stream=True
            )
            return stream_text(chunks)[0]

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_concurrent_streams_all_complete(real_gateway):
    # The server runs one request at a time (started with interrupt_requests off, so a new
    # request waits rather than cutting the running stream): every stream still completes.
    assert _concurrent_streams(real_gateway.url + "/v1", 6) == [ALPHABET] * 6


def test_concurrent_streams_with_backpressure(start_gateway, llama, tmp_path_factory):
    gw = gateway_with(
        start_gateway,
        llama,
        tmp_path_factory,
        RELAY_CACHE_TTL="0",
        RELAY_MAX_IN_FLIGHT="1",
        RELAY_MAX_QUEUE="8",
    )
    assert _concurrent_streams(gw.url + "/v1", 6) == [ALPHABET] * 6
