"""Access lines, levels, the per-worker file sink, and secrets kept out of logs."""

from __future__ import annotations

import re

import requests

from tests.conftest import wait_until

KEY = "sk-logging-secret-key-42"
PROMPT = "my very private prompt text"


def chat(gw, **body):
    return requests.post(
        gw.url + "/v1/chat/completions",
        json={"model": "llama3.2", "messages": [{"role": "user", "content": PROMPT}], **body},
        headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "log-test-1"},
    )


def test_access_line_names_the_key_never_the_secret(start_gateway, fake_ollama, ollama, tmp_path):
    gw = start_gateway(
        {"OLLAMA_BASE_URL": fake_ollama.url, "RELAY_API_KEYS": KEY, "RELAY_LOG_DIR": str(tmp_path)}
    )
    ollama.script("llama3.2", prompt_eval_count=9, eval_count=4)
    assert chat(gw).status_code == 200
    assert chat(gw, stream=True).status_code == 200
    requests.get(gw.url + "/v1/models", headers={"Authorization": "Bearer wrong-key-123"})

    line = r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] \[INFO\] log-test-1 "
    line += r"client=127\.0\.0\.1 key=env-[0-9a-f]{8} "
    line += r"POST /v1/chat/completions model=llama3\.2 backend=ollama status=200 ms=[\d.]+ "
    line += r"tokens=9\+4 stream="
    wait_until(lambda: re.search(line + "yes", gw.logs()))
    logs = gw.logs()
    assert re.search(line + "no", logs), logs
    assert re.search(r"key=- GET /v1/models .* status=401", logs)
    assert KEY not in logs and "wrong-key-123" not in logs
    assert PROMPT not in logs

    files = list(tmp_path.glob("relay.*.log"))
    assert len(files) == 1 and re.fullmatch(r"relay\.\d+\.log", files[0].name)
    assert re.search(line + "no", files[0].read_text())


def test_debug_level_shows_upstream_summaries_and_error_level_hides_access(
    start_gateway, fake_ollama, ollama
):
    debug = start_gateway({"OLLAMA_BASE_URL": fake_ollama.url, "LOG_LEVEL": "debug"})
    chat(debug, tools=[{"type": "function", "function": {"name": "f"}}])
    logs = debug.logs()
    assert "[DEBUG] Ollama backend 'ollama' <- POST /api/chat model=llama3.2 messages=1" in logs
    assert "tools=1" in logs
    assert "[DEBUG] Ollama backend 'ollama' -> done_reason=stop" in logs
    assert PROMPT not in logs

    quiet = start_gateway({"OLLAMA_BASE_URL": fake_ollama.url, "LOG_LEVEL": "error"})
    chat(quiet)
    assert "POST /v1/chat/completions" not in quiet.logs()


def test_json_log_format_for_log_shippers(start_gateway, fake_ollama, ollama, tmp_path):
    import json

    gw = start_gateway(
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_API_KEYS": KEY,
            "RELAY_LOG_FORMAT": "json",
            "RELAY_LOG_DIR": str(tmp_path),
        }
    )
    ollama.script("llama3.2", prompt_eval_count=9, eval_count=4)
    assert chat(gw).status_code == 200
    [log_file] = tmp_path.glob("relay.*.log")
    wait_until(lambda: "log-test-1" in log_file.read_text())
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    [access] = [r for r in records if r.get("request_id") == "log-test-1"]
    assert access["level"] == "INFO" and access["status"] == 200 and access["model"] == "llama3.2"
    assert access["key"].startswith("env-") and access["client"] == "127.0.0.1"
    assert (access["prompt_tokens"], access["completion_tokens"]) == (9, 4)
    assert access["time"] and isinstance(access["pid"], int)
    assert KEY not in log_file.read_text() and PROMPT not in log_file.read_text()
