"""Finding 2 (and part of 13): image URLs in requests are fetched through one guarded fetcher.

The URL is parsed once, with the parser the HTTP client uses; text two parsers could read apart
is refused before any connection; every resolved address is checked, and the connection goes to
the checked address. Every refusal is a 400 envelope naming the image field.
"""

from __future__ import annotations

import base64
import socket
import threading

import pytest
import requests

from tests.conftest import API_KEY
from tests.security.fetch_fakes import PNG, CountingFiles


@pytest.fixture(scope="module")
def images():
    server = CountingFiles()
    server.add("cat.png", PNG, "image/png")
    yield server
    server.close()


def gateway_env(fake_ollama, allow_private: bool) -> dict[str, str]:
    return {
        "OLLAMA_BASE_URL": fake_ollama.url,
        "RELAY_API_KEYS": API_KEY,
        "RELAY_FETCH_IMAGE_URLS": "true",
        "RELAY_IMAGE_FETCH_ALLOW_PRIVATE": "true" if allow_private else "false",
    }


@pytest.fixture(scope="module")
def strict_gateway(start_module_gateway, fake_ollama):
    return start_module_gateway(gateway_env(fake_ollama, allow_private=False))


@pytest.fixture(scope="module")
def private_gateway(start_module_gateway, fake_ollama):
    return start_module_gateway(gateway_env(fake_ollama, allow_private=True))


def chat(gateway, url: str) -> requests.Response:
    content = [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return requests.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"model": "llama3.2", "messages": [{"role": "user", "content": content}]},
        timeout=30,
    )


def assert_refused(resp: requests.Response) -> dict[str, object]:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert str(error["param"]).startswith("messages[0].content")
    assert "Traceback" not in resp.text
    return dict(error)


def ambiguous_urls(port: int) -> list[str]:
    """Text that some parser reads as another host than the one a client would connect to."""
    return [
        f"http://127.0.0.1:{port}\\@1.1.1.1/cat.png",  # the reported differential
        f"http://1.1.1.1\\@127.0.0.1:{port}/cat.png",
        f"http://127.0.0.1:{port}\\cat.png",
        f"http://user@127.0.0.1:{port}/cat.png",
        f"http://127.0.0.1:{port}@1.1.1.1/cat.png",  # userinfo: never connects anywhere
        f"http://127.0.0.1:{port}:@1.1.1.1/cat.png",
        f"http://2130706433:{port}/cat.png",  # decimal
        f"http://0177.0.0.1:{port}/cat.png",  # octal
        f"http://0x7f.1:{port}/cat.png",  # hex, short
        f"http://0x7f000001:{port}/cat.png",
        f"http://127.1:{port}/cat.png",  # short form
        f"http://127.0.0.1.:{port}/cat.png",  # trailing dot
        f"http://localhost.:{port}/cat.png",
        f"http://%31%32%37.0.0.1:{port}/cat.png",  # percent-encoded host
        f"http://127%2e0.0.1:{port}/cat.png",
        f"http://127。0。0。1:{port}/cat.png",  # ideographic full stops  # noqa: RUF001
        f"http://ｌｏｃａｌｈｏｓｔ:{port}/cat.png",  # full-width letters  # noqa: RUF001
        f"http://127.0.0.1:{port} /cat.png",  # whitespace and controls
        f"http://127.0.0.1:{port}/cat.png\t",
        f"http://127.0.0.1:{port}/cat\r\n.png",
        f"http://127.0.0.1\x00:{port}/cat.png",
        f" http://127.0.0.1:{port}/cat.png",
    ]


def private_urls(port: int) -> list[str]:
    """Loopback, private and special addresses however spelled, and names resolving to them."""
    return [
        f"http://127.0.0.1:{port}/cat.png",
        f"http://localhost:{port}/cat.png",
        f"http://LocalHost:{port}/cat.png",
        f"http://0.0.0.0:{port}/cat.png",  # unspecified: Linux connects it to loopback
        f"http://[::]:{port}/cat.png",
        f"http://[::1]:{port}/cat.png",
        f"http://[::ffff:127.0.0.1]:{port}/cat.png",  # IPv4-mapped
        f"http://[::ffff:7f00:1]:{port}/cat.png",
        f"http://[::127.0.0.1]:{port}/cat.png",  # IPv4-compatible
        f"http://[2002:7f00:1::]:{port}/cat.png",  # 6to4 around 127.0.0.1
        f"http://[2002:a00:1::1]:{port}/cat.png",  # 6to4 around 10.0.0.1
        f"http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]:{port}/cat.png",  # Teredo
        f"http://[64:ff9b::7f00:1]:{port}/cat.png",  # NAT64 around 127.0.0.1
        f"http://[64:ff9b::a9fe:a9fe]:{port}/cat.png",  # NAT64 around 169.254.169.254
        f"http://[fe80::1]:{port}/cat.png",  # link-local
        f"http://[fc00::1]:{port}/cat.png",  # unique local
        f"http://[ff02::1]:{port}/cat.png",  # multicast
        f"http://169.254.169.254:{port}/latest/meta-data",  # link-local (cloud metadata)
        f"http://10.0.0.1:{port}/cat.png",
        f"http://172.16.0.1:{port}/cat.png",
        f"http://192.168.0.1:{port}/cat.png",
        f"http://100.64.0.1:{port}/cat.png",  # CGNAT
        f"http://224.0.0.1:{port}/cat.png",  # multicast
        f"http://240.0.0.1:{port}/cat.png",  # reserved
        f"http://255.255.255.255:{port}/cat.png",
    ]


def malformed_urls(port: int) -> list[str]:
    return [
        "http://[::1",
        f"http://[::1:{port}/cat.png",
        f"http://[::1]x:{port}/cat.png",
        f"http://[fe80::1%25lo]:{port}/cat.png",
        "http://127.0.0.1:99999/cat.png",
        "http://127.0.0.1:0/cat.png",
        "http:///cat.png",
        "http://:80/cat.png",
        "ftp://127.0.0.1/cat.png",
        "file:///etc/passwd",
        "/cat.png",
        "http://" + "a" * 64 + ".example/cat.png",
    ]


def test_every_private_or_ambiguous_url_is_a_400_without_a_connection(strict_gateway, images):
    port = images.port
    for url in [*ambiguous_urls(port), *private_urls(port), *malformed_urls(port)]:
        images.reset()
        assert_refused(chat(strict_gateway, url))
        assert images.connections == 0, url
    error = assert_refused(chat(strict_gateway, f"http://localhost:{port}/cat.png"))
    assert "private or local network" in str(error["message"])


def test_allowing_private_hosts_never_allows_ambiguous_urls(private_gateway, images):
    port = images.port
    for url in [*ambiguous_urls(port), *malformed_urls(port)]:
        images.reset()
        assert_refused(chat(private_gateway, url))
        assert images.connections == 0, url


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_allowed_private_fetch_reaches_the_checked_server_with_the_urls_host(
    private_gateway, images, ollama, host
):
    images.reset()
    resp = chat(private_gateway, f"http://{host}:{images.port}/cat.png")
    assert resp.status_code == 200, resp.text
    assert ollama.last().body["messages"][0]["images"] == [base64.b64encode(PNG).decode()]
    assert images.seen == [(f"{host}:{images.port}", "/cat.png")]


def test_redirects_are_not_followed(private_gateway, images):
    images.reset()
    hop = images.redirect("hop.png", f"{images.url}/cat.png")
    error = assert_refused(chat(private_gateway, hop))
    assert "HTTP 302" in str(error["message"])
    assert images.seen == [(f"127.0.0.1:{images.port}", "/hop.png")]


def test_responses_route_refuses_the_same_urls(strict_gateway, images):
    images.reset()
    for url in (f"http://127.0.0.1:{images.port}\\@1.1.1.1/x.png", "http://[::1"):
        resp = requests.post(
            f"{strict_gateway.url}/v1/responses",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={
                "model": "llama3.2",
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "Describe"},
                            {"type": "input_image", "image_url": url},
                        ],
                    }
                ],
            },
            timeout=30,
        )
        assert resp.status_code == 400, resp.text
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    assert images.connections == 0


def test_a_server_dripping_bytes_is_cut_at_the_fetch_deadline(start_gateway, fake_ollama):
    """Each read waits for what has arrived, so a slow drip cannot hold a fetch past its time."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 40\r\n\r\n"
            )
            # Eight seconds of single bytes, then silence short of the length: a fetch that
            # waits for whole reads fails on the silence, not on its own deadline.
            for _ in range(32):
                if stop.wait(0.25):
                    return
                try:
                    conn.sendall(b"x")
                except OSError:
                    return
            stop.wait(5)

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    env = {**gateway_env(fake_ollama, allow_private=True), "RELAY_IMAGE_FETCH_TIMEOUT": "1"}
    gateway = start_gateway(env)
    try:
        error = assert_refused(chat(gateway, f"http://127.0.0.1:{port}/drip.png"))
        assert "took over" in str(error["message"])
    finally:
        stop.set()
        thread.join(5)
        listener.close()
