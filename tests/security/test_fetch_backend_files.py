"""Findings 4 and 5: files and images that upstream replies link to go through the guarded fetcher.

Dify's files (lasting copies, and generated images asked for as b64_json) are fetched only from
the Dify backend's own origin or its configured files_url, pinned, without redirects; anything
else keeps its upstream URL (lasting files) or is a 502 naming the backend (b64_json). An
OpenAI-compatible upstream's image links are fetched from its own origin, or from public hosts.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.wrappers import Request, Response

from tests.conftest import API_KEY, wait_until
from tests.fakes.server import ServerThread
from tests.security.fetch_fakes import PNG, CountingFiles

CHAT_KEY, FLOW_KEY = "app-fetch-chat-key", "app-fetch-flow-key"
SIGNED = "?timestamp=1&nonce=n&sign=s3cr3t-signature"


@pytest.fixture(scope="module")
def elsewhere():
    """A loopback host Dify's replies name but the operator never configured."""
    server = CountingFiles()
    yield server
    server.close()


@pytest.fixture(scope="module")
def files_host():
    """The host the operator names as Dify's FILES_URL."""
    server = CountingFiles()
    yield server
    server.close()


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fetch-kept")


@pytest.fixture(scope="module")
def dify_gateway(start_module_gateway, fake_dify, files_host, files_dir, tmp_path_factory):
    config = tmp_path_factory.mktemp("fetch-cfg") / "relay.toml"
    config.write_text(
        f'[backends.dify]\ntype = "dify"\nurl = "{fake_dify.url}/v1"\n'
        f'files_url = "{files_host.url}"\n'
        '[backends.dify.apps.chatbot]\nkey_env = "CHAT_KEY"\nmode = "chat"\n'
        '[backends.dify.apps.painter]\nkey_env = "FLOW_KEY"\nmode = "workflow"\n'
    )
    env = {
        "RELAY_CONFIG": str(config),
        "RELAY_API_KEYS": API_KEY,
        "CHAT_KEY": CHAT_KEY,
        "FLOW_KEY": FLOW_KEY,
        "RELAY_FILES_DIR": str(files_dir),
    }
    return start_module_gateway(env)


@pytest.fixture
def dify(fake_dify, elsewhere, files_host):
    fake_dify.reset()
    fake_dify.add_app(CHAT_KEY, "chat", name="chatbot")
    fake_dify.add_app(FLOW_KEY, "workflow", name="painter")
    elsewhere.reset()
    files_host.reset()
    return fake_dify


def post(gateway, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        gateway.url + path, headers={"Authorization": f"Bearer {API_KEY}"}, json=body, timeout=60
    )


def chat_reply(gateway) -> str:
    resp = post(
        gateway,
        "/v1/chat/completions",
        {"model": "chatbot", "messages": [{"role": "user", "content": "Draw"}]},
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


def generate_b64(gateway, model: str = "painter") -> requests.Response:
    body = {"model": model, "prompt": "a fox", "response_format": "b64_json"}
    return post(gateway, "/v1/images/generations", body)


def dify_file_requests(dify) -> list[str]:
    return [r.path for r in dify.requests if r.path.startswith("/files/")]


def links_elsewhere(dify, elsewhere) -> list[str]:
    """Signed-looking file URLs outside Dify's configured origins, as a workflow could return."""
    dify_port = dify.url.rsplit(":", 1)[1]
    return [
        elsewhere.add("files/tools/a.png", PNG, "image/png") + SIGNED,  # another loopback port
        f"http://localhost:{dify_port}/files/tools/b.png{SIGNED}",  # Dify's port, another name
        # userinfo: urlsplit's netloc and the client's host disagree
        f"http://127.0.0.1:{dify_port}@127.0.0.1:{elsewhere.port}/files/tools/a.png{SIGNED}",
        f"http://127.0.0.1:{elsewhere.port}\\@127.0.0.1:{dify_port}/files/tools/a.png{SIGNED}",
        f"http://[::ffff:127.0.0.1]:{elsewhere.port}/files/tools/a.png{SIGNED}",
    ]


# --- finding 4: lasting files --------------------------------------------------------------


def test_lasting_files_elsewhere_keep_their_url_and_are_not_fetched(
    dify_gateway, dify, elsewhere, files_dir
):
    links = links_elsewhere(dify, elsewhere)
    before = set(files_dir.iterdir())
    dify.apps[CHAT_KEY].files = [{"type": "image", "url": url} for url in links]
    content = chat_reply(dify_gateway)
    for url in links[:2]:
        assert f"]({url})" in content
    assert content.count("sign=s3cr3t-signature") == len(links)  # none became Relay's link
    assert dify_gateway.url + "/files/" not in content
    assert elsewhere.connections == 0
    assert dify_file_requests(dify) == []
    assert set(files_dir.iterdir()) == before
    wait_until(lambda: "does not serve files from" in dify_gateway.logs())
    assert "s3cr3t" not in dify_gateway.logs()


def test_files_url_and_difys_own_files_are_kept(dify_gateway, dify, files_host):
    on_files_host = files_host.add("files/tools/e.png", PNG, "image/png") + SIGNED
    on_dify = f"/files/tools/f.png{SIGNED}"
    dify.apps[CHAT_KEY].files = [{"type": "image", "url": on_files_host}, {"url": on_dify}]
    content = chat_reply(dify_gateway)
    assert content.count(dify_gateway.url + "/files/") == 2, content
    assert files_host.seen == [(f"127.0.0.1:{files_host.port}", "/files/tools/e.png")]
    assert dify_file_requests(dify) == ["/files/tools/f.png"]


def test_a_redirect_from_difys_files_host_is_not_followed(
    dify_gateway, dify, files_host, elsewhere
):
    target = elsewhere.add("files/tools/g.png", PNG, "image/png") + SIGNED
    hop = files_host.redirect("files/tools/hop.png", target) + SIGNED
    dify.apps[CHAT_KEY].files = [{"type": "image", "url": hop}]
    content = chat_reply(dify_gateway)
    assert f"]({hop})" in content
    assert elsewhere.connections == 0
    wait_until(lambda: "download answered HTTP 302" in dify_gateway.logs())


# --- finding 5: Dify images as b64_json ----------------------------------------------------


def assert_bad_gateway(resp: requests.Response) -> None:
    assert resp.status_code == 502, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "backend 'dify'" in error["message"]
    assert "s3cr3t" not in resp.text


def test_dify_images_elsewhere_are_a_502_without_a_connection(dify_gateway, dify, elsewhere):
    unsigned = elsewhere.add("photo.png", PNG, "image/png")
    for url in [*links_elsewhere(dify, elsewhere), unsigned, "http://[::1", "ftp://x/y.png"]:
        elsewhere.reset()
        dify.apps[FLOW_KEY].files = [{"type": "image", "url": url, "mime_type": "image/png"}]
        assert_bad_gateway(generate_b64(dify_gateway))
        assert elsewhere.connections == 0, url
        assert dify_file_requests(dify) == [], url
    assert "s3cr3t" not in dify_gateway.logs()


def test_dify_images_redirected_or_not_images_are_a_502(dify_gateway, dify, files_host, elsewhere):
    target = elsewhere.add("files/tools/h.png", PNG, "image/png") + SIGNED
    hop = files_host.redirect("files/tools/hop2.png", target) + SIGNED
    page = files_host.add("files/tools/page.png", b"<script>1</script>", "text/html") + SIGNED
    for url in (hop, page):
        dify.apps[FLOW_KEY].files = [{"type": "image", "url": url, "mime_type": "image/png"}]
        assert_bad_gateway(generate_b64(dify_gateway))
    assert elsewhere.connections == 0
    assert [path for _, path in files_host.seen] == [
        "/files/tools/hop2.png",
        "/files/tools/page.png",
    ]


def test_dify_images_from_dify_or_its_files_url_are_downloaded(dify_gateway, dify, files_host):
    on_files_host = files_host.add("files/tools/i.png", PNG, "image/png") + SIGNED
    dify.apps[FLOW_KEY].files = [
        {"type": "image", "url": on_files_host},
        {"type": "image", "url": f"/files/tools/j.png{SIGNED}"},
    ]
    resp = generate_b64(dify_gateway)
    assert resp.status_code == 200, resp.text
    images = [base64.b64decode(d["b64_json"]) for d in resp.json()["data"]]
    assert images == [PNG, b"\x89PNG\r\n\x1a\nj.png"]


# --- finding 5: OpenAI-compatible images as b64_json ---------------------------------------


class ImageUpstream:
    """An OpenAI-compatible upstream that answers image requests with a scripted URL."""

    def __init__(self) -> None:
        self.link = ""
        self._server = ServerThread(self.wsgi)
        self.url = self._server.url

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = Request(environ).path
        if path == "/v1/models":
            body = {"object": "list", "data": [{"id": "img-1", "object": "model"}]}
            response = Response(json.dumps(body), content_type="application/json")
        elif path == "/v1/images/generations":
            body = {"created": 1, "data": [{"url": self.link}]}
            response = Response(json.dumps(body), content_type="application/json")
        elif path == "/files/own.png":
            response = Response(PNG, content_type="image/png")
        elif path == "/files/page.png":
            response = Response(b"<html></html>", content_type="text/html")
        elif path == "/files/hop.png":
            response = Response("", status=302, headers={"Location": self.link_after_hop})
        else:
            response = Response("not found", status=404)
        return response(environ, start_response)

    link_after_hop = ""

    def close(self) -> None:
        self._server.close()


@pytest.fixture(scope="module")
def image_upstream():
    upstream = ImageUpstream()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def openai_gateway(start_module_gateway, image_upstream, tmp_path_factory):
    config = tmp_path_factory.mktemp("fetch-openai") / "relay.toml"
    config.write_text(
        f'[backends.pictures]\ntype = "openai"\nurl = "{image_upstream.url}/v1"\n'
        'models = ["img-*"]\n'
    )
    return start_module_gateway({"RELAY_CONFIG": str(config), "RELAY_API_KEYS": API_KEY})


def test_openai_compat_images_come_only_from_its_own_origin_or_public_hosts(
    openai_gateway, image_upstream, elsewhere
):
    image_upstream.link = f"{image_upstream.url}/files/own.png"
    resp = generate_b64(openai_gateway, model="img-1")
    assert resp.status_code == 200, resp.text
    assert base64.b64decode(resp.json()["data"][0]["b64_json"]) == PNG

    elsewhere.reset()
    image_upstream.link_after_hop = elsewhere.add("x.png", PNG, "image/png")
    upstream_port = image_upstream.url.rsplit(":", 1)[1]
    for link in (
        elsewhere.add("x.png", PNG, "image/png"),  # another loopback host: private
        f"http://localhost:{upstream_port}/files/own.png",  # not the configured origin
        f"{image_upstream.url}/files/hop.png",  # a redirect to elsewhere
        f"{image_upstream.url}/files/page.png",  # not an image
        f"http://127.0.0.1:{upstream_port}\\@127.0.0.1:{elsewhere.port}/x.png",
        "http://[::1",
    ):
        image_upstream.link = link
        resp = generate_b64(openai_gateway, model="img-1")
        assert resp.status_code == 502, (link, resp.text)
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
        assert "backend 'pictures'" in resp.json()["error"]["message"]
    assert elsewhere.connections == 0
