"""Conveniences of the tools people migrate from: the /api path alias and development mode."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import openai
import requests

from tests.conftest import API_KEY, ROOT, free_port, wait_until
from tests.fakes.ollama import FakeOllama


def test_api_chat_completions_alias_with_the_sdk(gateway, ollama: FakeOllama):
    ollama.script("llama3.2", content=["Via", " /api"])
    with openai.OpenAI(base_url=gateway.url + "/api", api_key=API_KEY, max_retries=0) as sdk:
        reply = sdk.chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "Hi"}]
        )
        assert reply.choices[0].message.content == "Via /api"
        stream = sdk.chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Via /api"
    unauthorized = requests.post(gateway.url + "/api/chat/completions", json={})
    assert unauthorized.status_code == 401


def test_dev_mode_serves_and_reloads_on_change(fake_ollama, tmp_path):
    port = free_port()
    watched = tmp_path / "watched.py"
    watched.write_text("x = 1\n")
    env = {
        "PATH": os.environ["PATH"],
        "RELAY_ENV_FILE": "",
        "PORT": str(port),
        "OLLAMA_BASE_URL": fake_ollama.url,
    }
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(ROOT / "scripts" / "dev.sh"), "--extra-files", str(watched)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}/health"

        def up() -> bool:
            try:
                return requests.get(url, timeout=1).status_code == 200
            except requests.RequestException:  # not listening, or restarting: the app loads
                return False

        wait_until(up, timeout=30)
        assert "Debugger is active" in log.read_text()
        watched.write_text("x = 2\n")
        later = time.time() + 5  # a clearly newer mtime, whatever the clock's resolution
        os.utime(watched, (later, later))
        wait_until(lambda: "Detected change" in log.read_text(), timeout=15)
        wait_until(up, timeout=30)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
