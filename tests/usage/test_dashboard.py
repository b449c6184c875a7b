"""The operator dashboard through real gunicorn: /admin/dashboard.json's numbers equal the traffic
sent, only the admin sees them, and the page draws them in headless Chromium with no console
error (docs/operations.md "Dashboard")."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
import requests

from services.usage.record import UsageRecord
from services.usage.store import UsageStore
from tests.chromium import Chromium
from tests.conftest import API_KEY, wait_until
from tests.fakes.ollama import FakeOllama
from tests.usage.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    OTHER_KEY,
    admin_records,
    chat,
    db_rows,
    key_name,
    ledger_env,
)
from tests.usage.records import a_record

ME, OTHER = key_name(API_KEY), key_name(OTHER_KEY)
# What the traffic below is: per key, model and kind. The fake Ollama counts 12 prompt and
# 5 completion tokens for every answer.
SENT = 10
ERRORS = 2
ANSWERED = SENT - ERRORS


@pytest.fixture(scope="module")
def gw(start_module_gateway, fake_ollama, tmp_path_factory):
    db = tmp_path_factory.mktemp("dashboard") / "relay.db"
    return start_module_gateway(ledger_env(db, fake_ollama.url))


@pytest.fixture(scope="module")
def traffic(gw, fake_ollama: FakeOllama):
    """Send the traffic once and wait until the ledger holds all of it."""
    fake_ollama.reset()
    fake_ollama.script("llama3.2", content=["a", "b", "c"], pace=0.01)
    fake_ollama.script("qwen3:8b")
    fake_ollama.script("broken", status=500, error="boom")
    sent = [chat(gw) for _ in range(3)]  # me, llama3.2: 3 answers
    sent += [chat(gw, stream=True, stream_options={"include_usage": True}) for _ in range(2)]
    repeat = {"messages": [{"role": "user", "content": "the same question, twice"}]}
    sent += [chat(gw, key=OTHER_KEY, model="qwen3:8b", **repeat) for _ in range(2)]  # a HIT
    sent.append(chat(gw, key=OTHER_KEY, model="qwen3:8b"))
    sent.append(chat(gw, key=OTHER_KEY, model="no-such-model"))  # 404
    sent.append(chat(gw, model="broken"))  # 502
    assert [r.status_code for r in sent] == [200] * ANSWERED + [404, 502]
    assert sent[6].headers["X-Cache"] == "HIT"
    assert len(sent) == SENT

    def written() -> bool:
        return dashboard(gw, "24h")["totals"]["requests"] == SENT

    wait_until(written, timeout=15)
    return sent


def dashboard(gw, period: str, headers: dict[str, str] = ADMIN) -> dict:
    r = requests.get(
        gw.url + "/admin/dashboard.json", params={"period": period}, headers=headers, timeout=10
    )
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    return r.json()  # type: ignore[no-any-return]


def test_the_numbers_match_the_traffic_sent(gw, traffic):
    d = dashboard(gw, "24h")
    assert (d["usage"], d["period"], d["bucket"], d["source"]) == ("on", "24h", "hour", "hourly")
    assert len(d["buckets"]) == 24
    t = d["totals"]
    assert (t["requests"], t["errors"], t["cache_hits"], t["streamed"]) == (SENT, ERRORS, 1, 2)
    assert (t["prompt_tokens"], t["completion_tokens"]) == (12 * ANSWERED, 5 * ANSWERED)
    assert t["total_tokens"] == 17 * ANSWERED
    assert (t["error_rate"], t["cache_hit_rate"]) == (ERRORS / SENT, 1 / SENT)

    keys = {row["name"]: row for row in d["top"]["key"]}
    assert set(keys) == {ME, OTHER}
    assert (keys[ME]["requests"], keys[ME]["errors"], keys[ME]["total_tokens"]) == (6, 1, 17 * 5)
    assert (keys[OTHER]["requests"], keys[OTHER]["errors"], keys[OTHER]["cache_hits"]) == (4, 1, 1)
    models = {row["name"]: row["requests"] for row in d["top"]["model"]}
    assert models == {"llama3.2": 5, "qwen3:8b": 3, "no-such-model": 1, "broken": 1}
    assert d["top"]["model"][0]["name"] == "llama3.2"  # the busiest first

    # Each series adds up, per name, to its row in the tables; nothing is left to "other".
    for dimension, rows in (("key", keys), ("model", None)):
        s = d["series"][dimension]
        assert s["other"] is False and not any(s["requests"][-1])
        for name, requests_by_hour, tokens_by_hour, errors_by_hour in zip(
            s["names"], s["requests"], s["tokens"], s["errors"], strict=False
        ):
            assert len(requests_by_hour) == 24
            expected = (rows or {n["name"]: n for n in d["top"]["model"]})[name]
            assert sum(requests_by_hour) == expected["requests"]
            assert sum(tokens_by_hour) == expected["total_tokens"]
            assert sum(errors_by_hour) == expected["errors"]

    latency = d["latency"]
    assert latency["sample"] == latency["count"] == ANSWERED  # successful requests only
    for measure in ("duration_ms", "first_token_ms"):
        p = latency[measure]
        assert 0 < p["p50"] <= p["p90"] <= p["p99"], (measure, p)
    llama = next(m for m in latency["by_model"] if m["model"] == "llama3.2")
    assert llama["count"] == 5 and llama["first_token_ms"]["p50"] > 0  # its two streams
    qwen = next(m for m in latency["by_model"] if m["model"] == "qwen3:8b")
    assert qwen["first_token_ms"]["p50"] is None  # no stream: no time to a first token

    [backend] = d["backends"]
    assert (backend["name"], backend["type"], backend["status"]) == ("ollama", "ollama", "ok")
    assert "llama3.2:latest" in backend["models"]
    assert d["budgets"] == []


def nearest_rank(values: list[float], p: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1], 1)


def test_the_percentiles_are_those_of_the_recorded_durations(gw, traffic):
    """p50/p90/p99 recomputed from the raw records the ledger serves at /admin/usage/records."""
    records = admin_records(gw, limit="1000")
    assert len(records) == SENT
    ok = [r for r in records if r["status"] < 400 and r["error_type"] is None]
    latency = dashboard(gw, "24h")["latency"]
    for measure in ("duration_ms", "first_token_ms"):
        values = [r[measure] for r in ok if r[measure] is not None]
        expected = {f"p{p}": nearest_rank(values, p) for p in (50, 90, 99)}
        assert latency[measure] == expected, measure
    llama = next(m for m in latency["by_model"] if m["model"] == "llama3.2")
    durations = [r["duration_ms"] for r in ok if r["model"] == "llama3.2"]
    assert llama["duration_ms"]["p90"] == nearest_rank(durations, 90)


def test_names_beyond_the_busiest_eight_are_one_other_series(start_gateway, fake_ollama, tmp_path):
    gw = start_gateway(ledger_env(tmp_path / "relay.db", fake_ollama.url))
    # Twelve models, the first asked 12 times, the next 11, ... the last once: 78 requests.
    sent = 0
    for n in range(12):
        for _ in range(12 - n):
            assert chat(gw, model=f"model-{n:02d}").status_code == 404  # asked, not served
            sent += 1
    wait_until(lambda: dashboard(gw, "24h")["totals"]["requests"] == sent, timeout=15)
    for period in ("24h", "30d"):
        d = dashboard(gw, period)
        top = d["top"]["model"]
        assert [row["name"] for row in top] == [f"model-{n:02d}" for n in range(8)]
        assert [row["requests"] for row in top] == list(range(12, 4, -1))
        s = d["series"]["model"]
        assert s["names"] == [row["name"] for row in top] and s["other"] is True
        assert len(s["requests"]) == 9  # eight names, then the others
        assert sum(s["requests"][-1]) == 4 + 3 + 2 + 1  # the four quietest, together
        assert sum(s["errors"][-1]) == 10 and sum(map(sum, s["requests"])) == sent
        assert d["totals"]["errors"] == sent and d["totals"]["error_rate"] == 1.0


@pytest.mark.parametrize(
    ("period", "bucket", "source", "count"),
    [("7d", "hour", "hourly", 7 * 24), ("30d", "day", "daily", 30)],
)
def test_longer_periods_read_the_roll_ups(gw, traffic, period, bucket, source, count):
    d = dashboard(gw, period)
    assert (d["bucket"], d["source"], len(d["buckets"])) == (bucket, source, count)
    now = datetime.now(UTC)
    last = now.replace(minute=0, second=0, microsecond=0) if bucket == "hour" else now.date()
    assert d["buckets"][-1].removesuffix("Z") in (
        last.isoformat().removesuffix("+00:00"),
        f"{last.isoformat()}T00:00:00",
    )
    t = d["totals"]
    assert (t["requests"], t["errors"], t["cache_hits"]) == (SENT, ERRORS, 1)
    assert t["total_tokens"] == 17 * ANSWERED
    s = d["series"]["key"]
    assert [sum(row) for row in s["requests"]] == [
        {ME: 6, OTHER: 4}[name] for name in s["names"]
    ] + [0]


def test_only_the_admin_reads_it(gw, traffic):
    url = gw.url + "/admin/dashboard.json"
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": API_KEY}):
        r = requests.get(url, params={"period": "nonsense"}, headers=headers, timeout=10)
        assert r.status_code == 403, headers  # refused before the parameter is even read
        assert r.json()["error"]["code"] == "admin_forbidden"
        assert "requests" not in r.text and ME not in r.text
    bad = requests.get(url, params={"period": "1y"}, headers=ADMIN, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "period"
    unknown = requests.get(url, params={"key": ME}, headers=ADMIN, timeout=10)
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "key"


def test_the_page_is_a_shell_under_a_strict_policy(gw):
    r = requests.get(gw.url + "/admin", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["Cache-Control"] == "no-store"
    # No inline script, nothing from another origin, and no data: only a shell.
    assert not re.search(r"<script(?![^>]*\bsrc=)", r.text)
    assert "http://" not in r.text and "https://" not in r.text and ME not in r.text
    for src in re.findall(r'(?:src|href)="([^"]+)"', r.text):
        asset = requests.get(gw.url + src, timeout=10)
        assert asset.status_code == 200, src
    js = requests.get(gw.url + "/admin/static/uplot/uPlot.iife.min.js", timeout=10)
    assert js.headers["Content-Type"].startswith(("text/javascript", "application/javascript"))
    assert js.text.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")


# Drawn series: how many pixels of the first series' colour (#2563eb) each chart's canvas has.
SERIES_PIXELS = """
Object.fromEntries(Object.entries(window.relayDashboard.charts).map(([name, u]) => {
  const c = u.ctx.canvas, px = u.ctx.getImageData(0, 0, c.width, c.height).data;
  let blue = 0, painted = 0;
  for (let i = 0; i < px.length; i += 4) {
    if (px[i + 3] > 0) painted++;
    if (px[i + 3] > 200 && Math.abs(px[i] - 37) < 30 && Math.abs(px[i + 1] - 99) < 30
        && Math.abs(px[i + 2] - 235) < 30) blue++;
  }
  return [name, {series: u.series.length, blue: blue, painted: painted}];
}))
"""


@pytest.mark.browser
def test_the_page_draws_the_charts_in_headless_chromium(gw, traffic, tmp_path):
    browser = Chromium(tmp_path / "profile")
    try:
        browser.navigate(gw.url + "/admin")
        # Loopback is not an allowed address here: the page asks for the token.
        browser.wait_for("document.body.dataset.state === 'token'")
        assert browser.evaluate("document.getElementById('content').hidden") is True
        enter = (
            "document.getElementById('token').value = {};"
            "document.querySelector('#token-form button[type=submit]').click()"
        )
        browser.evaluate(enter.format(json.dumps("not-the-admin-token")))
        browser.wait_for("document.getElementById('status').textContent.includes('refused')")
        assert browser.evaluate("document.body.dataset.state") == "token"
        # The two 403s that made the page ask, without a token and with a wrong one.
        refused = list(browser.errors)
        assert len(refused) == 2, refused
        assert all("403" in e and "/admin/dashboard.json" in e for e in refused)
        browser.evaluate(enter.format(json.dumps(ADMIN_TOKEN)))
        browser.wait_for("document.body.dataset.state === 'ready'")
        drawn = browser.evaluate(SERIES_PIXELS)
        assert drawn["key"]["series"] == 3  # the x axis and the two keys
        assert drawn["model"]["series"] == 5  # the x axis and four models
        for chart in drawn.values():
            assert chart["blue"] > 20 and chart["painted"] > 1000, drawn
        assert browser.evaluate("document.querySelectorAll('canvas').length") == 2
        text = browser.evaluate("document.getElementById('content').innerText")
        assert ME in text and OTHER in text and "llama3.2" in text and "ollama" in text
        assert "No budgets are configured." in text
        # A budget as the gateway will list it, under a name written as text, never as HTML.
        marked = "<img src=x onerror=alert(1)>"
        budget = {
            "key": marked,
            "budget": "tokens_per_day",
            "limit": 1000,
            "spent": 250,
            "remaining": 750,
            "resets_at": "2026-12-01T00:00:00Z",
        }
        browser.evaluate(
            f"window.relayDashboard.data.budgets = [{json.dumps(budget)}];"
            "window.relayDashboard.render()"
        )
        row = browser.evaluate("document.querySelectorAll('#budgets tr')[1].innerText")
        assert marked in row and "tokens per day" in row and "250" in row and "1,000" in row
        assert browser.evaluate("document.querySelectorAll('img').length") == 0
        assert browser.evaluate("document.querySelector('#budgets .bar span').style.width") == "25%"
        assert browser.evaluate("document.getElementById('budgets-none').hidden") is True
        # The token stays in this tab's storage and headers, never in an address.
        stored = browser.evaluate("sessionStorage.getItem('relay-admin-token')")
        assert stored == ADMIN_TOKEN
        assert all(ADMIN_TOKEN not in url for url in browser.requests)

        browser.evaluate("document.querySelector('[data-period=\"7d\"]').click()")
        browser.wait_for("location.search === '?period=7d'")
        browser.wait_for(
            "document.body.dataset.state === 'ready' && window.relayDashboard.data.period === '7d'"
        )
        browser.evaluate("document.querySelector('[data-metric=\"tokens\"]').click()")
        drawn = browser.evaluate(SERIES_PIXELS)
        assert drawn["key"]["blue"] > 20 and drawn["key"]["series"] == 3

        browser.resize(390, 844, mobile=True)  # a phone: nothing wider than the screen
        browser.evaluate("window.dispatchEvent(new Event('resize'))")
        browser.wait_for("window.relayDashboard.charts.key.width <= 390")
        assert browser.evaluate("document.documentElement.scrollWidth") <= 390

        assert browser.errors == refused, browser.errors  # no console error, no CSP refusal
        assert all(url.startswith(gw.url + "/") for url in browser.requests), browser.requests

        # Forget the token: gone from the tab, and the page asks again.
        browser.evaluate("document.getElementById('forget').click()")
        browser.wait_for("document.body.dataset.state === 'token'")
        assert browser.evaluate("sessionStorage.getItem('relay-admin-token')") is None
        assert browser.evaluate("document.getElementById('content').hidden") is True
    finally:
        browser.close()


@pytest.mark.browser
def test_without_the_ledger_the_page_says_usage_is_off(start_gateway, fake_ollama, tmp_path):
    env = {
        "OLLAMA_BASE_URL": fake_ollama.url,
        "RELAY_API_KEYS": API_KEY,
        "RELAY_USAGE": "off",
        "RELAY_METRICS_ALLOW": "127.0.0.1/32",  # an allowed address: no token asked
    }
    gw = start_gateway(env)
    d = dashboard(gw, "7d", headers={})
    assert (d["usage"], d["period"], d["budgets"]) == ("off", "7d", [])
    assert "totals" not in d and d["backends"][0]["status"] == "ok"
    browser = Chromium(tmp_path / "profile")
    try:
        browser.navigate(gw.url + "/admin")
        browser.wait_for("document.body.dataset.state === 'usage-off'")
        text = browser.evaluate("document.body.innerText")
        assert "Usage is off" in text and "RELAY_USAGE=off" in text and "ollama" in text
        assert browser.evaluate("document.getElementById('usage').hidden") is True
        assert browser.errors == []
    finally:
        browser.close()


def made_up(ts: datetime, n: int) -> UsageRecord:
    return a_record(
        ts=ts,
        request_id=f"req_old_{n}",
        key_name="team-a",
        prompt_tokens=10,
        completion_tokens=4,
        cache="MISS",
        duration_ms=100.0 + n,
        client=None,
    )


def test_hourly_roll_ups_are_filled_from_the_records_and_pruned(
    start_gateway, fake_ollama, tmp_path
):
    now = datetime.now(UTC).replace(tzinfo=None)
    ages = [timedelta(hours=h) for h in (1, 5, 30, 100, 24 * 7 - 2)] + [timedelta(days=10)]
    db = tmp_path / "relay.db"
    store = UsageStore.open(f"sqlite:///{db}")
    store.migrate()
    store.write([made_up(now - age, n) for n, age in enumerate(ages)])
    # A ledger written before the hourly roll-ups: version 1, without their table.
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE usage_hourly")
        conn.execute("DELETE FROM schema_version WHERE version = 2")
    store.engine.dispose()

    gw = start_gateway(ledger_env(db, fake_ollama.url))
    assert "usage ledger schema migrated to version 2" in gw.logs()
    day, week = dashboard(gw, "24h")["totals"], dashboard(gw, "7d")["totals"]
    assert (day["requests"], day["prompt_tokens"], day["completion_tokens"]) == (2, 20, 8)
    assert week["requests"] == 5  # all but the one 10 days old
    assert dashboard(gw, "30d")["totals"]["requests"] == 6  # the daily roll-ups: all six
    # The first write prunes: hourly roll-ups older than 8 days go, daily ones stay.
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO usage_hourly SELECT datetime(hour, '-30 days') AS hour, key_name, "
            "model, requests, errors, streamed, abandoned, cache_hits, prompt_tokens, "
            "completion_tokens, reasoning_tokens, cached_tokens, duration_ms FROM usage_hourly"
        )
    assert chat(gw).status_code == 200
    wait_until(lambda: dashboard(gw, "24h")["totals"]["requests"] == 3, timeout=10)

    def hours() -> int:
        return db_rows(db, "SELECT count(*) AS n FROM usage_hourly")[0]["n"]  # type: ignore[no-any-return]

    wait_until(lambda: hours() == 6, timeout=10)  # the five backfilled hours and the new one
    assert db_rows(db, "SELECT count(*) AS n FROM usage_daily")[0]["n"] >= 6
