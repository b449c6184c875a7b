"""The ledger across processes: two workers on one SQLite file, RELAY_USAGE=off, the queue
flushed on SIGTERM, a full queue dropping and counting, migrations applied once."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from services.usage.record import UsageRecord
from services.usage.store import UsageStore
from tests.conftest import API_KEY, wait_until
from tests.fakes.ollama import FakeOllama
from tests.usage.conftest import (
    ADMIN,
    chat,
    db_rows,
    ledger_env,
    mixed_traffic,
    script_mixed,
)
from tests.usage.records import a_record


def total(gw, **params: str) -> dict:
    r = requests.get(gw.url + "/admin/usage", params={"group_by": "", **params}, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()["data"][0] if r.json()["data"] else {"requests": 0}


def sigterm(gw) -> None:
    """Stop the gateway as systemd and docker do, and wait for it to exit."""
    gw.proc.send_signal(signal.SIGTERM)
    gw.proc.wait(40)


def test_two_workers_write_one_file_and_lose_nothing(start_gateway, ollama: FakeOllama, tmp_path):
    db = tmp_path / "relay.db"
    gw = start_gateway(ledger_env(db, ollama.url, RELAY_WORKERS="2", RELAY_CACHE_TTL="0"))
    script_mixed(ollama)
    expected = mixed_traffic([gw.url], 500)
    wait_until(lambda: total(gw)["requests"] == expected["requests"], timeout=30)
    sums = total(gw)
    assert {name: sums[name] for name in expected} == expected
    assert expected["errors"] == 200 and expected["prompt_tokens"] > 0
    # The roll-ups and the raw rows agree (date bounds read the roll-ups).
    assert len(db_rows(db)) == 500
    assert db_rows(db, "SELECT sum(requests) AS n FROM usage_daily")[0]["n"] == 500
    assert db_rows(db, "SELECT sum(requests) AS n FROM usage_hourly")[0]["n"] == 500
    assert [r["version"] for r in db_rows(db, "SELECT version FROM schema_version")] == [1, 2]
    assert "database is locked" not in gw.logs()
    assert "usage ledger could not" not in gw.logs()


def test_usage_off_writes_nothing(start_gateway, ollama: FakeOllama, tmp_path):
    db = tmp_path / "off" / "relay.db"
    gw = start_gateway(ledger_env(db, ollama.url, RELAY_USAGE="off"))
    assert chat(gw).status_code == 200
    for path, headers in (
        ("/admin/usage", ADMIN),
        ("/v1/usage", {"Authorization": f"Bearer {API_KEY}"}),
    ):
        r = requests.get(gw.url + path, headers=headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "usage_off"
    sigterm(gw)
    assert not db.parent.exists()


def test_sigterm_writes_what_is_queued(start_gateway, ollama: FakeOllama, tmp_path):
    db = tmp_path / "relay.db"
    # The writer would wait ten minutes: only the exit can write these.
    gw = start_gateway(ledger_env(db, ollama.url, RELAY_USAGE_FLUSH_SECONDS="600"))
    ids = [chat(gw).headers["X-Request-ID"] for _ in range(5)]
    assert db_rows(db) == []
    sigterm(gw)
    assert sorted(r["request_id"] for r in db_rows(db)) == sorted(ids)
    assert "usage ledger wrote 5 queued records at exit" in gw.logs()


def test_a_full_queue_drops_counts_and_logs_once(start_gateway, ollama: FakeOllama, tmp_path):
    db = tmp_path / "relay.db"
    env = ledger_env(db, ollama.url, RELAY_USAGE_FLUSH_SECONDS="600", RELAY_USAGE_QUEUE="2")
    gw = start_gateway(env)
    replies = [chat(gw) for _ in range(6)]
    assert [r.status_code for r in replies] == [200] * 6  # replies never wait for the ledger
    metrics = requests.get(gw.url + "/metrics", headers=ADMIN).text
    assert 'relay_usage_dropped_total{reason="queue_full"} 4.0' in metrics
    sigterm(gw)
    assert [r["request_id"] for r in db_rows(db)] == [
        r.headers["X-Request-ID"] for r in replies[:2]
    ]
    assert gw.logs().count("usage ledger queue is full") == 1


def test_migrations_run_once_and_keep_the_data(start_gateway, ollama: FakeOllama, tmp_path):
    db = tmp_path / "relay.db"
    first = start_gateway(ledger_env(db, ollama.url))
    request_id = chat(first).headers["X-Request-ID"]
    wait_until(lambda: db_rows(db), timeout=10)
    sigterm(first)
    assert "usage ledger schema migrated to version 2" in first.logs()
    second = start_gateway(ledger_env(db, ollama.url, RELAY_WORKERS="2"))
    assert chat(second).status_code == 200
    wait_until(lambda: len(db_rows(db)) == 2, timeout=10)
    assert "migrated" not in second.logs()
    assert [r["version"] for r in db_rows(db, "SELECT version FROM schema_version")] == [1, 2]
    assert request_id in {r["request_id"] for r in db_rows(db)}


def test_a_database_that_cannot_be_opened_stops_the_worker_with_why(start_gateway, ollama):
    gw = start_gateway(ledger_env(Path("/proc/relay-usage/relay.db"), ollama.url), wait=False)
    gw.proc.wait(30)
    assert gw.proc.returncode != 0
    assert "usage ledger: cannot open its database" in gw.logs()
    assert "RELAY_USAGE=off" in gw.logs()


def test_retention_prunes_raw_records_and_keeps_the_daily_roll_ups(
    start_gateway, ollama: FakeOllama, tmp_path
):
    db = tmp_path / "relay.db"
    store = UsageStore.open(f"sqlite:///{db}")
    store.migrate()
    now = datetime.now(UTC).replace(tzinfo=None)
    ages = {"old": 40, "older": 100, "ancient": 500}  # days
    store.write([old_record(f"req_{name}", now - timedelta(days=d)) for name, d in ages.items()])
    store.engine.dispose()
    env = ledger_env(db, ollama.url, RELAY_USAGE_RETENTION_DAYS="30")
    env |= {"RELAY_USAGE_DAILY_RETENTION_DAYS": "365", "RELAY_METRICS_ALLOW": "127.0.0.1"}
    gw = start_gateway(env)
    fresh = chat(gw).headers["X-Request-ID"]  # the first write prunes
    kept = [(now - timedelta(days=d)).date().isoformat() for d in (100, 40, 0)]

    def pruned() -> bool:
        days = [r["day"] for r in db_rows(db, "SELECT day FROM usage_daily ORDER BY day")]
        return [r["request_id"] for r in db_rows(db)] == [fresh] and days == kept

    wait_until(pruned, timeout=10)  # raw rows past 30 days and roll-ups past 365 are gone
    # Date bounds read the roll-ups, which reach back past the raw records; loopback is an
    # allowed address here, so no token is needed.
    since = (now - timedelta(days=120)).date().isoformat()
    r = requests.get(gw.url + "/admin/usage", params={"group_by": "day", "since": since})
    assert r.status_code == 200 and r.json()["source"] == "daily"
    assert [row["requests"] for row in r.json()["data"]] == [1, 1, 1]
    assert "usage ledger pruned 3 records older than 30 days" in gw.logs()


def old_record(request_id: str, ts: datetime) -> UsageRecord:
    return a_record(
        ts=ts,
        request_id=request_id,
        key_name="team-old",
        prompt_tokens=10,
        completion_tokens=2,
        duration_ms=5.0,
    )


def test_a_database_url_relay_cannot_use_stops_start_up_in_one_line(start_gateway, ollama):
    env = ledger_env(Path("unused.db"), ollama.url)
    env["RELAY_DATABASE_URL"] = "mysql://relay:secret-password@db.example/relay"
    gw = start_gateway(env, wait=False)
    assert gw.proc.wait(30) == 2
    assert "configuration error: RELAY_DATABASE_URL must be a sqlite:/// URL" in gw.logs()
    assert "or a postgresql://user:password@host:5432/database URL" in gw.logs()
    assert "secret-password" not in gw.logs()
