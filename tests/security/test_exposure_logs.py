"""Finding 10: a caller cannot forge log lines, or flood one, through the text log format.

Model names, paths and the like are written with their control characters escaped (newline,
carriage return, tab, other C0/C1 controls, U+2028/U+2029), and cut after 200 characters.
Whitespace in them is escaped too: a model name or a path (`%20` is decoded) holding
` key=admin status=200` would otherwise put a second `key=`/`status=` field on the line, which
a grep or a key=value log parser reads as the real one.
"""

from __future__ import annotations

import http.client
import json
import re

import pytest
import requests

from tests.conftest import wait_until

KEY = "sk-exposure-logs-0123456789"
FORGED = "[2026-01-01T00:00:00.000Z] [INFO] FORGED"
FORGED_FIELDS = " key=admin status=200 backend=ollama"  # fields inside one's own line
BREAKS = [
    "\n",
    "\r",
    "\r\n",
    "\t",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1e",
    "\x85",
    "\u2028",
    "\u2029",
    "\x00",
    "\x1b[2J",
]
# What a log reader may take for the end of a line (str.splitlines and friends).
LINE_ENDS = re.compile("[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


@pytest.fixture(scope="module")
def gw(start_module_gateway, fake_ollama, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    gateway = start_module_gateway(
        {"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_API_KEYS": KEY, "RELAY_LOG_DIR": str(logs)}
    )
    gateway.log_dir = logs
    return gateway


def log_text(gw) -> str:
    [file] = gw.log_dir.glob("relay.*.log")
    return file.read_bytes().decode("utf-8")


def lines_with(gw, request_id: str) -> list[str]:
    # Split as the most eager reader would: every line ending counts.
    # A forged line is one that begins with the forged time stamp.
    lines = LINE_ENDS.split(log_text(gw))
    return [line for line in lines if request_id in line or line.lstrip().startswith(FORGED[:12])]


def test_a_model_name_cannot_start_a_new_log_line(gw, ollama):
    for n, brk in enumerate(BREAKS):
        request_id = f"model-break-{n}-end"
        model = f"llama3.2{brk}{FORGED}{brk}"
        reply = requests.post(
            gw.url + "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "Hi"}]},
            headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": request_id},
        )
        assert reply.status_code == 404
        wait_until(lambda rid=request_id: rid in log_text(gw))
        found = lines_with(gw, request_id)
        assert len(found) == 1, (repr(brk), found)
        assert found[0].startswith("[") and " [INFO] " + request_id in found[0]


@pytest.mark.parametrize(
    "raw_path",
    [
        "/v1/models%0a" + FORGED.replace(" ", "%20"),
        "/v1/models%0d%0a" + FORGED.replace(" ", "%20"),
        "/v1/models%0d" + FORGED.replace(" ", "%20"),
        "/v1/x%e2%80%a8" + FORGED.replace(" ", "%20"),  # U+2028 in UTF-8
        "/v1/x%c2%85" + FORGED.replace(" ", "%20"),  # U+0085 NEL
        "/nowhere%0a" + FORGED.replace(" ", "%20"),  # outside /v1 too
    ],
    ids=["lf", "crlf", "cr", "u2028", "nel", "unrouted"],
)
def test_a_path_cannot_start_a_new_log_line(gw, raw_path):
    request_id = "path-break-" + str(abs(hash(raw_path)))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request(
        "GET", raw_path, headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": request_id}
    )
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 404 and json.loads(body)["error"]
    wait_until(lambda: request_id in log_text(gw))
    found = lines_with(gw, request_id)
    assert len(found) == 1, found
    assert "\\n" in found[0] or "\\r" in found[0] or "\\u" in found[0]  # shown, escaped


def test_long_caller_fields_are_cut(gw, ollama):
    model = "llama-" + "m" * 50_000
    reply = requests.post(
        gw.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "long-model"},
    )
    assert reply.status_code == 404
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("GET", "/v1/" + "p" * 3000, headers={"X-Request-ID": "long-path"})
    conn.getresponse().read()
    conn.close()
    wait_until(lambda: "long-model" in log_text(gw) and "long-path" in log_text(gw))
    [model_line] = lines_with(gw, "long-model")
    [path_line] = lines_with(gw, "long-path")
    assert "m" * 201 not in model_line and "[cut " in model_line
    assert "p" * 201 not in path_line and "[cut " in path_line
    assert len(model_line) < 1000 and len(path_line) < 1000


def test_json_format_stays_one_object_per_line(start_gateway, fake_ollama, ollama, tmp_path):
    gw = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_API_KEYS": KEY,
            "RELAY_LOG_FORMAT": "json",
            "RELAY_LOG_DIR": str(tmp_path),
        }
    )
    model = "llama3.2\n" + FORGED + "\u2028" + "z" * 1000
    requests.post(
        gw.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "json-break"},
    )
    [file] = tmp_path.glob("relay.*.log")
    wait_until(lambda: "json-break" in file.read_text())
    records = [json.loads(line) for line in file.read_text().split("\n") if line]
    [access] = [r for r in records if r.get("request_id") == "json-break"]
    assert access["model"].startswith("llama3.2\n" + FORGED)  # JSON escapes it by itself
    assert len(access["model"]) < 300 and "[cut " in access["model"]


# --- fields inside one's own line -------------------------------------------------------


def access_line(gw, request_id: str) -> str:
    def found() -> list[str]:
        [file] = gw.log_dir.glob("relay.*.log")
        return [
            line
            for line in file.read_text("utf-8").splitlines()
            if f"] [INFO] {request_id} " in line
        ]

    wait_until(found)
    [line] = found()
    return line


def fields(line: str, name: str) -> list[str]:
    # As the most eager reader splits a line: at any Unicode whitespace.
    return re.findall(rf"(?:^|\s){name}=(\S*)", line)


@pytest.mark.parametrize("spacing", [" ", "\u00a0", "\u3000", "\u2003"])
def test_a_model_name_cannot_add_fields(gw, ollama, spacing):
    request_id = f"model-fields-{ord(spacing)}"
    model = "llama3.2" + FORGED_FIELDS.replace(" ", spacing)
    resp = requests.post(
        gw.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": request_id},
    )
    assert resp.status_code == 404
    line = access_line(gw, request_id)
    assert len(fields(line, "key")) == 1 and fields(line, "key")[0] != "admin", line
    assert fields(line, "status") == ["404"], line
    assert len(fields(line, "backend")) == 1, line


def test_a_path_cannot_add_fields(gw):
    request_id = "path-fields"
    resp = requests.get(
        gw.url + "/v1/x%20key=admin%20status=200",
        headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": request_id},
    )
    assert resp.status_code == 404
    line = access_line(gw, request_id)
    assert len(fields(line, "key")) == 1 and fields(line, "key")[0] != "admin", line
    assert fields(line, "status") == ["404"], line


def test_plain_values_are_written_as_before(gw, ollama):
    request_id = "plain-fields"
    resp = requests.post(
        gw.url + "/v1/chat/completions",
        json={"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": request_id},
    )
    assert resp.status_code == 200
    line = access_line(gw, request_id)
    assert " POST /v1/chat/completions model=llama3.2 backend=ollama status=200 " in line
