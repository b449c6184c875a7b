"""Files that last: Dify's short-lived file URLs become Relay's own, kept locally or in S3."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import API_KEY, ROOT, free_port, wait_until
from tests.fakes.dify import FakeDify
from tests.fakes.files import FakeFiles

CHAT_KEY, FLOW_KEY = "app-files-chat-key", "app-files-flow-key"
PNG = b"\x89PNG\r\n\x1a\n"
SIGNED = "?timestamp=1&nonce=n&sign=s3cr3t-signature"
KEPT = re.compile(r"\((?P<url>[^)]*/files/(?P<name>[A-Za-z0-9_-]{32}\.png))\)")


@pytest.fixture(scope="module")
def web():
    files = FakeFiles()
    yield files
    files.close()


@pytest.fixture
def dify(fake_dify: FakeDify) -> FakeDify:
    fake_dify.reset()
    fake_dify.add_app(CHAT_KEY, "chat", name="chatbot")
    fake_dify.add_app(FLOW_KEY, "workflow", name="painter")
    return fake_dify


def dify_env(tmp: Path, url: str, files_url: str = "", **extra: str) -> dict[str, str]:
    config = tmp / "dify.toml"
    files = f'files_url = "{files_url}"\n' if files_url else ""
    config.write_text(
        f'[backends.dify]\ntype = "dify"\nurl = "{url}/v1"\n{files}'
        '[backends.dify.apps.chatbot]\nkey_env = "CHAT_KEY"\nmode = "chat"\n'
        '[backends.dify.apps.painter]\nkey_env = "FLOW_KEY"\nmode = "workflow"\n'
    )
    return {
        "RELAY_CONFIG": str(config),
        "RELAY_API_KEYS": API_KEY,
        "CHAT_KEY": CHAT_KEY,
        "FLOW_KEY": FLOW_KEY,
        **extra,
    }


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kept")


@pytest.fixture(scope="module")
def local_gateway(start_module_gateway, fake_dify, files_dir, web, tmp_path_factory):
    env = dify_env(
        tmp_path_factory.mktemp("cfg"),
        fake_dify.url,
        files_url=web.url,  # Dify's FILES_URL on another host, serving signed file URLs
        RELAY_FILES_DIR=str(files_dir),
        RELAY_FILES_MAX_BYTES="1024",
    )
    return start_module_gateway(env)


def sdk_for(gateway, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1", api_key=API_KEY, max_retries=0, default_headers=headers
    )


def tool_file(name: str, **extra: str) -> dict[str, str]:
    return {"type": "image", "url": f"/files/tools/{name}{SIGNED}", "filename": name, **extra}


def ask(gateway, model: str = "chatbot", stream: bool = False, **headers: str) -> str:
    with sdk_for(gateway, **headers) as sdk:
        messages = [{"role": "user", "content": "Draw a cat"}]
        if stream:
            chunks = sdk.chat.completions.create(model=model, messages=messages, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        reply = sdk.chat.completions.create(model=model, messages=messages)
        return reply.choices[0].message.content or ""


def downloads(dify: FakeDify, name: str) -> int:
    return sum(1 for r in dify.requests if r.path == f"/files/tools/{name}")


# --- the local directory ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_dify_file_is_kept_and_outlives_difys_signed_url(local_gateway, dify, files_dir, stream):
    dify.apps[CHAT_KEY].files = [tool_file("cat.png")]
    content = ask(local_gateway, stream=stream)
    match = KEPT.search(content)
    assert match, content
    assert content.startswith("Answer 1 to: Draw a cat\n\n![cat.png](")
    assert match["url"] == f"{local_gateway.url}/files/{match['name']}"
    assert "sign=" not in content
    # message_file and message_end name the same file: it is fetched and kept once.
    assert downloads(dify, "cat.png") == 1
    assert (files_dir / match["name"]).read_bytes() == PNG + b"cat.png"

    dify.serve_files = False  # Dify's signed URL has expired
    assert requests.get(f"{dify.url}/files/tools/cat.png{SIGNED}").status_code == 404
    resp = requests.get(match["url"])  # no key: Markdown renderers fetch links on their own
    assert resp.status_code == 200 and resp.content == PNG + b"cat.png"
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Disposition"] == f'inline; filename="{match["name"]}"'
    assert (
        "immutable" in resp.headers["Cache-Control"]
        and "max-age=31536000" in (resp.headers["Cache-Control"])
    )
    assert "sandbox" in resp.headers["Content-Security-Policy"]
    again = requests.get(match["url"], headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status_code == 304


def test_workflow_outputs_and_generated_images_are_kept(local_gateway, dify):
    flow = dify.apps[FLOW_KEY]
    flow.files = [tool_file("chart.png", mime_type="image/png")]
    content = ask(local_gateway, model="painter")
    [match] = KEPT.finditer(content)  # outputs and data.files name it twice; shown once
    with sdk_for(local_gateway) as sdk:
        image = sdk.images.generate(model="painter", prompt="a chart").data[0]
    assert image.url and KEPT.search(f"({image.url})")
    dify.serve_files = False
    for url in (match["url"], image.url):
        assert requests.get(url).content == PNG + b"chart.png"


def test_files_too_large_or_of_a_disallowed_type_keep_their_upstream_url(
    local_gateway, dify, web, files_dir
):
    # Dify's signed URLs on another host (its FILES_URL), serving what a file store might hold.
    big = web.add("files/tools/big.png", PNG + b"x" * 2000, "image/png")
    page = web.add("files/tools/page.html", b"<script>alert(1)</script>", "text/html")
    svg = web.add("files/tools/logo.svg", b"<svg onload='alert(1)'/>", "image/svg+xml")
    before = set(files_dir.iterdir())
    dify.apps[CHAT_KEY].files = [
        {"type": "image", "url": big + SIGNED},
        {"type": "document", "url": page + SIGNED, "mime_type": "application/pdf"},
        {"type": "image", "url": svg + SIGNED},
    ]
    content = ask(local_gateway)
    for url in (big, page, svg):
        assert f"]({url}{SIGNED})" in content
    assert set(files_dir.iterdir()) == before
    wait_until(lambda: local_gateway.logs().count("keeps its upstream URL") >= 3)
    logs = local_gateway.logs()
    assert "larger than 1024 bytes" in logs and "type text/html is not kept" in logs
    assert "type image/svg+xml is not kept" in logs and "s3cr3t" not in logs


def test_links_elsewhere_are_not_fetched(local_gateway, dify, web, files_dir):
    # A remote_url file in a workflow's outputs, or anything not served by Dify, is not Dify's
    # to expire, and Relay must not be made to fetch arbitrary addresses.
    elsewhere = web.add("files/tools/elsewhere.png", PNG, "image/png")  # signed-looking path,
    unsigned = web.add("photo.png", PNG, "image/png")  # but no signature; and a plain link
    before = set(files_dir.iterdir())
    dify.apps[CHAT_KEY].files = [
        {"type": "image", "url": elsewhere + "?nonce=n"},
        {"type": "image", "url": unsigned + SIGNED},
    ]
    content = ask(local_gateway)
    assert f"]({elsewhere}?nonce=n)" in content and f"]({unsigned}{SIGNED})" in content
    assert set(files_dir.iterdir()) == before


def test_a_file_dify_no_longer_serves_keeps_its_url_and_the_reply_succeeds(local_gateway, dify):
    dify.apps[CHAT_KEY].files = [tool_file("gone.png")]
    dify.serve_files = False
    content = ask(local_gateway)
    assert f"![gone.png]({dify.url}/files/tools/gone.png{SIGNED})" in content
    wait_until(lambda: "download answered HTTP 404" in local_gateway.logs())


def raw_get(gateway, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_unknown_names_and_traversal_attempts_are_404(local_gateway, files_dir):
    (files_dir / "secret.txt").write_text("not served")
    made_up = "A" * 32 + ".png"
    for path in (
        f"/files/{made_up}",
        "/files/secret.txt",
        "/files/../config.py",
        "/files/..%2Fconfig.py",
        "/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/files/..%5C..%5Cconfig.py",
        "/files/" + "A" * 32 + ".png%00.txt",
        "/files/.incoming-x",
        "/files/",
    ):
        status, body = raw_get(local_gateway, path)
        assert status == 404, path
        assert b'"error"' in body and b"not served" not in body and b"root:" not in body, path
    status, body = raw_get(local_gateway, f"/files/{made_up}")
    assert b'"code":"file_not_found"' in body.replace(b" ", b"")


def test_links_follow_the_trusted_proxys_scheme_and_host(local_gateway, dify):
    dify.apps[CHAT_KEY].files = [tool_file("proxied.png")]
    content = ask(
        local_gateway,
        **{
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "relay.example.com",
        },
    )
    match = KEPT.search(content)
    assert match and match["url"] == f"https://relay.example.com/files/{match['name']}"


def test_relay_public_url_wins(start_gateway, fake_dify, dify, tmp_path):
    env = dify_env(
        tmp_path,
        fake_dify.url,
        RELAY_FILES_DIR=str(tmp_path / "kept"),
        RELAY_PUBLIC_URL="https://relay.example.com/gateway/",
    )
    gateway = start_gateway(env)
    dify.apps[CHAT_KEY].files = [tool_file("cat.png")]
    match = KEPT.search(ask(gateway))
    assert match and match["url"].startswith("https://relay.example.com/gateway/files/")
    assert requests.get(f"{gateway.url}/files/{match['name']}").content == PNG + b"cat.png"


def test_without_lasting_files_links_are_difys_and_files_404(
    start_gateway, fake_dify, dify, tmp_path
):
    gateway = start_gateway(dify_env(tmp_path, fake_dify.url))
    dify.apps[CHAT_KEY].files = [tool_file("cat.png")]
    assert f"![cat.png]({dify.url}/files/tools/cat.png{SIGNED})" in ask(gateway)
    assert requests.get(f"{gateway.url}/files/{'A' * 32}.png").status_code == 404


# --- an S3-compatible bucket (moto_server, a real S3 HTTP implementation from PyPI) -----


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        binary = Path(shutil.which("moto_server") or "")
    assert binary.is_file(), "moto[server] is in requirements-dev.txt"
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.RequestException:
            return False

    try:
        wait_until(up, timeout=30)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


S3_KEYS = {"RELAY_S3_ACCESS_KEY_ID": "testing-id", "RELAY_S3_SECRET_ACCESS_KEY": "testing-secret"}


def s3_client(url: str):
    import boto3

    return boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing-id",
        aws_secret_access_key="testing-secret",
    )


def test_s3_bucket_keeps_files_that_relay_serves(
    start_gateway, fake_dify, dify, s3_server, tmp_path
):
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket="relay-private")
    env = dify_env(
        tmp_path,
        fake_dify.url,
        RELAY_S3_BUCKET="relay-private",
        RELAY_S3_ENDPOINT_URL=s3_server,
        RELAY_S3_REGION="us-east-1",
        RELAY_S3_PREFIX="chat/",
        **S3_KEYS,
    )
    gateway = start_gateway(env)
    dify.apps[CHAT_KEY].files = [tool_file("cat.png")]
    match = KEPT.search(ask(gateway, stream=True))
    assert match and match["url"] == f"{gateway.url}/files/{match['name']}"
    obj = s3.get_object(Bucket="relay-private", Key=f"chat/{match['name']}")
    assert obj["ContentType"] == "image/png" and obj["Body"].read() == PNG + b"cat.png"

    dify.serve_files = False
    resp = requests.get(match["url"])
    assert resp.status_code == 200 and resp.content == PNG + b"cat.png"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert requests.get(f"{gateway.url}/files/{'B' * 32}.png").status_code == 404
    assert "testing-secret" not in gateway.logs()


def test_s3_public_url_links_straight_to_the_bucket(
    start_gateway, fake_dify, dify, s3_server, tmp_path
):
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket="relay-public")
    # What an operator does for RELAY_S3_PUBLIC_URL: let anyone read the bucket's objects.
    statement = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::relay-public/*",
    }
    s3.put_bucket_policy(
        Bucket="relay-public",
        Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
    )
    env = dify_env(
        tmp_path,
        fake_dify.url,
        RELAY_S3_BUCKET="relay-public",
        RELAY_S3_ENDPOINT_URL=s3_server,
        RELAY_S3_PUBLIC_URL=f"{s3_server}/relay-public",
        **S3_KEYS,
    )
    gateway = start_gateway(env)
    dify.apps[CHAT_KEY].files = [tool_file("cat.png")]
    content = ask(gateway)
    match = re.search(r"\((?P<url>[^)]*/relay-public/[A-Za-z0-9_-]{32}\.png)\)", content)
    assert match and match["url"].startswith(s3_server), content
    dify.serve_files = False
    resp = requests.get(match["url"])  # the bucket itself serves it
    assert resp.content == PNG + b"cat.png" and resp.headers["Content-Type"] == "image/png"


def test_unreachable_bucket_keeps_difys_url(start_gateway, fake_dify, dify, tmp_path):
    env = dify_env(
        tmp_path,
        fake_dify.url,
        RELAY_S3_BUCKET="nowhere",
        RELAY_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        **S3_KEYS,
    )
    gateway = start_gateway(env)
    dify.apps[CHAT_KEY].files = [tool_file("cat.png")]
    assert f"![cat.png]({dify.url}/files/tools/cat.png{SIGNED})" in ask(gateway)
    wait_until(lambda: "the bucket refused it" in gateway.logs())
    status, body = raw_get(gateway, f"/files/{'C' * 32}.png")
    assert status == 503 and b'"error"' in body


def test_settings_are_checked_at_start(start_gateway, fake_dify, tmp_path):
    for extra, message in (
        ({"RELAY_FILES_DIR": str(tmp_path), "RELAY_S3_BUCKET": "b"}, "not both"),
        ({"RELAY_S3_BUCKET": "b", "RELAY_S3_ACCESS_KEY_ID": "id"}, "go together"),
        ({"RELAY_FILES_DIR": str(tmp_path), "RELAY_PUBLIC_URL": "relay.example"}, "PUBLIC_URL"),
        ({"RELAY_FILES_DIR": str(tmp_path), "RELAY_FILES_MAX_BYTES": "lots"}, "MAX_BYTES"),
    ):
        gateway = start_gateway(dify_env(tmp_path, fake_dify.url, **extra), wait=False)
        assert gateway.proc.wait(20) == 2
        assert message in gateway.logs() and "Traceback" not in gateway.logs()


def test_docs_document_lasting_files():
    backends = (ROOT / "docs" / "backends.md").read_text()
    settings = (ROOT / "docs" / "configuration.md").read_text()
    assert "## Files that last" in backends and "RELAY_S3_PUBLIC_URL" in backends
    assert "| `RELAY_S3_PUBLIC_URL` |" in settings
