"""http(s) image URLs: downloaded only when the operator allows it, within limits."""

from __future__ import annotations

import base64

import openai
import pytest

from tests.fakes.files import FakeFiles


@pytest.fixture(scope="module")
def files():
    server = FakeFiles()
    yield server
    server.close()


def ask(gateway, url: str):
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as sdk:
        return sdk.chat.completions.create(
            model="llama3.2",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
        )


def test_image_url_is_downloaded_and_sent_as_base64(start_gateway, fake_ollama, ollama, files):
    png = b"\x89PNG\r\n\x1a\n" + b"pixels" * 10
    gw = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_FETCH_IMAGE_URLS": "true",
            "RELAY_IMAGE_FETCH_ALLOW_PRIVATE": "true",
            "RELAY_IMAGE_MAX_BYTES": "1000",
        }
    )
    ask(gw, files.add("cat.png", png, "image/png"))
    assert ollama.last().body["messages"][0]["images"] == [base64.b64encode(png).decode()]

    with pytest.raises(openai.BadRequestError) as e:
        ask(gw, files.add("huge.png", b"x" * 2000, "image/png"))
    assert e.value.code == "image_too_large"
    with pytest.raises(openai.BadRequestError) as e:
        ask(gw, files.add("page.html", b"<html></html>", "text/html"))
    assert "not an image" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        ask(gw, files.url + "/missing.png")
    assert "HTTP 404" in e.value.message


def test_private_addresses_are_refused_by_default(start_gateway, fake_ollama, ollama, files):
    gw = start_gateway({"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_FETCH_IMAGE_URLS": "true"})
    url = files.add("cat.png", b"\x89PNG", "image/png")
    with pytest.raises(openai.BadRequestError) as e:
        ask(gw, url)
    assert "private or local network" in e.value.message
    assert not [r for r in ollama.requests if r.path == "/api/chat"]
