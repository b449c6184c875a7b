"""Numbers beyond float range (1e400) are a 400 naming the field on every JSON route, and Relay
never writes `Infinity` or `NaN` (not JSON), even when an upstream sends such a number.

Bodies are sent as raw text: Python's json.dumps cannot write 1e400 itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from werkzeug.wrappers import Request, Response

from tests.conftest import API_KEY, Gateway
from tests.fakes.server import ServerThread

HUGE = ["1e400", "-1e400", "1E+400", "1e999", "1.5e400", "-0.1e401", "1" + "0" * 400 + ".0"]
USER = '[{"role":"user","content":"Hi"}]'
TOOL = '{"type":"function","function":{"name":"f","parameters":{"type":"object","maximum":{n}}}}'
RTOOL = '{"type":"function","name":"f","parameters":{"type":"object","enum":[1,{n}]}}'

# (route, body template with {n} where the huge number goes, the param the 400 must name)
CASES: list[tuple[str, str, str]] = [
    (
        "/v1/chat/completions",
        '{"model":"llama3.2","messages":' + USER + ',"temperature":{n}}',
        "temperature",
    ),
    ("/v1/chat/completions", '{"model":"llama3.2","messages":' + USER + ',"top_p":{n}}', "top_p"),
    (
        "/v1/chat/completions",
        '{"model":"llama3.2","messages":' + USER + ',"max_tokens":{n}}',
        "max_tokens",
    ),
    (
        "/v1/chat/completions",
        '{"model":"llama3.2","messages":' + USER + ',"metadata":{"a":{n}}}',
        "metadata.a",
    ),
    (
        "/v1/chat/completions",
        '{"model":"llama3.2","messages":' + USER + ',"tools":[' + TOOL + "]}",
        "tools[0].function.parameters.maximum",
    ),
    (
        "/v1/chat/completions",
        '{"model":"llama3.2","messages":' + USER + ',"options":{"num_ctx":{n}}}',
        "options.num_ctx",
    ),
    (
        "/v1/chat/completions",
        '{"model":"llama3.2","messages":[{"role":"user","content":{n}}]}',
        "messages[0].content",
    ),
    (
        "/v1/chat/completions",
        '{"model":"llama3.2","messages":' + USER + ',"x":[[{"y":{n}}]]}',
        "x[0][0].y",
    ),
    ("/v1/completions", '{"model":"llama3.2","prompt":"Hi","temperature":{n}}', "temperature"),
    ("/v1/completions", '{"model":"llama3.2","prompt":"Hi","max_tokens":{n}}', "max_tokens"),
    (
        "/v1/completions",
        '{"model":"llama3.2","prompt":"Hi","options":{"seed":{n}}}',
        "options.seed",
    ),
    ("/v1/embeddings", '{"model":"llama3.2","input":"Hi","dimensions":{n}}', "dimensions"),
    ("/v1/embeddings", '{"model":"llama3.2","input":["Hi",{n}]}', "input[1]"),
    ("/v1/responses", '{"model":"llama3.2","input":"Hi","metadata":{"a":{n}}}', "metadata.a"),
    ("/v1/responses", '{"model":"llama3.2","input":"Hi","temperature":{n}}', "temperature"),
    (
        "/v1/responses",
        '{"model":"llama3.2","input":"Hi","max_output_tokens":{n}}',
        "max_output_tokens",
    ),
    (
        "/v1/responses",
        '{"model":"llama3.2","input":"Hi","tools":[' + RTOOL + "]}",
        "tools[0].parameters.enum[1]",
    ),
    (
        "/v1/responses",
        '{"model":"llama3.2","input":[{"role":"user","content":[{"type":"input_text","text":"a","n":{n}}]}]}',
        "input[0].content[0].n",
    ),
    (
        "/v1/responses",
        '{"model":"llama3.2","input":"Hi","text":{"format":{"type":"json_schema","name":"s","schema":{"minimum":{n}}}}}',
        "text.format.schema.minimum",
    ),
    ("/v1/images/generations", '{"model":"flux","prompt":"a cat","n":{n}}', "n"),
    (
        "/v1/images/generations",
        '{"model":"flux","prompt":"a cat","extra":{"cfg":{n}}}',
        "extra.cfg",
    ),
    ("/api/chat/completions", '{"model":"llama3.2","messages":' + USER + ',"seed":{n}}', "seed"),
]


def strict_json(text: str) -> Any:
    """Parse as JSON proper: NaN and Infinity are refused."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in a reply: not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {API_KEY}"
        session.headers["Content-Type"] = "application/json"
        yield session


@pytest.mark.parametrize(("route", "template", "param"), CASES)
def test_a_number_beyond_float_range_is_a_400(gateway: Gateway, http, route, template, param):
    for literal in HUGE:
        body = template.replace("{n}", literal)
        reply = http.post(gateway.url + route, data=body, timeout=10)
        assert reply.status_code == 400, (literal, reply.status_code, reply.text[:300])
        error = strict_json(reply.text)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param, (literal, error)


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}, "seed"),
        ("/v1/completions", {"prompt": "Hi"}, "seed"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}, "max_tokens"),
        ("/v1/responses", {"input": "Hi"}, "max_output_tokens"),
    ],
)
def test_an_integer_beyond_64_bits_is_a_400(gateway: Gateway, http, ollama, route, body, param):
    for value in (10**400, -(10**30), 2**63):
        reply = http.post(
            gateway.url + route, data=json.dumps({"model": "llama3.2", **body, param: value})
        )
        assert reply.status_code == 400, (value, reply.text[:300])
        assert strict_json(reply.text)["error"]["param"] == param


def test_finite_numbers_still_pass(gateway: Gateway, http, ollama):
    body = '{"model":"llama3.2","messages":' + USER + ',"temperature":1.7976931348623157e308'
    assert http.post(gateway.url + "/v1/chat/completions", data=body + "}").status_code == 400
    body = '{"model":"llama3.2","input":"Hi","metadata":{"a":"1e400"},"temperature":0.5e0}'
    reply = http.post(gateway.url + "/v1/responses", data=body)
    assert reply.status_code == 200, reply.text
    assert strict_json(reply.text)["metadata"] == {"a": "1e400"}


# --- what an upstream sends: huge numbers must not come out as Infinity -----------------------


class RawUpstream:
    """Answers Ollama's and OpenAI's paths with scripted raw JSON text (1e400 included)."""

    def __init__(self) -> None:
        self.replies: dict[str, str] = {}
        self._server = ServerThread(self.wsgi)
        self.url = self._server.url

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = Request(environ).path
        fixed = {
            "/api/tags": '{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest"}]}',
            "/api/version": '{"version":"0.12.0"}',
            "/v1/models": '{"object":"list","data":[{"id":"oa-1","object":"model"}]}',
        }
        text = self.replies.get(path, fixed.get(path))
        if text is None:
            return Response('{"error":"not found"}', 404, mimetype="application/json")(
                environ, start_response
            )
        return Response(text, 200, mimetype="application/json")(environ, start_response)

    def close(self) -> None:
        self._server.close()


@pytest.fixture(scope="module")
def raw_upstream() -> Iterator[RawUpstream]:
    fake = RawUpstream()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def raw_gateway(start_module_gateway, raw_upstream: RawUpstream, tmp_path_factory) -> Gateway:
    config = tmp_path_factory.mktemp("wire-raw") / "relay.toml"
    config.write_text(
        f'[backends.local]\ntype = "ollama"\nurl = "{raw_upstream.url}"\nmodels = ["llama*"]\n'
        f'[backends.compat]\ntype = "openai"\nurl = "{raw_upstream.url}/v1"\nmodels = ["oa-*"]\n'
    )
    env = {"RELAY_CONFIG": str(config), "RELAY_API_KEYS": API_KEY, "RELAY_CACHE_TTL": "0"}
    return start_module_gateway(env)  # type: ignore[no-any-return]


OLLAMA_EMBED = '{"model":"llama3.2","embeddings":[[0.5,%s]],"prompt_eval_count":1}'
OPENAI_EMBED = (
    '{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,%s]}],'
    '"model":"oa-1","usage":{"prompt_tokens":1,"total_tokens":1}}'
)


@pytest.mark.parametrize("model", ["llama3.2", "oa-1"])
@pytest.mark.parametrize("encoding", ["float", "base64"])
@pytest.mark.parametrize("value", ["1e400", "-1E+400", "1e300", "1" + "0" * 60])
def test_upstream_huge_embedding_values_are_a_502_not_invalid_json(
    raw_gateway, raw_upstream, http, model, encoding, value
):
    raw_upstream.replies = {
        "/api/embed": OLLAMA_EMBED % value,
        "/v1/embeddings": OPENAI_EMBED % value,
    }
    body = {"model": model, "input": "Hi", "encoding_format": encoding}
    reply = http.post(raw_gateway.url + "/v1/embeddings", data=json.dumps(body), timeout=10)
    parsed = strict_json(reply.text)  # never Infinity
    finite_in_float32 = value == "1e300" and encoding == "float"
    big_int_float = value.startswith("1000") and encoding == "float"
    if finite_in_float32 or big_int_float:
        assert reply.status_code == 200, reply.text[:300]
        assert parsed["data"][0]["embedding"][1] == float(value)
    else:
        assert reply.status_code == 502, reply.text[:300]
        assert parsed["error"]["code"] == "bad_gateway", parsed


def test_upstream_huge_token_counts_do_not_break_the_reply(raw_gateway, raw_upstream, http):
    raw_upstream.replies = {
        "/api/chat": '{"model":"llama3.2","created_at":"2025-01-01T00:00:00Z",'
        '"message":{"role":"assistant","content":"ok"},"done":true,"done_reason":"stop",'
        '"prompt_eval_count":1e400,"eval_count":-1E+400}',
        "/api/embed": '{"model":"llama3.2","embeddings":[[0.5]],"prompt_eval_count":1e999}',
    }
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}]}
    reply = http.post(raw_gateway.url + "/v1/chat/completions", data=json.dumps(body), timeout=10)
    assert reply.status_code == 200, reply.text[:300]
    parsed = strict_json(reply.text)
    assert parsed["choices"][0]["message"]["content"] == "ok"
    # An unreadable count is no count: Relay estimates it, as when an upstream sends none.
    assert (
        isinstance(parsed["usage"]["prompt_tokens"], int) and parsed["usage"]["prompt_tokens"] > 0
    )
    body = {"model": "llama3.2", "input": "Hi"}
    reply = http.post(raw_gateway.url + "/v1/embeddings", data=json.dumps(body), timeout=10)
    assert reply.status_code == 200, reply.text[:300]
    assert strict_json(reply.text)["usage"]["prompt_tokens"] == 0
