"""Slow bodies and spoofed hosts through the shipped nginx site (issue 11), and RELAY_PUBLIC_URL.

nginx runs with deploy/nginx-relay.conf as shipped, only ports, paths and (to keep the test
short) client_body_timeout substituted; the gateway behind it keeps Dify's files (docs/backends.md
"Files that last"), so the links in replies show which host Relay believed.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import ssl
from pathlib import Path

import pytest
import requests

from tests.conftest import API_KEY, free_port, wait_until
from tests.fakes.dify import FakeDify
from tests.test_deploy import (
    self_signed_certificate,
    site_config,
    start_nginx,
    wait_until_serving,
)

CHAT_KEY = "app-bodies-chat-key"
SIGNED = "?timestamp=1&nonce=n&sign=s3cr3t-signature"
KEPT = re.compile(r"\((?P<url>[^)]*/files/(?P<name>[A-Za-z0-9_-]{32}\.png))\)")
SHIPPED_BODY_TIMEOUT = "client_body_timeout 10s;"
BODY_TIMEOUT = 2  # seconds, templated into the site for the test
SPOOFED = "evil.example.net"


def dify_env(tmp: Path, url: str, **extra: str) -> dict[str, str]:
    config = tmp / "dify.toml"
    config.write_text(
        f'[backends.dify]\ntype = "dify"\nurl = "{url}/v1"\n'
        '[backends.dify.apps.chatbot]\nkey_env = "CHAT_KEY"\nmode = "chat"\n'
    )
    return {
        "RELAY_CONFIG": str(config),
        "RELAY_API_KEYS": API_KEY,
        "CHAT_KEY": CHAT_KEY,
        "RELAY_FILES_DIR": str(tmp / "kept"),
        "RELAY_TRUSTED_PROXIES": "127.0.0.1",
        "RELAY_CACHE_TTL": "0",
        **extra,
    }


@pytest.fixture
def dify(fake_dify: FakeDify) -> FakeDify:
    fake_dify.reset()
    app = fake_dify.add_app(CHAT_KEY, "chat", name="chatbot")
    app.files = [{"type": "image", "url": f"/files/tools/cat.png{SIGNED}", "filename": "cat.png"}]
    return fake_dify


@pytest.fixture(scope="module")
def nginx(start_module_gateway, fake_dify, tmp_path_factory):
    """nginx with the shipped site before a gateway that keeps Dify's files."""
    assert shutil.which("nginx"), "nginx is installed by scripts/test.sh"
    root = tmp_path_factory.mktemp("nginx-bodies")
    gateway = start_module_gateway(dify_env(root, fake_dify.url))
    cert, key = self_signed_certificate(root)
    https_port = free_port()
    site = site_config(gateway.port, free_port(), https_port, cert, key)
    assert SHIPPED_BODY_TIMEOUT in site  # the shipped site bounds slow bodies
    site = site.replace(SHIPPED_BODY_TIMEOUT, f"client_body_timeout {BODY_TIMEOUT}s;")
    proc = start_nginx(root, site)
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False

    def connect() -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", https_port, context=context, timeout=30)

    def raw() -> ssl.SSLSocket:
        sock = socket.create_connection(("127.0.0.1", https_port), timeout=30)
        return context.wrap_socket(sock, server_hostname="relay.example.com")

    try:
        wait_until_serving(connect)
        yield connect, raw, gateway
    finally:
        proc.terminate()
        proc.wait(10)


def ask(conn: http.client.HTTPSConnection, **headers: str) -> tuple[int, str]:
    body = {"model": "chatbot", "messages": [{"role": "user", "content": "Draw a cat"}]}
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
        | headers,
    )
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    conn.close()
    if resp.status != 200:
        return resp.status, json.dumps(payload)
    return resp.status, payload["choices"][0]["message"]["content"]


# --- finding 6: slow bodies stay in nginx ----------------------------------------------------


def test_slow_bodies_are_cut_by_nginx_and_never_reach_relay(nginx, dify):
    connect, raw, gateway = nginx
    slow = []
    for i in range(20):
        sock = raw()
        sock.sendall(
            (
                "POST /v1/chat/completions HTTP/1.1\r\nHost: relay.example.com\r\n"
                f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
                f"X-Request-ID: slow-body-{i}\r\nContent-Length: 1000\r\n\r\n"
                '{"model": '
            ).encode()
        )
        slow.append(sock)
    try:
        # Meanwhile everyone else is served through nginx.
        conn = connect()
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        status, content = ask(connect())
        assert status == 200 and "cat.png" in content, content
        # nginx gives up on each slow body (client_body_timeout) and closes the connection.
        for sock in slow:
            sock.settimeout(BODY_TIMEOUT * 5)
            try:
                answer = sock.recv(65536)
                while answer and not answer.endswith(b"\r\n\r\n") and b"</html>" not in answer:
                    more = sock.recv(65536)
                    if not more:
                        break
                    answer += more
            except ConnectionResetError:
                answer = b""
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:100]
    finally:
        for sock in slow:
            sock.close()
    # nginx buffers bodies: Relay never saw those requests at all, not even cut short.
    conn = connect()
    conn.request("GET", "/health", headers={"X-Request-ID": "after-the-slow-bodies"})
    assert conn.getresponse().status == 200
    conn.close()
    wait_until(lambda: "after-the-slow-bodies" in gateway.logs())
    assert "slow-body-" not in gateway.logs()


# --- finding 11: file links do not follow a client's Host or X-Forwarded-Host ------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-Host": SPOOFED},
        {"Host": SPOOFED},
        {"Host": SPOOFED, "X-Forwarded-Host": SPOOFED},
        {"X-Forwarded-Host": f"relay.example.com, {SPOOFED}"},
    ],
    ids=["x-forwarded-host", "host", "both", "list"],
)
def test_spoofed_host_does_not_reach_relays_file_links(nginx, dify, headers):
    connect, _raw, _gateway = nginx
    status, content = ask(connect(), **headers)
    assert status == 200, content
    match = KEPT.search(content)
    assert match, content
    assert match["url"] == f"https://relay.example.com/files/{match['name']}"
    assert SPOOFED not in content


def test_relay_public_url_wins_over_every_request_header(start_gateway, fake_dify, dify, tmp_path):
    gateway = start_gateway(
        dify_env(tmp_path, fake_dify.url, RELAY_PUBLIC_URL="https://relay.example.com")
    )
    for headers in (
        {"Host": SPOOFED},
        {"X-Forwarded-Host": SPOOFED, "X-Forwarded-Proto": "http"},  # from a trusted proxy
        {"Host": SPOOFED, "X-Forwarded-Host": SPOOFED},
    ):
        resp = requests.post(
            gateway.url + "/v1/chat/completions",
            json={"model": "chatbot", "messages": [{"role": "user", "content": "Draw a cat"}]},
            headers={"Authorization": f"Bearer {API_KEY}", **headers},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text
        content = resp.json()["choices"][0]["message"]["content"]
        match = KEPT.search(content)
        assert match and match["url"] == f"https://relay.example.com/files/{match['name']}"
        assert requests.get(match["url"].replace("https://relay.example.com", gateway.url)).ok
