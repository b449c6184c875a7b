"""Process lifecycle under gunicorn: graceful stop during a stream, reload with new settings."""

from __future__ import annotations

import signal
import threading

import requests

from tests.conftest import wait_until
from tests.fakes.ollama import FakeOllama

BODY = {"model": "llama3.2", "stream": True, "messages": [{"role": "user", "content": "x"}]}


def read_stream(url: str, result: dict, headers: dict | None = None) -> None:
    with requests.post(url + "/v1/chat/completions", json=BODY, headers=headers, stream=True) as r:
        for chunk in r.iter_content(None):
            result.setdefault("chunks", []).append(chunk)
    result["body"] = b"".join(result["chunks"])


def refused(url: str) -> bool:
    try:
        requests.get(url + "/health", timeout=2)
    except requests.ConnectionError:
        return True
    return False


def test_sigterm_finishes_streams_in_flight_and_refuses_new_requests(
    start_gateway, fake_ollama, ollama: FakeOllama
):
    gw = start_gateway({"OLLAMA_BASE_URL": fake_ollama.url})
    ollama.script("llama3.2", content=[f"t{i} " for i in range(20)], pace=0.1)
    result: dict = {}
    reader = threading.Thread(target=read_stream, args=(gw.url, result))
    reader.start()
    wait_until(lambda: len(result.get("chunks", [])) >= 2)
    gw.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: refused(gw.url), timeout=5)  # no new requests once stopping
    reader.join(10)
    assert result["body"].endswith(b"data: [DONE]\n\n")  # the stream in flight completed
    assert b"t19 " in result["body"]
    assert gw.proc.wait(15) == 0


def test_sighup_reloads_settings_and_workers_without_dropping_streams(
    start_gateway, fake_ollama, ollama: FakeOllama, tmp_path
):
    dotenv = tmp_path / "relay.env"
    dotenv.write_text(f"OLLAMA_BASE_URL={fake_ollama.url}\nRELAY_API_KEYS=sk-old-key-123\n")
    gw = start_gateway({"RELAY_ENV_FILE": str(dotenv)})
    old, new = (
        {"Authorization": "Bearer sk-old-key-123"},
        {"Authorization": "Bearer sk-new-key-456"},
    )
    ollama.script("llama3.2", content=[f"t{i} " for i in range(20)], pace=0.1)
    result: dict = {}
    reader = threading.Thread(target=read_stream, args=(gw.url, result, old))
    reader.start()
    wait_until(lambda: len(result.get("chunks", [])) >= 2)
    booted = gw.logs().count("Booting worker")

    dotenv.write_text(f"OLLAMA_BASE_URL={fake_ollama.url}\nRELAY_API_KEYS=sk-new-key-456\n")
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: gw.logs().count("Booting worker") > booted, timeout=10)

    def new_key_works() -> bool:
        return requests.get(gw.url + "/v1/models", headers=new).status_code == 200

    def old_key_refused() -> bool:  # once the old worker has stopped taking requests
        return requests.get(gw.url + "/v1/models", headers=old).status_code == 401

    wait_until(new_key_works, timeout=10)
    wait_until(old_key_refused, timeout=10)
    reader.join(10)
    assert result["body"].endswith(b"data: [DONE]\n\n")  # the old worker finished its stream
    assert gw.proc.poll() is None
