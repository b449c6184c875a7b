"""Take the dashboard's screenshots for the docs: docs/images/dashboard.png (a laptop) and
docs/images/dashboard-phone.png (a phone), from made-up usage.

Run by hand from the repository root, with the development environment:

    .venv/bin/python scripts/dashboard_screenshot.py

It fills a new SQLite ledger with a month of made-up records (a fixed seed: the same picture
every time), starts a gateway on it under gunicorn with a fake Ollama, opens /admin in headless
Chromium from an allowed address (loopback), and captures the whole page once it has drawn.
"""

from __future__ import annotations

import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.usage.record import UsageRecord  # noqa: E402
from services.usage.store import UsageStore  # noqa: E402
from tests.chromium import Chromium  # noqa: E402
from tests.conftest import Gateway  # noqa: E402
from tests.fakes.ollama import FakeOllama  # noqa: E402

KEYS = {"team-search": 5, "team-support": 3, "ci-bot": 2, "notebooks": 1}
MODELS = {"llama3.2": 6, "qwen3:8b": 3, "mistral-small": 2, "nomic-embed-text": 1}


def made_up_records(now: datetime, days: int = 30) -> list[UsageRecord]:
    rng = random.Random(15)
    out = []
    start = now - timedelta(days=days)
    hour = start.replace(minute=0, second=0, microsecond=0)
    while hour < now:
        busy = 1.0 if 8 <= hour.hour <= 18 else 0.25  # office hours
        growth = 0.5 + (hour - start) / (now - start)  # more use lately
        for _ in range(rng.randint(0, int(8 * busy * growth) + 1)):
            ts = hour + timedelta(seconds=rng.uniform(0, 3599))
            if ts >= now:
                continue
            model = rng.choices(list(MODELS), weights=list(MODELS.values()))[0]
            embed = model == "nomic-embed-text"
            streamed = not embed and rng.random() < 0.6
            failed = rng.random() < 0.03
            hit = not failed and not embed and rng.random() < 0.12
            duration = 20.0 if hit else rng.lognormvariate(6.6 if not embed else 3.5, 0.5)
            out.append(
                UsageRecord(
                    ts=ts,
                    request_id=f"req_{rng.getrandbits(48):012x}",
                    key_name=rng.choices(list(KEYS), weights=list(KEYS.values()))[0],
                    model=model,
                    backend="gpu",
                    upstream_model=model,
                    endpoint="/v1/embeddings" if embed else "/v1/chat/completions",
                    method="POST",
                    status=rng.choice([502, 504, 429]) if failed else 200,
                    error_type="server_error" if failed else None,
                    error_code=None,
                    prompt_tokens=0 if failed else rng.randint(40, 1800),
                    completion_tokens=0 if failed or embed else rng.randint(20, 900),
                    reasoning_tokens=None,
                    cached_tokens=None,
                    tokens_estimated=False,
                    cache=None if embed else ("HIT" if hit else "MISS"),
                    duration_ms=duration,
                    first_token_ms=duration * rng.uniform(0.08, 0.25) if streamed else None,
                    streamed=streamed,
                    abandoned=streamed and rng.random() < 0.02,
                    client="10.0.0.7",
                )
            )
        hour += timedelta(hours=1)
    return out


def main() -> None:
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        db = Path(work) / "relay.db"
        store = UsageStore.open(f"sqlite:///{db}")
        store.migrate()
        records = made_up_records(datetime.now(UTC).replace(tzinfo=None))
        for i in range(0, len(records), 500):
            store.write(records[i : i + 500])
        store.engine.dispose()
        ollama = FakeOllama()
        config = Path(work) / "relay.toml"
        config.write_text(
            f'[backends.gpu]\ntype = "ollama"\nurl = "{ollama.url}"\nmodels = ["*"]\n'
        )
        env = {
            "RELAY_CONFIG": str(config),
            "RELAY_DATABASE_URL": f"sqlite:///{db}",
            "RELAY_METRICS_ALLOW": "127.0.0.1/32",
        }
        gw = Gateway(env, Path(work) / "gateway.log").wait_ready()
        browser = Chromium(Path(work) / "profile", width=1280, height=900)
        try:
            for name, width, mobile in (
                ("dashboard.png", 1280, False),
                ("dashboard-phone.png", 390, True),
            ):
                browser.resize(width, 900, mobile=mobile)
                browser.navigate(gw.url + "/admin?period=24h")
                browser.wait_for("document.body.dataset.state === 'ready'")
                browser.screenshot(images / name)
                assert not browser.errors, browser.errors
                print(f"{len(records)} records; wrote docs/images/{name}")
        finally:
            browser.close()
            gw.stop()
            ollama.close()


if __name__ == "__main__":
    main()
