"""The service page: JSON for programs, HTML for people (checked in headless Chromium)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import requests

from tests.conftest import API_KEY, free_port

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_service_page_json_names_backends_models_and_no_secrets(app_client, fake_ollama, ollama):
    relay = app_client(  # the page is settings and backends: no gunicorn needed
        {
            "OLLAMA_BASE_URL": fake_ollama.url,
            "RELAY_API_KEYS": API_KEY,
            "RELAY_METRICS_TOKEN": "metrics-secret-token",
        }
    )
    keyed = {"Authorization": f"Bearer {API_KEY}"}  # models are shown to key holders only
    info = relay.client.get("/", headers=keyed).json
    assert info["name"] == "Relay" and info["version"] and info["status"] == "ok"
    [backend] = info["backends"]
    assert backend == {
        "name": "ollama",
        "type": "ollama",
        "status": "ok",
        "models": ["llama3.2:latest", "qwen3:8b"],
    }
    assert {"method": "POST", "path": "/v1/chat/completions"}.items() <= info["endpoints"][
        0
    ].items()
    text = relay.client.get("/", headers=keyed).text
    assert (
        API_KEY not in text and "metrics-secret-token" not in text and fake_ollama.url not in text
    )


@pytest.mark.browser
def test_service_page_html_in_headless_chromium(start_gateway, fake_ollama, ollama, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "chromium is installed by scripts/test.sh"
    down = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[backends.gpu]\ntype = "ollama"\nurl = "{fake_ollama.url}"\nmodels = ["llama*"]\n'
        f'[backends.spare]\ntype = "ollama"\nurl = "{down}"\nconnect_timeout = 0.5\n'
    )
    gw = start_gateway({"RELAY_CONFIG": str(config)})
    html = requests.get(gw.url + "/", headers={"Accept": "text/html"})
    assert html.headers["Content-Type"].startswith("text/html")
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", gw.url + "/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dom.returncode == 0, dom.stderr
    page = dom.stdout
    assert "<title>Relay" in page and 'id="status">degraded<' in page
    assert "<code>gpu</code>" in page and "<code>llama3.2:latest</code>" in page
    assert "<code>qwen3:8b</code>" not in page  # listed by gpu's Ollama, but not routed there
    assert "<code>spare</code>" in page and "cannot be reached" in page
    assert "/v1/chat/completions" in page and down not in page
    shot = tmp_path / "home.png"
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            "--window-size=1000,900",
            gw.url + "/",
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert shot.stat().st_size > 10_000  # a rendered page, not an empty canvas
