"""Pass-through model names cannot take the metrics' model labels (finding 8's bound).

A pass-through body's `model` is the caller's text, never routed by Relay; it was counted as a
label all the same, so a key sending 100 made-up names filled the worker's label places and
every real model after that was counted as `other` until a restart."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import API_KEY
from tests.security.passthrough_setup import passthrough_config, serve_chat_upstream

MAX_MODEL_LABELS = 100  # services/common/metrics.py


@pytest.fixture(scope="module")
def upstream():
    yield from serve_chat_upstream()


@pytest.fixture(scope="module")
def gw(start_module_gateway, upstream, tmp_path_factory):
    path = passthrough_config(tmp_path_factory.mktemp("labels"), upstream)
    return start_module_gateway(
        {"RELAY_CONFIG": str(path), "RELAY_API_KEYS": API_KEY, "UP_KEY": "up", "RELAY_WORKERS": "1"}
    )


def test_passthrough_models_do_not_use_up_the_labels(gw):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with requests.Session() as http:
        for n in range(MAX_MODEL_LABELS + 10):
            body = {"model": f"made-up-{n}", "input": "x"}
            assert http.post(gw.url + "/v1/moderations", json=body, headers=headers).ok
        chat = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}
        assert http.post(gw.url + "/v1/chat/completions", json=chat, headers=headers).ok
        text = http.get(gw.url + "/metrics").text
    assert 'model="made-up-' not in text
    chat_lines = [
        line
        for line in text.splitlines()
        if line.startswith("relay_requests_total") and "/v1/chat/completions" in line
    ]
    assert chat_lines and all('model="gpt-test"' in line for line in chat_lines), chat_lines
