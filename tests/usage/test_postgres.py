"""The usage ledger on a real PostgreSQL (tests/postgres.py: a private cluster): gateways sharing
one database lose no record, migrations run once when gateways start together, a database that
goes away and comes back loses nothing that fit in the queue, the password never reaches a log,
and the reading endpoints answer the same on PostgreSQL as on SQLite (docs/operations.md
"Usage", docs/design.md §10)."""

from __future__ import annotations

import csv
import io
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
import requests

from services.usage.store import UsageStore
from tests.conftest import API_KEY, wait_until
from tests.fakes.ollama import FakeOllama
from tests.postgres import PASSWORD, PostgresCluster
from tests.usage.conftest import (
    ADMIN,
    KINDS,
    OTHER_KEY,
    admin_total,
    chat,
    ledger_env,
    mixed_traffic,
    one_request,
    run_cli,
    script_mixed,
)

pytestmark = pytest.mark.postgres

SECRETS = (PASSWORD, quote(PASSWORD, safe=""))  # as written, and as the URL carries it


def dbname(url: str) -> str:
    return url.rsplit("/", 1)[1]


def no_secret(text: str) -> bool:
    return not any(secret in text for secret in SECRETS)


def test_two_gateways_share_one_database_and_lose_nothing(
    start_gateway, ollama: FakeOllama, postgres: PostgresCluster
):
    url = postgres.new_database()
    env = ledger_env(url, ollama.url, RELAY_WORKERS="2", RELAY_CACHE_TTL="0")
    first = start_gateway(env)
    # postgres:// (as some hosting services write it) means the same.
    second = start_gateway(env | {"RELAY_DATABASE_URL": url.replace("postgresql:", "postgres:")})
    script_mixed(ollama)
    expected = mixed_traffic([first.url, second.url], 500)
    wait_until(lambda: admin_total(first.url)["requests"] == 500, timeout=30)
    for gw in (first, second):  # either gateway reads everything written by both
        sums = admin_total(gw.url)
        assert {name: sums[name] for name in expected} == expected
    assert expected["errors"] == 200 and expected["streamed"] == 100
    name = dbname(url)
    assert postgres.query(name, "SELECT count(*) FROM usage_records") == [(500,)]
    assert postgres.query(name, "SELECT sum(requests) FROM usage_daily") == [(500,)]
    distinct = postgres.query(name, "SELECT count(DISTINCT request_id) FROM usage_records")
    assert distinct == [(500,)]  # each request once: none lost, none written twice
    assert postgres.query(name, "SELECT version FROM schema_version ORDER BY 1") == [(1,), (2,)]
    assert postgres.query(name, "SELECT sum(requests) FROM usage_hourly") == [(500,)]
    for gw in (first, second):
        assert "usage ledger could not" not in gw.logs()
        assert "cannot reach its database" not in gw.logs()
        assert no_secret(gw.logs())


def test_migrations_run_once_when_gateways_start_together(
    start_gateway, ollama: FakeOllama, postgres: PostgresCluster
):
    url = postgres.new_database()
    env = ledger_env(url, ollama.url, RELAY_WORKERS="2")
    # Four workers on a new database at once: each takes the advisory lock, one creates.
    gateways = [start_gateway(env, wait=False) for _ in range(2)]
    for gw in gateways:
        gw.wait_ready(timeout=60)  # four workers importing at once on a shared machine
    logs = "".join(gw.logs() for gw in gateways)
    assert logs.count("usage ledger schema migrated to version") == 1
    assert "usage ledger schema migrated to version 2" in logs
    versions = postgres.query(dbname(url), "SELECT version FROM schema_version ORDER BY 1")
    assert versions == [(1,), (2,)]
    ids = [chat(gw).headers["X-Request-ID"] for gw in gateways]
    wait_until(lambda: admin_total(gateways[0].url)["requests"] == 2, timeout=10)
    written = postgres.query(dbname(url), "SELECT request_id FROM usage_records")
    assert sorted(r[0] for r in written) == sorted(ids)
    # Once more, from here: nothing left to apply, the data kept.
    store = UsageStore.open(url)
    assert store.migrate() == []
    assert store.version() == 2
    store.engine.dispose()
    third = start_gateway(env)
    assert chat(third).status_code == 200
    assert "migrated" not in third.logs()


@pytest.fixture
def own_postgres():
    """A cluster of this test's own, which it may stop and start."""
    cluster = PostgresCluster()
    yield cluster
    cluster.close()


def dropped(gw) -> int:
    text = requests.get(gw.url + "/metrics", headers=ADMIN, timeout=10).text
    found = re.search(r'relay_usage_dropped_total\{reason="queue_full"\} (\d+)', text)
    return int(found.group(1)) if found else 0


def test_a_database_that_goes_away_keeps_replies_flowing_and_records_queued(
    start_gateway, ollama: FakeOllama, own_postgres: PostgresCluster
):
    url = own_postgres.new_database()
    name = dbname(url)
    env = ledger_env(url, ollama.url, RELAY_USAGE_QUEUE="20", RELAY_CACHE_TTL="0")
    gw = start_gateway(env)
    script_mixed(ollama)
    before = [chat(gw).headers["X-Request-ID"] for _ in range(3)]
    wait_until(lambda: own_postgres.query(name, "SELECT count(*) FROM usage_records")[0][0] == 3)

    own_postgres.stop()  # the database goes away mid-run
    during: list[str] = []
    for i in range(40):
        started = time.monotonic()
        r = one_request(gw.url, KINDS[i % 3], API_KEY)  # chat, streamed chat, embeddings
        assert r.status_code == 200, r.text  # replies keep flowing
        assert time.monotonic() - started < 2  # and never wait for the database
        during.append(r.headers["X-Request-ID"])
        if i == 5:
            time.sleep(2.5)  # the writer tries again, more than once
    # Reading the ledger says the database is away, in the face's envelope.
    r = requests.get(gw.url + "/admin/usage", headers=ADMIN, timeout=30)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "usage_database_unavailable"
    assert r.headers["Retry-After"] == "5" and no_secret(r.text)
    lost = dropped(gw)
    assert lost >= 1  # 40 records do not fit in a queue of 20: the rest are counted

    own_postgres.start()  # it comes back: what was queued is written
    kept = len(during) - lost

    def written() -> bool:
        return own_postgres.query(name, "SELECT count(*) FROM usage_records")[0][0] == 3 + kept

    wait_until(written, timeout=15)
    ids = {r[0] for r in own_postgres.query(name, "SELECT request_id FROM usage_records")}
    assert set(before) <= ids and len(ids & set(during)) == kept
    assert kept >= 20  # the whole queue, and the batch the writer held
    assert own_postgres.query(name, "SELECT sum(requests) FROM usage_daily") == [(3 + kept,)]
    logs = gw.logs()
    # One line when it goes, one when it is back; one for the full queue; never the password.
    assert logs.count("usage ledger cannot reach its database") == 1, logs
    assert "Connection refused" in logs
    assert logs.count("usage ledger database is back") == 1
    assert logs.count("usage ledger queue is full") == 1
    assert no_secret(logs)
    # And on: new records are written as before.
    after = chat(gw).headers["X-Request-ID"]
    wait_until(
        lambda: own_postgres.query(name, "SELECT count(*) FROM usage_records")[0][0] > 3 + kept
    )
    assert after in {r[0] for r in own_postgres.query(name, "SELECT request_id FROM usage_records")}


def test_a_wrong_password_stops_the_worker_without_saying_it(
    start_gateway, ollama: FakeOllama, postgres: PostgresCluster
):
    url = postgres.new_database()
    wrong = postgres.url(dbname(url), password=PASSWORD + "-wrong")
    gw = start_gateway(ledger_env(wrong, ollama.url), wait=False)
    gw.proc.wait(30)
    assert gw.proc.returncode != 0
    logs = gw.logs()
    assert "usage ledger: cannot open its database" in logs
    assert 'password authentication failed for user "relay"' in logs
    assert no_secret(logs)
    # The command line (which builds the app, hence the ledger) says why without it either.
    result = run_cli(wrong)
    assert result.returncode != 0
    assert "usage ledger: cannot open its database" in result.stderr
    assert 'password authentication failed for user "relay"' in result.stderr
    assert no_secret(result.stdout + result.stderr)


def test_the_reading_endpoints_answer_alike_on_sqlite_and_postgresql(
    start_gateway, ollama: FakeOllama, postgres: PostgresCluster, tmp_path
):
    script_mixed(ollama)
    gateways = {
        "sqlite": start_gateway(ledger_env(tmp_path / "relay.db", ollama.url)),
        "postgresql": start_gateway(ledger_env(postgres.new_database(), ollama.url)),
    }
    own = {"Authorization": f"Bearer {OTHER_KEY}"}
    for gw in gateways.values():  # the same requests, one at a time, to each
        for i in range(30):
            kind = KINDS[i % len(KINDS)]
            one_request(gw.url, kind, API_KEY if i % 3 else OTHER_KEY)
        # A model name is the caller's text; PostgreSQL's cannot hold NUL, and one such record
        # must not make it refuse the others written with it.
        nul = {"model": "llama\u0000x", "messages": [{"role": "user", "content": "hi"}]}
        r = requests.post(gw.url + "/v1/chat/completions", json=nul, headers=own, timeout=10)
        assert r.status_code == 404, r.text
        wait_until(lambda gw=gw: admin_total(gw.url)["requests"] == 31, timeout=10)

    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    reads: list[tuple[str, dict[str, str], dict[str, str]]] = [
        ("/admin/usage", {"group_by": "key,model,day,backend,endpoint"}, ADMIN),
        ("/admin/usage", {"group_by": "key,model", "since": since}, ADMIN),  # the raw records
        ("/admin/usage", {"group_by": "endpoint", "model": "llama3.2"}, ADMIN),
        ("/admin/usage", {"group_by": "key,endpoint", "format": "csv"}, ADMIN),
        ("/admin/usage/records", {"limit": "1000"}, ADMIN),
        ("/admin/usage/records", {"limit": "1000", "format": "csv"}, ADMIN),
        ("/v1/usage", {"group_by": "model,day"}, own),
        ("/v1/usage", {"group_by": "endpoint", "since": since}, own),
        ("/v1/usage/records", {"limit": "5"}, own),
    ]
    for path, params, headers in reads:
        answers = []
        for gw in gateways.values():
            r = requests.get(gw.url + path, params=params, headers=headers, timeout=10)
            assert r.status_code == 200, r.text
            answers.append(comparable(r))
        assert answers[0] == answers[1], (path, params)
        assert answers[0], (path, params)  # something was compared
    # The dashboard's data (docs/design.md §10.4): totals and top names from the hourly and the
    # daily roll-ups, the latency sample's size from the raw records.
    for period in ("24h", "7d", "30d"):
        answers = []
        for gw in gateways.values():
            r = requests.get(
                gw.url + "/admin/dashboard.json", params={"period": period}, headers=ADMIN
            )
            assert r.status_code == 200, r.text
            body = r.json()
            answers.append(
                {
                    "totals": strip(body["totals"]),
                    "top": {d: [strip(row) for row in rows] for d, rows in body["top"].items()},
                    "sample": body["latency"]["sample"],
                }
            )
        assert answers[0] == answers[1], period
        assert answers[0]["totals"]["requests"] == 31
    models = requests.get(
        gateways["postgresql"].url + "/admin/usage", params={"group_by": "model"}, headers=ADMIN
    ).json()["data"]
    assert "llama\ufffdx" in [row["model"] for row in models]


# What differs between two runs of the same traffic: when and how fast, and the ids.
VARYING = {"ts", "request_id", "duration_ms", "first_token_ms", "mean_duration_ms"}


def strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in VARYING}


def comparable(r: requests.Response) -> Any:
    if r.headers["Content-Type"].startswith("text/csv"):
        rows = list(csv.DictReader(io.StringIO(r.text)))
        return [{k: v for k, v in row.items() if k not in VARYING} for row in rows]
    body = r.json()
    return {
        **{k: v for k, v in body.items() if k != "data"},
        "data": [{k: v for k, v in row.items() if k not in VARYING} for row in body["data"]],
    }


def test_a_writer_waiting_for_postgresql_does_not_hold_up_the_worker(
    start_gateway, ollama: FakeOllama, postgres: PostgresCluster
):
    url = postgres.new_database()
    name = dbname(url)
    gw = start_gateway(ledger_env(url, ollama.url, RELAY_CACHE_TTL="0"))  # one worker
    script_mixed(ollama)
    assert chat(gw).status_code == 200
    wait_until(lambda: postgres.query(name, "SELECT count(*) FROM usage_records") == [(1,)])
    with postgres.admin(name) as conn:
        # The writer's next batch waits for this lock, in the worker's only process.
        conn.autocommit = False
        conn.execute("LOCK TABLE usage_records IN ACCESS EXCLUSIVE MODE")
        assert chat(gw).status_code == 200
        time.sleep(0.5)  # the writer is now waiting on PostgreSQL
        for _ in range(5):
            started = time.monotonic()
            assert chat(gw).status_code == 200
            assert time.monotonic() - started < 2  # the worker's other greenlets run meanwhile
        assert postgres.query(name, "SELECT count(*) FROM pg_locks WHERE NOT granted") != [(0,)]
        conn.rollback()  # the lock goes: the waiting batch is written
    wait_until(lambda: postgres.query(name, "SELECT count(*) FROM usage_records") == [(7,)])


def test_a_batch_postgresql_refuses_is_counted_and_logged_without_the_password(
    start_gateway, ollama: FakeOllama, postgres: PostgresCluster
):
    url = postgres.new_database()
    name = dbname(url)
    gw = start_gateway(ledger_env(url, ollama.url, RELAY_CACHE_TTL="0"))
    script_mixed(ollama)
    assert chat(gw).status_code == 200
    wait_until(lambda: postgres.query(name, "SELECT count(*) FROM usage_records") == [(1,)])
    postgres.query(name, "REVOKE INSERT ON usage_records FROM relay")
    replies = [chat(gw) for _ in range(3)]
    assert [r.status_code for r in replies] == [200] * 3

    def counted() -> bool:
        text = requests.get(gw.url + "/metrics", headers=ADMIN, timeout=10).text
        found = re.search(r'relay_usage_dropped_total\{reason="write_failed"\} (\d+)', text)
        return bool(found) and int(found.group(1)) >= 1

    wait_until(counted, timeout=10)
    logs = gw.logs()
    assert "usage ledger could not write" in logs and "InsufficientPrivilege" in logs
    assert "cannot reach its database" not in logs  # refused, not away: not kept for later
    assert no_secret(logs)
    postgres.query(name, "GRANT INSERT ON usage_records TO relay")
    assert chat(gw).status_code == 200  # and the next records are written again
    wait_until(lambda: postgres.query(name, "SELECT count(*) FROM usage_records")[0][0] >= 2)


def test_a_small_pool_serves_many_concurrent_reads_without_opening_more(
    start_gateway, ollama: FakeOllama, postgres: PostgresCluster
):
    url = postgres.new_database()
    env = ledger_env(url, ollama.url, RELAY_DATABASE_POOL_SIZE="1", RELAY_CACHE_TTL="0")
    gw = start_gateway(env)  # one worker, one connection for its writer and every reader
    script_mixed(ollama)

    def read(i: int) -> int:
        if i % 4 == 0:
            return chat(gw).status_code
        r = requests.get(gw.url + "/admin/usage", params={"group_by": "key"}, headers=ADMIN)
        return r.status_code

    with ThreadPoolExecutor(20) as pool:  # the worker's greenlets take turns on the connection
        assert set(pool.map(read, range(80))) == {200}
    wait_until(lambda: admin_total(gw.url)["requests"] == 20, timeout=10)
    sql = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{dbname(url)}'"
    assert postgres.query("postgres", sql) == [(1,)]


def test_sigterm_writes_what_is_queued_into_postgresql(
    start_gateway, ollama: FakeOllama, postgres: PostgresCluster
):
    url = postgres.new_database()
    # The writer would wait ten minutes: only the exit can write these.
    gw = start_gateway(ledger_env(url, ollama.url, RELAY_USAGE_FLUSH_SECONDS="600"))
    script_mixed(ollama)
    ids = [chat(gw).headers["X-Request-ID"] for _ in range(5)]
    assert postgres.query(dbname(url), "SELECT count(*) FROM usage_records") == [(0,)]
    gw.proc.send_signal(signal.SIGTERM)
    gw.proc.wait(40)
    written = postgres.query(dbname(url), "SELECT request_id FROM usage_records")
    assert sorted(r[0] for r in written) == sorted(ids)
    assert "usage ledger wrote 5 queued records at exit" in gw.logs()
