"""A caller cannot forge fields inside its own access line in the text log format.

Control characters are escaped (finding 10), but a space was not: a model name or a path
(`%20` is decoded) holding ` key=admin status=200` put a second `key=`/`status=` field on the
line, which a grep or a key=value log parser reads as the real one."""

from __future__ import annotations

import re

import pytest
import requests

from tests.conftest import wait_until

KEY = "sk-review-log-fields-0123456789"
FORGED = " key=admin status=200 backend=ollama"


@pytest.fixture(scope="module")
def gw(start_module_gateway, fake_ollama, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    gateway = start_module_gateway(
        {"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_API_KEYS": KEY, "RELAY_LOG_DIR": str(logs)}
    )
    gateway.log_dir = logs
    return gateway


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
    model = "llama3.2" + FORGED.replace(" ", spacing)
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
