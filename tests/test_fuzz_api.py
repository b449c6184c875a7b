"""Fuzz the whole HTTP API from its OpenAPI description (schemathesis) against a real gateway.

Every generated request, valid or not, must get an answer in time that the description allows:
no 5xx except the documented upstream 502/503/504, no traceback text, every error in its face's
envelope (OpenAI's; Anthropic's on /v1/messages; Ollama's on /api). The run is bounded and
derandomized so CI stays fast and repeatable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.transport import Response
from schemathesis.specs.openapi import checks as openapi_checks

from blueprints.openapi import DOCUMENT
from tests.conftest import API_KEY, Gateway
from tests.fakes.ollama_faults import AnyModelOllama

# A modest number per operation keeps CI fast; raise it by hand for a deeper hunt.
EXAMPLES = int(os.environ.get("RELAY_FUZZ_EXAMPLES", "25"))
UPSTREAM_STATUSES = {502, 503, 504}
LEAKS = ("Traceback (most recent call last)", 'File "/', "sk-relay-test-key")


@pytest.fixture(scope="module")
def any_ollama() -> Iterator[AnyModelOllama]:
    fake = AnyModelOllama()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def fuzz_gateway(start_module_gateway, any_ollama: AnyModelOllama) -> Gateway:
    return start_module_gateway(  # type: ignore[no-any-return]
        {
            "OLLAMA_BASE_URL": any_ollama.url,
            "RELAY_API_KEYS": API_KEY,
            "RELAY_MAX_BODY_BYTES": "262144",
            "RELAY_CACHE_TTL": "0",  # reach the translation code every time
            "RELAY_UNAUTHENTICATED_PER_MINUTE": "0",  # fuzzed keys must not lock the run out
            "LOG_LEVEL": "warn",
        }
    )


# Loaded from the file the gateway serves (schemathesis' lazy fixture loader does not work
# with this pytest); test_openapi_document_is_served checks the two are the same.
schema = schemathesis.openapi.from_path(str(DOCUMENT))
# Read whole streams (schemathesis stops after 20 events by default), so their ends are checked.
schema.config.max_stream_events = 100_000


def face_of(path: str) -> str:
    """The face whose envelope an answer on this path must use (blueprints/error_handlers.py)."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/api/") and not path.startswith("/api/chat/completions"):
        return "ollama"
    return "openai"


def check_error_envelope(face: str, body: object) -> None:
    assert isinstance(body, dict), body
    if face == "anthropic":
        assert set(body) == {"type", "error"} and body["type"] == "error", body
        error = body["error"]
        assert set(error) == {"type", "message"} and isinstance(error["type"], str), error
    elif face == "ollama":
        assert set(body) == {"error"}, body
        error = body
    else:
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message" if face != "ollama" else "error"], str)
    assert error["message" if face != "ollama" else "error"], error


def check_relay_rules(response: Response) -> None:
    """The rules every answer obeys, whatever was sent."""
    status = response.status_code
    text = response.content.decode("utf-8", errors="replace")
    assert status < 500 or status in UPSTREAM_STATUSES, (status, text[:500])
    content_type = response.headers.get("content-type", [""])[0]
    face = face_of(urlsplit(response.request.url or "").path)
    for leak in LEAKS:
        assert leak not in text, (leak, text[:500])
    if status >= 400:
        assert content_type == "application/json", response.headers
        check_error_envelope(face, json.loads(text))
    if content_type.startswith("text/event-stream"):
        assert not response.stream_cut_short
        events = [e for e in text.split("\n\n") if e and not e.startswith(":")]
        last = events[-1].split("data: ", 1)[1]
        if face == "anthropic":  # ends with message_stop, or one error event
            assert json.loads(last)["type"] in ("message_stop", "error"), events[-1]
            if events[-1].startswith("event: error"):
                check_error_envelope(face, json.loads(last))
        else:
            assert last == "[DONE]" or "error" in json.loads(last) or '"response.' in events[-1]
    if content_type.startswith("application/x-ndjson"):
        lines = [json.loads(line) for line in text.split("\n") if line]  # what clients split on
        assert all(line.get("done") is False for line in lines[:-1]), lines
        if "error" in lines[-1]:  # a failure after the stream started: one last line
            check_error_envelope(face, lines[-1])
        else:
            assert lines[-1]["done"] is True, lines[-1]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_within_the_description(case, fuzz_gateway):
    response = case.call(
        base_url=fuzz_gateway.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15
    )
    check_relay_rules(response)
    case.validate_response(
        response,
        checks=[
            openapi_checks.status_code_conformance,
            openapi_checks.content_type_conformance,
            openapi_checks.response_schema_conformance,
        ],
    )


def test_openapi_document_is_served_without_a_key(fuzz_gateway):
    response = requests.get(fuzz_gateway.url + "/openapi.json", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == json.loads(DOCUMENT.read_text())
    assert response.json()["openapi"].startswith("3.")


# --- bugs the fuzzers found, pinned --------------------------------------------------------

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}


def post_raw(gateway: Gateway, path: str, body: bytes) -> requests.Response:
    return requests.post(
        gateway.url + path,
        data=body,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        timeout=15,
    )


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,  # past the JSON parser's recursion limit: was a 500
        b'{"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "seed": NaN}',
        b'{"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], '
        b'"options": {"num_ctx": Infinity}}',  # passed through to Ollama: was a 502
    ],
    ids=["deep", "nan", "infinity"],
)
def test_bodies_that_are_not_strict_json_are_a_400(fuzz_gateway, body):
    for path in ("/v1/chat/completions", "/v1/responses"):
        response = post_raw(fuzz_gateway, path, body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["message"] == "The request body is not valid JSON."


def test_deeply_nested_tool_call_arguments_are_a_400(fuzz_gateway):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[" * 50_000}}
    body = {**CHAT, "messages": [{"role": "assistant", "tool_calls": [call]}, *CHAT["messages"]]}
    response = post_raw(fuzz_gateway, "/v1/chat/completions", json.dumps(body).encode())
    assert response.status_code == 400, response.text  # was a 500 (RecursionError)
    assert response.json()["error"]["param"] == "messages[0].tool_calls[0].function.arguments"


@pytest.mark.parametrize("depth", [100, 200, 960])
def test_deep_nesting_under_the_parser_limit_is_refused_not_a_500(fuzz_gateway, depth):
    # 960 levels parse, but re-encoding them for Ollama overflowed the stack: a 500.
    nested = "[" * depth + "]" * depth
    bodies = {
        "/v1/chat/completions": '{"model": "m", "messages": [{"role": "user", "content": "hi"}], '
        f'"options": {{"a": {nested}}}}}',
        # metadata holds only strings (OpenAI's rule), so the nesting rides in a JSON schema.
        "/v1/responses": '{"model": "m", "input": "hi", "text": {"format": {"type": '
        f'"json_schema", "name": "s", "schema": {{"a": {nested}}}}}}}}}',
    }
    for path, body in bodies.items():
        response = post_raw(fuzz_gateway, path, body.encode())
        assert response.status_code == (200 if depth == 100 else 400), (path, response.text)
