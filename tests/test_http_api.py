"""Models, health, request ids and the error envelope, over raw HTTP and the SDK."""

from __future__ import annotations

import openai
import pytest
import requests

from tests.conftest import API_KEY, free_port
from tests.fakes.ollama import FakeOllama

USER = [{"role": "user", "content": "Hi"}]


def assert_envelope(resp: requests.Response, status: int, **expected: object) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in resp.text
    for key, value in expected.items():
        assert error[key] == value, (key, error)
    return error


def test_models_list_and_retrieve_with_the_sdk(client, ollama: FakeOllama):
    ollama.models = ["llama3.2:latest", "hf.co/org/model:Q4"]
    models = client.models.list()
    assert [m.id for m in models.data] == ["llama3.2:latest", "hf.co/org/model:Q4"]
    assert all(
        m.object == "model" and m.owned_by == "ollama" and m.created > 0 for m in models.data
    )
    assert client.models.retrieve("hf.co/org/model:Q4").id == "hf.co/org/model:Q4"
    assert client.models.retrieve("llama3.2").id == "llama3.2:latest"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("nope")
    assert e.value.code == "model_not_found"


def test_models_list_is_an_empty_array_when_nothing_is_installed(gateway, http, ollama):
    ollama.models = []
    assert http.get(gateway.url + "/v1/models").json() == {"object": "list", "data": []}


def test_health_needs_no_auth_and_calls_no_upstream(gateway, ollama):
    resp = requests.get(gateway.url + "/health")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}
    assert not ollama.requests


def test_ready_reports_backends(gateway, start_gateway, ollama):
    resp = requests.get(gateway.url + "/ready")
    assert resp.status_code == 200
    assert resp.json() == {
        "status": "ok",
        "backends": {"ollama": {"type": "ollama", "status": "ok"}},
    }
    down = start_gateway({"OLLAMA_BASE_URL": f"http://127.0.0.1:{free_port()}"})
    resp = requests.get(down.url + "/ready")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable"
    assert body["backends"]["ollama"]["status"] == "unavailable"
    assert "cannot be reached" in body["backends"]["ollama"]["error"]


def test_missing_key_is_401_and_bearer_or_x_api_key_both_work(gateway, ollama):
    url = gateway.url + "/v1/models"
    assert_envelope(requests.get(url), 401, code="invalid_api_key", type="invalid_request_error")
    assert_envelope(requests.get(url, headers={"Authorization": "Bearer nope-nope-nope"}), 401)
    assert_envelope(requests.get(url, headers={"Authorization": f"Basic {API_KEY}"}), 401)
    assert requests.get(url, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert requests.get(url, headers={"X-Api-Key": API_KEY}).status_code == 200


def test_unknown_route_and_method_are_json_errors(gateway, http):
    assert_envelope(http.get(gateway.url + "/v1/nothing"), 404, code="not_found")
    assert_envelope(http.get(gateway.url + "/nothing"), 404)
    assert_envelope(http.get(gateway.url + "/v1/chat/completions"), 405, code="method_not_allowed")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER}, "model"),
        ({"model": "llama3.2"}, "messages"),
        ({"model": "llama3.2", "messages": []}, "messages"),
        (
            {"model": "llama3.2", "messages": [{"role": "wizard", "content": "x"}]},
            "messages[0].role",
        ),
        ({"model": "llama3.2", "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": "llama3.2", "messages": USER, "temperature": 3}, "temperature"),
        ({"model": "llama3.2", "messages": USER, "temperature": "hot"}, "temperature"),
        ({"model": "llama3.2", "messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"model": "llama3.2", "messages": USER, "stop": [1]}, "stop"),
        ({"model": "llama3.2", "messages": USER, "stream": "yes"}, "stream"),
        ({"model": "llama3.2", "messages": USER, "tools": [{"type": "custom"}]}, "tools[0]"),
        ({"model": "llama3.2", "messages": USER, "tool_choice": "always"}, "tool_choice"),
        (
            {"model": "llama3.2", "messages": USER, "response_format": {"type": "xml"}},
            "response_format",
        ),
        ({"model": "llama3.2", "messages": USER, "reasoning_effort": "huge"}, "reasoning_effort"),
        (
            {
                "model": "llama3.2",
                "messages": [{"role": "user", "content": [{"type": "input_audio"}]}],
            },
            "messages[0].content[0].type",
        ),
        (
            {
                "model": "llama3.2",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}],
                    }
                ],
            },
            "messages[0].content[0].image_url.url",
        ),
    ],
)
def test_bad_fields_are_400_naming_the_param(gateway, http, ollama, body, param):
    error = assert_envelope(
        http.post(gateway.url + "/v1/chat/completions", json=body),
        400,
        type="invalid_request_error",
    )
    assert error["param"] == param
    assert not [r for r in ollama.requests if r.path == "/api/chat"]


def test_body_that_is_not_json_is_400(gateway, http):
    url = gateway.url + "/v1/chat/completions"
    assert "not valid JSON" in assert_envelope(http.post(url, data=b"{nope"), 400)["message"]
    assert "empty" in assert_envelope(http.post(url, data=b""), 400)["message"]
    assert "JSON object" in assert_envelope(http.post(url, json=[1, 2]), 400)["message"]


def test_bad_image_data_and_disabled_image_urls_are_400(client):
    def ask(url: str) -> openai.BadRequestError:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(
                model="llama3.2",
                messages=[
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}
                ],
            )
        return e.value

    assert "base64" in ask("data:image/png;base64,@@not-base64@@").message
    error = ask("https://example.com/cat.png")
    assert "RELAY_FETCH_IMAGE_URLS" in error.message and error.param == "messages[0].content"


def test_bad_tool_call_arguments_are_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="llama3.2",
            messages=[
                *USER,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{oops"},
                        }
                    ],
                },
            ],
        )
    assert e.value.param == "messages[1].tool_calls[0].function.arguments"


def test_oversized_body_is_413(start_gateway, fake_ollama):
    gw = start_gateway({"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_MAX_BODY_BYTES": "2048"})
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "x" * 4096}]}
    assert_envelope(
        requests.post(gw.url + "/v1/chat/completions", json=body), 413, code="request_too_large"
    )
    small = {"model": "llama3.2", "messages": USER}
    assert requests.post(gw.url + "/v1/chat/completions", json=small).status_code == 200


def test_html_error_page_from_upstream_is_a_clean_502(gateway, http, ollama: FakeOllama):
    ollama.script("llama3.2", status=502, raw_body=b"<html><body>Bad Gateway</body></html>")
    error = assert_envelope(
        http.post(
            gateway.url + "/v1/chat/completions", json={"model": "llama3.2", "messages": USER}
        ),
        502,
    )
    assert "Ollama backend 'ollama'" in error["message"] and "<html>" not in error["message"]


def test_request_id_is_echoed_or_generated_on_every_response(gateway, http):
    resp = http.get(gateway.url + "/v1/models", headers={"X-Request-ID": "trace-abc.123"})
    assert resp.headers["X-Request-ID"] == "trace-abc.123"
    generated = requests.get(gateway.url + "/v1/models").headers["X-Request-ID"]
    assert generated.startswith("req_")
    assert http.get(gateway.url + "/nothing").headers["X-Request-ID"].startswith("req_")
    unsafe = http.get(gateway.url + "/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["X-Request-ID"].startswith("req_")
