"""What only Relay adds in front of Ollama's native API: keys, per-key models, model management
for admin keys, limits, the access log, cancellation, the raw NDJSON wire, errors in Ollama's
envelope, and Dify apps and OpenAI-compatible upstreams reached through /api/chat."""

from __future__ import annotations

import json
import re
import time

import ollama as ollama_sdk
import pytest
import requests

from tests.conftest import ROOT, wait_until
from tests.dify.conftest import KEYS
from tests.fakes.ollama import EMBED_DIMENSIONS, FakeOllama
from tests.fakes.openai_upstream import Reply
from tests.ollama_native.conftest import SECRETS, bearer

HI = [{"role": "user", "content": "Hi"}]
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def relay(native_gateway, ollama):
    return native_gateway


def post(relay, path: str, body, key: str | None = "main", **kw) -> requests.Response:
    headers = ({"Authorization": f"Bearer {SECRETS.get(key, key)}"}) if key else {}
    return requests.post(relay.url + path, json=body, headers=headers, timeout=10, **kw)


def lines(resp: requests.Response) -> list[dict]:
    raw = resp.content
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.split(b"\n")[:-1]]


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "wrong-key-12345"])
def test_a_missing_or_wrong_key_is_401_in_ollamas_envelope(relay, ollama: FakeOllama, key):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for method, path in (("POST", "/api/chat"), ("GET", "/api/tags"), ("POST", "/api/pull")):
        resp = requests.request(
            method, relay.url + path, json={"model": "llama3.2", "messages": HI}, headers=headers
        )
        assert resp.status_code == 401, path
        assert resp.headers["Content-Type"].startswith("application/json")
        body = resp.json()
        assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    assert ollama.requests == []
    with (
        ollama_sdk.Client(host=relay.url, headers=headers) as c,
        pytest.raises(ollama_sdk.ResponseError) as caught,
    ):
        c.chat(model="llama3.2", messages=HI)
    assert caught.value.status_code == 401


def test_tags_ps_and_show_only_show_the_keys_models(relay, ollama: FakeOllama):
    def names(path: str, key: str) -> set[str]:
        resp = requests.get(relay.url + path, headers=bearer(key))
        assert resp.status_code == 200
        return {m["name"] for m in resp.json()["models"]}

    everything = names("/api/tags", "main")
    assert {"llama3.2:latest", "qwen3:8b", "chatbot", "gpt-test"} <= everything
    assert names("/api/tags", "limited") == {"llama3.2:latest"}
    assert names("/api/ps", "limited") == {"llama3.2:latest"}
    assert names("/api/ps", "main") == {"llama3.2:latest", "qwen3:8b"}
    # Other backends' models are listed in Ollama's shape too.
    tags = requests.get(relay.url + "/api/tags", headers=bearer("main")).json()["models"]
    chatbot = next(m for m in tags if m["name"] == "chatbot")
    assert set(chatbot) >= {"name", "model", "modified_at", "size", "digest", "details"}

    refused = post(relay, "/api/show", {"model": "qwen3:8b"}, key="limited")
    assert refused.status_code == 403 and "qwen3:8b" in refused.json()["error"]
    shown = post(relay, "/api/show", {"model": "gpt-test"})
    assert shown.status_code == 200 and "completion" in shown.json()["capabilities"]
    missing = post(relay, "/api/show", {"model": "nope:1b"})
    assert missing.status_code == 404 and list(missing.json()) == ["error"]


def test_a_key_may_not_chat_with_a_model_outside_its_list(relay, ollama: FakeOllama):
    resp = post(relay, "/api/chat", {"model": "qwen3:8b", "messages": HI}, key="limited")
    assert resp.status_code == 403 and list(resp.json()) == ["error"]
    assert not [r for r in ollama.requests if r.path == "/api/chat"]


# --- model management ---------------------------------------------------------------------


MANAGEMENT = [
    ("POST", "/api/pull", {"model": "mistral"}),
    ("POST", "/api/push", {"model": "llama3.2"}),
    ("POST", "/api/create", {"model": "mine", "from": "llama3.2"}),
    ("POST", "/api/copy", {"source": "llama3.2", "destination": "llama-copy"}),
    ("DELETE", "/api/delete", {"model": "llama3.2"}),
    ("POST", f"/api/blobs/{DIGEST}", None),
    ("HEAD", f"/api/blobs/{DIGEST}", None),
]


def test_model_management_is_403_for_a_normal_key(relay, ollama: FakeOllama):
    for method, path, body in MANAGEMENT:
        resp = requests.request(method, relay.url + path, json=body, headers=bearer("main"))
        assert resp.status_code == 403, path
        if method != "HEAD":
            assert "ollama_admin" in resp.json()["error"]
    assert ollama.requests == []  # nothing reached the backend


def test_an_admin_key_manages_models_on_the_ollama_backend(relay, ollama: FakeOllama):
    ollama.pull_pace = 0.2
    began = time.monotonic()
    pulled = post(relay, "/api/pull", {"model": "mistral"}, key="admin", stream=True)
    assert pulled.status_code == 200
    assert pulled.headers["Content-Type"] == "application/x-ndjson"
    received = pulled.iter_lines()
    first = next(received)
    assert json.loads(first) == {"status": "pulling manifest"}
    assert time.monotonic() - began < 0.8  # progress streams as it comes, not at the end
    progress = [json.loads(first), *(json.loads(line) for line in received if line)]
    assert progress[0] == {"status": "pulling manifest"}
    assert progress[-1] == {"status": "success"} and len(progress) == 6
    assert "mistral:latest" in ollama.models

    copied = post(relay, "/api/copy", {"source": "mistral", "destination": "m2"}, key="admin")
    assert copied.status_code == 200 and "m2:latest" in ollama.models
    deleted = requests.delete(
        relay.url + "/api/delete", json={"model": "m2"}, headers=bearer("admin")
    )
    assert deleted.status_code == 200 and "m2:latest" not in ollama.models
    gone = requests.delete(relay.url + "/api/delete", json={"model": "m2"}, headers=bearer("admin"))
    assert gone.status_code == 404 and "not found" in gone.json()["error"]

    url = relay.url + f"/api/blobs/{DIGEST}"
    assert requests.head(url, headers=bearer("admin")).status_code == 404
    assert requests.post(url, data=b"weights", headers=bearer("admin")).status_code == 201
    assert ollama.blobs[DIGEST] == b"weights"
    assert requests.head(url, headers=bearer("admin")).status_code == 200
    bad = requests.post(relay.url + "/api/blobs/sha256:zz", data=b"x", headers=bearer("admin"))
    assert bad.status_code == 400
    # An admin key still manages only Ollama's models, and only the ones it may use.
    other = post(relay, "/api/pull", {"model": "gpt-test"}, key="admin")
    assert other.status_code == 400 and "not Ollama" in other.json()["error"]


# --- limits, the access log, cancellation -------------------------------------------------


def test_a_limit_hit_is_429_in_ollamas_envelope(relay, ollama: FakeOllama):
    statuses = [
        post(relay, "/api/chat", {"model": "llama3.2", "messages": HI, "stream": False}, "tight")
        for _ in range(3)
    ]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert list(statuses[2].json()) == ["error"]
    assert int(statuses[2].headers["Retry-After"]) > 0


def test_the_access_log_names_the_key_model_and_backend(relay, ollama: FakeOllama):
    ollama.script("llama3.2", prompt_eval_count=7, eval_count=3)
    assert post(relay, "/api/chat", {"model": "llama3.2", "messages": HI}).status_code == 200
    line = r"key=main POST /api/chat model=llama3\.2 backend=local status=200 ms=[\d.]+ "
    line += r"tokens=7\+3 stream=yes"
    wait_until(lambda: re.search(line, relay.logs()))
    assert SECRETS["main"] not in relay.logs()


def test_a_client_that_leaves_stops_the_upstream(relay, ollama: FakeOllama):
    ollama.script("llama3.2", content=["tok"] * 200, pace=0.05)
    resp = post(relay, "/api/chat", {"model": "llama3.2", "messages": HI}, stream=True)
    first = next(resp.iter_lines())
    assert json.loads(first)["message"]["content"] == "tok"
    resp.close()
    wait_until(lambda: ollama.disconnects, timeout=10)
    assert ollama.disconnects[0][0] == "llama3.2"
    assert "llama3.2" not in ollama.completed


# --- the raw wire -------------------------------------------------------------------------


def test_ndjson_framing_and_stream_by_default(relay, ollama: FakeOllama):
    resp = post(relay, "/api/chat", {"model": "llama3.2", "messages": HI}, stream=True)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    assert "Content-Length" not in resp.headers
    objects = lines(resp)
    assert all(set(o) >= {"model", "created_at", "done"} for o in objects)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", objects[0]["created_at"])
    assert [o["done"] for o in objects] == [False] * 5 + [True]
    final = objects[-1]
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["done_reason"] == "stop"
    assert final["prompt_eval_count"] == 12 and final["eval_count"] == 5
    assert final["total_duration"] >= final["eval_duration"] > 0

    whole = post(relay, "/api/generate", {"model": "llama3.2", "prompt": "Hi", "stream": False})
    assert whole.headers["Content-Type"].startswith("application/json")
    assert whole.json()["response"] == "Hello from fake Ollama."
    streamed = post(relay, "/api/generate", {"model": "llama3.2", "prompt": "Hi"})
    assert [o["done"] for o in lines(streamed)][-1] is True
    assert "".join(o["response"] for o in lines(streamed)) == "Hello from fake Ollama."


def test_tool_call_ids_pass_both_ways(relay, ollama: FakeOllama):
    ollama.script("llama3.2", content=[], tool_calls=[{"name": "f", "arguments": {"a": 1}}])
    reply = post(relay, "/api/chat", {"model": "llama3.2", "messages": HI, "stream": False}).json()
    call = reply["message"]["tool_calls"][0]
    assert re.fullmatch(r"call_[a-z0-9]{8}", call["id"])
    assert call["function"] == {"index": 0, "name": "f", "arguments": {"a": 1}}
    messages = [
        *HI,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_name": "f", "tool_call_id": call["id"], "content": "2"},
    ]
    post(relay, "/api/chat", {"model": "llama3.2", "messages": messages, "stream": False})
    sent = ollama.last().body["messages"]
    assert sent[1]["tool_calls"] == [call]
    assert sent[2] == {"role": "tool", "content": "2", "tool_name": "f", "tool_call_id": call["id"]}


def test_a_failure_mid_stream_is_one_error_line(relay, ollama: FakeOllama):
    ollama.script("llama3.2", midstream_error="CUDA error: out of memory")
    objects = lines(post(relay, "/api/chat", {"model": "llama3.2", "messages": HI}))
    assert objects[-1] == {"error": objects[-1]["error"]}
    assert "out of memory" in objects[-1]["error"] and "local" in objects[-1]["error"]
    assert not any(o.get("done") for o in objects)


def test_errors_use_ollamas_envelope_and_statuses(relay, ollama: FakeOllama):
    cases = [
        (
            {"model": "llama3.2", "messages": [{"role": "user", "content": ["x"]}]},
            400,
            "messages[0].content",
        ),
        (
            {"model": "llama3.2", "messages": HI, "options": {"temperature": "hot"}},
            400,
            "options.temperature",
        ),
        ({"model": "llama3.2", "messages": HI, "think": "very"}, 400, "think"),
        (
            {"model": "llama3.2", "messages": [{"role": "user", "content": "x", "images": ["%%"]}]},
            400,
            "messages[0].images[0]",
        ),
        ({"messages": HI}, 400, "model"),
        ({"model": "nope:1b", "messages": HI}, 404, "nope:1b"),
    ]
    for body, status, named in cases:
        resp = post(relay, "/api/chat", body)
        assert resp.status_code == status, body
        assert list(resp.json()) == ["error"] and named in resp.json()["error"], resp.json()
    not_json = requests.post(relay.url + "/api/chat", data=b"{", headers=bearer("main"))
    assert not_json.status_code == 400 and list(not_json.json()) == ["error"]
    unknown = requests.get(relay.url + "/api/nothing", headers=bearer("main"))
    assert unknown.status_code == 404 and list(unknown.json()) == ["error"]
    ollama.script("llama3.2", status=500, error="runner crashed")
    failed = post(relay, "/api/chat", {"model": "llama3.2", "messages": HI, "stream": False})
    assert failed.status_code == 502
    assert "Ollama backend 'local'" in failed.json()["error"]


def test_the_openai_alias_keeps_working_beside_the_native_chat(relay, ollama: FakeOllama):
    body = {"model": "llama3.2", "messages": HI}
    reply = post(relay, "/api/chat/completions", body)
    assert reply.status_code == 200 and reply.json()["object"] == "chat.completion"
    refused = post(relay, "/api/chat/completions", {"model": "llama3.2"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "messages"


# --- other backends through the native face -----------------------------------------------


def test_a_dify_app_through_api_chat(relay, fake_dify):
    fake_dify.reset()
    fake_dify.add_app(KEYS["chatbot"][0], "chat", name="chatbot")
    with ollama_sdk.Client(host=relay.url, headers=bearer("main")) as c:
        whole = c.chat(model="chatbot", messages=HI)
        streamed = list(c.chat(model="chatbot", messages=HI, stream=True))
        generated = c.generate(model="chatbot", prompt="Hi")
    assert whole.message.content.endswith("to: Hi") and whole.done_reason == "stop"
    assert "".join(p.message.content or "" for p in streamed).endswith("to: Hi")
    assert streamed[-1].done and streamed[-1].eval_count
    assert generated.response.endswith("to: Hi")


def test_an_openai_upstream_through_api_chat(relay, fake_openai_chat):
    fake_openai_chat.reset()
    with ollama_sdk.Client(host=relay.url, headers=bearer("main")) as c:
        whole = c.chat(
            model="gpt-test",
            messages=HI,
            options={"temperature": 0.2, "num_predict": 50, "stop": ["END"], "num_ctx": 4096},
            think="high",
            format="json",
        )
        sent = fake_openai_chat.last("/v1/chat/completions").body
        streamed = list(c.chat(model="gpt-test", messages=HI, stream=True))
        fake_openai_chat.reply = Reply(
            content=[], tool_calls=[{"name": "get_weather", "arguments": ['{"city":', ' "Oslo"}']}]
        )
        tools = c.chat(
            model="gpt-test",
            messages=HI,
            tools=[{"type": "function", "function": {"name": "get_weather"}}],
        )
        fake_openai_chat.reply = Reply()
        generated = c.generate(model="gpt-test", prompt="Hi", system="Be brief.")
        prompt_sent = fake_openai_chat.last("/v1/chat/completions").body
    assert whole.message.content == "Hello from upstream." and whole.eval_count == 4
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50 and sent["stop"] == ["END"]
    assert sent["reasoning_effort"] == "high"
    assert sent["response_format"] == {"type": "json_object"}
    assert not {"options", "think", "format", "keep_alive"} & set(sent)  # Ollama's own stay home
    assert "".join(p.message.content or "" for p in streamed) == "Hello from upstream."
    assert streamed[-1].done and streamed[-1].done_reason == "stop"
    assert tools.message.tool_calls[0].function.arguments == {"city": "Oslo"}
    assert generated.response == "Hello from upstream."  # the prompt went as one chat turn
    assert prompt_sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]


def test_the_python_example_in_the_docs_runs(relay, ollama: FakeOllama, capsys):
    page = ROOT / "docs" / "ollama.md"
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]
    source = block.replace("http://127.0.0.1:3000", relay.url)
    source = source.replace("sk-team-a-3c1f9e27d4", SECRETS["main"])
    names: dict = {}
    try:
        exec(compile(source, "docs/ollama.md", "exec"), names)
    finally:
        names["client"].close()
    printed = capsys.readouterr().out
    assert printed.startswith("Hello from fake Ollama.\nHello from fake Ollama.\n")
    assert "llama3.2:latest" in printed


def test_reply_cache_and_metrics_on_the_native_face(start_gateway, fake_ollama, ollama):
    gw = start_gateway({"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_API_KEYS": SECRETS["main"]})
    body = {"model": "llama3.2", "messages": HI, "stream": False, "options": {"seed": 1}}
    first = post(gw, "/api/chat", body)
    second = post(gw, "/api/chat", body)
    streamed = post(gw, "/api/chat", {**body, "stream": True})
    assert first.headers["X-Cache"] == "MISS" and second.headers["X-Cache"] == "HIT"
    assert streamed.headers["X-Cache"] == "HIT"
    assert first.json()["message"] == second.json()["message"]
    assert "".join(o["message"]["content"] for o in lines(streamed)) == "Hello from fake Ollama."
    assert len([r for r in ollama.requests if r.path == "/api/chat"]) == 1
    other = post(gw, "/api/chat", {**body, "options": {"seed": 2}})  # another option: a miss
    assert other.headers["X-Cache"] == "MISS"

    def counted() -> bool:
        text = requests.get(gw.url + "/metrics").text
        return 'route="/api/chat"' in text and 'model="llama3.2"' in text

    wait_until(counted)


def test_legacy_embeddings_embed_the_prompt_only(relay, ollama: FakeOllama):
    ollama.script("nomic-embed-text")
    body = {"model": "nomic-embed-text", "prompt": "one", "input": "two", "dimensions": 4}
    resp = post(relay, "/api/embeddings", {**body, "keep_alive": "1m"})
    assert resp.status_code == 200 and len(resp.json()["embedding"]) == EMBED_DIMENSIONS
    sent = ollama.last("/api/embed").body
    assert sent == {"model": "nomic-embed-text", "input": ["one"], "keep_alive": "1m"}
    empty = post(relay, "/api/embeddings", {"model": "nomic-embed-text", "prompt": ""})
    assert empty.json() == {"embedding": []}


def test_ollamas_own_refusals_of_think_and_tools_reach_native_callers(relay, ollama: FakeOllama):
    ollama.script("gemma3:1b", thinking_capable=False, tools_capable=False)
    tool = {"type": "function", "function": {"name": "f"}}
    for extra, said in (
        ({"think": True}, "does not support thinking"),
        ({"tools": [tool]}, "does not support tools"),
    ):
        body = {"model": "gemma3:1b", "messages": HI, "stream": False, **extra}
        resp = post(relay, "/api/chat", body)
        assert resp.status_code == 400 and said in resp.json()["error"]
    # The OpenAI face keeps answering without them, as before.
    openai_face = post(
        relay,
        "/v1/chat/completions",
        {"model": "gemma3:1b", "messages": HI, "reasoning_effort": "high", "tools": [tool]},
    )
    assert openai_face.status_code == 200
