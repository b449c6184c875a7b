"""The shipped deploy/ files, run for real: nginx (TLS) in front of gunicorn, and the unit file."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import API_KEY, ROOT, free_port, wait_until
from tests.fakes.ollama import FakeOllama

DEPLOY = ROOT / "deploy"
CLIENT_ADDRESS = "127.0.0.5"  # the test's own loopback address, distinct from nginx's 127.0.0.1


def site_config(gateway_port: int, http_port: int, https_port: int, cert: Path, key: Path) -> str:
    """The shipped nginx site with only ports and paths substituted."""
    text = (DEPLOY / "nginx-relay.conf").read_text()
    text = text.replace("server 127.0.0.1:3000;", f"server 127.0.0.1:{gateway_port};")
    text = text.replace("    listen [::]:80;\n", "").replace("    listen [::]:443 ssl http2;\n", "")
    text = text.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    text = text.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    text = text.replace("/etc/letsencrypt/live/relay.example.com/fullchain.pem", str(cert))
    text = text.replace("/etc/letsencrypt/live/relay.example.com/privkey.pem", str(key))
    directives = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "3000" not in directives and "/etc/" not in directives
    return text


def self_signed_certificate(root: Path) -> tuple[Path, Path]:
    """A certificate and key for relay.example.com, for nginx's TLS server."""
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=relay.example.com", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def start_nginx(root: Path, site: str) -> subprocess.Popen[bytes]:
    """nginx in the foreground with `site` as its only server configuration, files under root."""
    (root / "site.conf").write_text(site)
    (root / "nginx.conf").write_text(
        f"""
user root;
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    include {root}/site.conf;
}}
"""
    )
    check = subprocess.run(
        ["nginx", "-t", "-c", str(root / "nginx.conf")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    return subprocess.Popen(["nginx", "-c", str(root / "nginx.conf")], stderr=subprocess.DEVNULL)


def wait_until_serving(connect: Callable[[], http.client.HTTPSConnection]) -> None:
    """Wait until nginx answers /health through the gateway behind it."""

    def listening() -> bool:
        conn = connect()
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    wait_until(listening, timeout=10)


@pytest.fixture(scope="module")
def nginx(start_module_gateway, fake_ollama, tmp_path_factory):
    """nginx from Debian's package with the shipped site, before a real gateway."""
    assert shutil.which("nginx"), "nginx is installed by scripts/test.sh"
    root = tmp_path_factory.mktemp("nginx")
    gateway = start_module_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_TRUSTED_PROXIES": "127.0.0.1",
            "RELAY_API_KEYS": API_KEY,
            "RELAY_UNAUTHENTICATED_PER_MINUTE": "3",
        }
    )
    cert, key = self_signed_certificate(root)
    https_port = free_port()
    proc = start_nginx(root, site_config(gateway.port, free_port(), https_port, cert, key))

    def connect(source: str = CLIENT_ADDRESS) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        return http.client.HTTPSConnection(
            "127.0.0.1", https_port, context=context, source_address=(source, 0), timeout=30
        )

    try:
        wait_until_serving(connect)
        yield connect, gateway
    finally:
        proc.terminate()
        proc.wait(10)


def post(conn: http.client.HTTPSConnection, body: dict, **headers: str) -> http.client.HTTPResponse:
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(body),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {API_KEY}",
            **headers,
        },
    )
    return conn.getresponse()


def test_stream_arrives_through_nginx_chunk_by_chunk(nginx, ollama: FakeOllama):
    connect, _gateway = nginx
    ollama.script("llama3.2", content=[f"t{i} " for i in range(8)], pace=0.25)
    started = time.monotonic()
    conn = connect()
    resp = post(
        conn, {"model": "llama3.2", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    arrivals, body = [], b""
    while chunk := resp.read1(65536):
        arrivals.append(time.monotonic() - started)
        body += chunk
    conn.close()
    assert body.endswith(b"data: [DONE]\n\n")
    # Unbuffered: the first frames arrive long before the upstream finishes (ratio, one run).
    assert len(arrivals) > 4 and arrivals[0] < arrivals[-1] / 3


def test_client_address_and_request_id_reach_relay(nginx, ollama):
    connect, gateway = nginx
    conn = connect()
    resp = post(
        conn,
        {"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]},
        **{"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "through-nginx-1"},
    )
    assert resp.status == 200 and resp.getheader("X-Request-ID") == "through-nginx-1"
    resp.read()
    conn.close()
    wait_until(lambda: "through-nginx-1" in gateway.logs())
    line = next(x for x in gateway.logs().splitlines() if "through-nginx-1" in x)
    assert f"client={CLIENT_ADDRESS} " in line  # the forged entry on the left is not believed
    conn = connect()
    conn.request("GET", "/health")
    generated = conn.getresponse().getheader("X-Request-ID")
    conn.close()
    assert re.fullmatch(r"[0-9a-f]{32}", generated)  # nginx's $request_id, kept by Relay


def test_direct_callers_cannot_forge_their_address(start_gateway, fake_ollama, ollama):
    gateway = start_gateway(
        {"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_TRUSTED_PROXIES": "127.0.0.1"}
    )
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, source_address=(CLIENT_ADDRESS, 0))
    conn.request(
        "GET", "/health", headers={"X-Forwarded-For": "198.51.100.1", "X-Request-ID": "forged-1"}
    )
    conn.getresponse().read()
    conn.close()
    wait_until(lambda: "forged-1" in gateway.logs())
    assert f"forged-1 client={CLIENT_ADDRESS} " in gateway.logs()


def test_per_address_limits_see_the_client_behind_nginx(nginx):
    connect, _gateway = nginx

    def bad_key_from(source: str) -> int:
        conn = connect(source)
        resp = post(conn, {"model": "llama3.2", "messages": []}, Authorization="Bearer guess-1234")
        resp.read()
        conn.close()
        return resp.status

    assert [bad_key_from("127.0.0.8") for _ in range(5)] == [401, 401, 401, 429, 429]
    assert bad_key_from("127.0.0.9") == 401  # another client behind the same proxy is not limited


def test_oversized_body_is_refused_by_nginx(nginx):
    connect, _gateway = nginx
    huge = {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "x" * (21 * 1024 * 1024)}],
    }
    conn = connect()
    assert post(conn, huge).status == 413
    conn.close()


@pytest.mark.systemd
def test_unit_file_passes_systemd_analyze_verify(tmp_path):
    assert shutil.which("systemd-analyze"), "systemd-analyze is installed by scripts/test.sh"
    unit = (DEPLOY / "relay.service").read_text()
    unit = unit.replace("/opt/relay/.venv/bin/gunicorn", str(ROOT / ".venv" / "bin" / "gunicorn"))
    unit = unit.replace("WorkingDirectory=/opt/relay", f"WorkingDirectory={ROOT}")
    (tmp_path / "relay.service").write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "relay.service")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_env_example_lists_every_variable():
    import config

    example = (DEPLOY / ".env.example").read_text()
    for name in config.ENV_VARS:
        assert re.search(rf"^#? ?{name}=", example, flags=re.M), name
