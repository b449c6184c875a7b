"""Embeddings through the gateway with the official openai SDK as the client."""

from __future__ import annotations

import base64
import struct

import openai
import pytest

from tests.fakes.ollama import EMBED_DIMENSIONS, FakeOllama, fake_embedding


def test_sdk_default_asks_for_base64_and_gets_the_exact_float32_vectors(client, ollama):
    raw = client.embeddings.with_raw_response.create(
        model="llama3.2", input=["red apple", "green pear tree"]
    )
    wire = raw.http_request.read()
    assert b'"encoding_format":"base64"' in wire.replace(b" ", b"")
    data = raw.http_response.json()["data"]
    assert all(isinstance(item["embedding"], str) for item in data)
    decoded = base64.b64decode(data[0]["embedding"])
    assert list(struct.unpack(f"<{EMBED_DIMENSIONS}f", decoded)) == fake_embedding("red apple")

    result = raw.parse()
    assert [e.index for e in result.data] == [0, 1]
    assert result.data[0].embedding == fake_embedding("red apple")
    assert result.data[1].embedding == fake_embedding("green pear tree")
    assert result.model == "llama3.2"
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (5, 5)
    assert ollama.last("/api/embed").body == {
        "model": "llama3.2",
        "input": ["red apple", "green pear tree"],
    }


def test_float_encoding_and_dimensions_reach_ollama(client, ollama: FakeOllama):
    raw = client.embeddings.with_raw_response.create(
        model="llama3.2", input="one text", encoding_format="float", dimensions=4
    )
    body = raw.http_response.json()
    assert body["object"] == "list"
    assert body["data"] == [
        {"object": "embedding", "index": 0, "embedding": fake_embedding("one text", 4)}
    ]
    assert body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    assert ollama.last("/api/embed").body == {
        "model": "llama3.2",
        "input": ["one text"],
        "dimensions": 4,
    }


@pytest.mark.parametrize("tokens", [[[9906, 1917]], [9906, 1917]])
def test_token_arrays_get_a_400_that_says_what_to_change(client, ollama, tokens):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="llama3.2", input=tokens)
    assert e.value.param == "input" and e.value.code == "token_input_unsupported"
    assert "check_embedding_ctx_length=False" in e.value.message
    assert "Send the text itself" in e.value.message
    assert not [r for r in ollama.requests if r.path == "/api/embed"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": ["ok", ""]}, "input[1]"),
        ({"input": ["ok", 3, "x"]}, "input[1]"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "", "input": "x"}, "model"),
    ],
)
def test_bad_input_is_a_400_naming_the_param(gateway, http, ollama, body, param):
    resp = http.post(gateway.url + "/v1/embeddings", json={"model": "llama3.2", **body})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == param
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_a_404_from_ollama(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="nomic-embed-text", input="x")
    assert e.value.code == "model_not_found" and e.value.param == "model"
    assert "not found, try pulling it first" in e.value.message


def test_absurd_dimensions_are_a_400(gateway):
    import requests

    from tests.conftest import API_KEY

    resp = requests.post(
        gateway.url + "/v1/embeddings",
        json={"model": "nomic-embed-text", "input": "x", "dimensions": 2_000_000_000},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "dimensions"
