"""CORS over raw HTTP: off by default; when on, allowed origins get preflights without a key."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import API_KEY

ALLOWED = "https://chat.example.com"
PREFLIGHT = {
    "Origin": ALLOWED,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
}


@pytest.fixture(scope="module")
def cors_gateway(start_module_gateway, fake_ollama):
    return start_module_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_API_KEYS": API_KEY,
            "RELAY_CORS_ORIGINS": f"{ALLOWED}, http://localhost:5173",
        }
    )


def cors_headers(resp: requests.Response) -> dict[str, str]:
    return {k: v for k, v in resp.headers.items() if k.lower().startswith("access-control-")}


def test_preflight_from_an_allowed_origin_is_answered_without_a_key(cors_gateway):
    resp = requests.options(cors_gateway.url + "/v1/chat/completions", headers=PREFLIGHT)
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in resp.headers["Vary"]
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    allowed = [h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")]
    for header in (
        "authorization",
        "content-type",
        "x-request-id",
        "x-dify-api-key",
        "x-dify-conversation-id",
        "x-stainless-os",
    ):
        assert header in allowed
    assert int(resp.headers["Access-Control-Max-Age"]) > 0


def test_simple_request_from_an_allowed_origin_exposes_relay_headers(cors_gateway, ollama):
    resp = requests.get(
        cors_gateway.url + "/v1/models",
        headers={"Origin": "http://localhost:5173", "Authorization": f"Bearer {API_KEY}"},
    )
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert "Origin" in resp.headers["Vary"]
    exposed = resp.headers["Access-Control-Expose-Headers"].lower()
    assert "x-request-id" in exposed and "x-dify-conversation-id" in exposed
    assert "x-ratelimit-remaining-requests" in exposed


def test_errors_to_an_allowed_origin_are_readable_by_the_browser(cors_gateway):
    resp = requests.post(
        cors_gateway.url + "/v1/chat/completions", json={}, headers={"Origin": ALLOWED}
    )
    assert resp.status_code == 401
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_other_origins_get_no_cors_headers(cors_gateway):
    evil = {**PREFLIGHT, "Origin": "https://evil.example.net"}
    preflight = requests.options(cors_gateway.url + "/v1/chat/completions", headers=evil)
    assert preflight.status_code == 401  # not answered as a preflight: the key check applies
    assert not cors_headers(preflight)
    simple = requests.get(
        cors_gateway.url + "/v1/models",
        headers={"Origin": "https://evil.example.net", "Authorization": f"Bearer {API_KEY}"},
    )
    assert simple.status_code == 200 and not cors_headers(simple)


def test_cors_is_off_by_default(gateway):
    preflight = requests.options(gateway.url + "/v1/chat/completions", headers=PREFLIGHT)
    assert not cors_headers(preflight)
    simple = requests.get(
        gateway.url + "/v1/models",
        headers={"Origin": ALLOWED, "Authorization": f"Bearer {API_KEY}"},
    )
    assert simple.status_code == 200 and not cors_headers(simple)


def test_a_bad_origin_setting_stops_start_up_with_a_clear_message(start_gateway, fake_ollama):
    gw = start_gateway(
        {"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_CORS_ORIGINS": "chat.example.com/app"},
        wait=False,
    )
    assert gw.proc.wait(20) != 0
    assert "RELAY_CORS_ORIGINS must list origins like" in gw.logs()
