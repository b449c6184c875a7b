"""Dify errors and cancellation behind the gateway: error frames, statuses, keys, abandoned
streams, unreachable and slow Dify, the quick start."""

from __future__ import annotations

import time

import openai
import pytest
import requests

from tests.conftest import API_KEY, free_port, wait_until
from tests.dify.conftest import ENV_NAMES, KEYS, USER_KEY_NAME, chat_requests, dify_config

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
