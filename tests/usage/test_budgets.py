"""Budgets through HTTP, under real gunicorn with two gevent workers and the fake Ollama: a
requests budget admits N and refuses the rest with 429 insufficient_quota in every face's
envelope, a tokens budget, the overshoot bound under concurrent requests, the reset time, a
restart, and fail open / closed with the database unreadable (docs/access.md "Budgets").

The database is a fixture parameter (`database`): SQLite now; PostgreSQL joins the list."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from tests.conftest import API_KEY, ROOT, wait_until, write_config
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai_upstream import FakeOpenAI
from tests.postgres import PostgresCluster
from tests.usage.conftest import ADMIN, ADMIN_TOKEN

SECRETS = {
    name: f"sk-budget-{name}-{uuid.uuid4().hex[:12]}"
    for name in ("capped", "monthly", "tokens", "burst", "spent", "free", "faces")
}
KEYS_TOML = """
[keys.capped]
env = "RELAY_KEY_CAPPED"
budget_requests_per_day = 3

[keys.faces]
env = "RELAY_KEY_FACES"
budget_requests_per_day = 1

[keys.monthly]
env = "RELAY_KEY_MONTHLY"
budget_requests_per_month = 1

[keys.tokens]
env = "RELAY_KEY_TOKENS"
budget_tokens_per_day = 25

[keys.burst]
env = "RELAY_KEY_BURST"
budget_requests_per_day = 4

[keys.spent]
env = "RELAY_KEY_SPENT"
budget_requests_per_day = 1

[keys.free]
env = "RELAY_KEY_FREE"
"""
WORKERS = 2  # per gateway; every test here runs two


@dataclass
class Database:
    """The ledger's database for a test, and a way to make it unreadable and readable again."""

    url: str
    make_unreadable: Callable[[], None]
    make_readable: Callable[[], None]


def _sqlite(tmp: Path) -> Database:
    path = tmp / "relay.db"

    def rename(old: str, new: str) -> None:
        # The daily roll-ups gone: every read of a budget (and every write) fails at once, as
        # a broken or missing database does; renamed back, they work again.
        with sqlite3.connect(path, timeout=10) as conn:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")

    return Database(
        f"sqlite:///{path}",
        lambda: rename("usage_daily", "usage_daily_away"),
        lambda: rename("usage_daily_away", "usage_daily"),
    )


def _postgresql(cluster: PostgresCluster) -> Database:
    url = cluster.new_database()
    name = url.rsplit("/", 1)[1]

    def rename(old: str, new: str) -> None:
        cluster.query(name, f"ALTER TABLE {old} RENAME TO {new}")

    return Database(
        url,
        lambda: rename("usage_daily", "usage_daily_away"),
        lambda: rename("usage_daily_away", "usage_daily"),
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "postgresql":  # the session's private cluster, a new database of it
        return _postgresql(request.getfixturevalue("postgres"))
    return _sqlite(tmp_path)


def env_for(db: Database, config: str, ollama_url: str, **extra: str) -> dict[str, str]:
    return {
        "OLLAMA_BASE_URL": ollama_url,
        "RELAY_CONFIG": config,
        "RELAY_DATABASE_URL": db.url,
        "RELAY_USAGE_FLUSH_SECONDS": "0.05",
        "RELAY_METRICS_TOKEN": ADMIN_TOKEN,
        "RELAY_METRICS_ALLOW": "192.0.2.1/32",
        "RELAY_CACHE_TTL": "0",
        "RELAY_WORKERS": str(WORKERS),
        **{f"RELAY_KEY_{name.upper()}": secret for name, secret in SECRETS.items()},
        **extra,
    }


@pytest.fixture
def config(tmp_path: Path) -> str:
    return write_config(tmp_path / "relay.toml", KEYS_TOML)


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


def question() -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Say hi {uuid.uuid4()}"}]


def openai_chat(gw: Any, name: str) -> requests.Response:
    return requests.post(
        gw.url + "/v1/chat/completions",
        json={"model": "llama3.2", "messages": question()},
        headers=auth(name),
        timeout=30,
    )


def anthropic_message(gw: Any, name: str) -> requests.Response:
    return requests.post(
        gw.url + "/v1/messages",
        json={"model": "llama3.2", "max_tokens": 50, "messages": question()},
        headers={"x-api-key": SECRETS[name], "anthropic-version": "2023-06-01"},
        timeout=30,
    )


def ollama_chat(gw: Any, name: str) -> requests.Response:
    return requests.post(
        gw.url + "/api/chat",
        json={"model": "llama3.2", "messages": question(), "stream": False},
        headers=auth(name),
        timeout=30,
    )


FACES = (openai_chat, anthropic_message, ollama_chat)


def settle() -> None:
    """Long enough for a finished request's record to be written (flush 0.05 s) and read."""
    time.sleep(0.3)


def next_midnight() -> datetime:
    today = datetime.now(UTC).date()
    return datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)


def next_month() -> datetime:
    today = datetime.now(UTC).date()
    year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def check_refusal(r: requests.Response, reset: datetime) -> str:
    """A budget's 429: Retry-After until the reset, no retry, the reset named; its message."""
    assert r.status_code == 429, r.text
    assert r.headers["x-should-retry"] == "false"
    wait = (reset - datetime.now(UTC)).total_seconds()
    assert abs(int(r.headers["Retry-After"]) - wait) < 30, (r.headers["Retry-After"], wait)
    body = r.json()
    message = body["error"] if isinstance(body["error"], str) else body["error"]["message"]
    assert reset.isoformat().replace("+00:00", "Z") in message, message
    return str(message)


def metric(gw: Any, key: str, budget: str) -> float:
    text = requests.get(gw.url + "/metrics", headers=ADMIN, timeout=10).text
    line = rf'relay_budget_refused_total{{budget="{budget}",key="{key}"}} ([0-9.e+]+)'
    found = re.search(line, text)
    return float(found.group(1)) if found else 0.0


def own_budgets(gw: Any, name: str) -> dict[str, Any]:
    r = requests.get(gw.url + "/v1/usage", headers=auth(name), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["budgets"]  # type: ignore[no-any-return]


@pytest.fixture
def gateway_on(
    start_gateway: Callable[..., Any], database: Database, config: str, ollama: FakeOllama
) -> Callable[..., Any]:
    def start(**extra: str) -> Any:
        return start_gateway(env_for(database, config, ollama.url, **extra))

    return start


def test_a_requests_budget_admits_n_and_refuses_the_rest_in_each_face(
    gateway_on: Callable[..., Any], ollama: FakeOllama
) -> None:
    # Read the ledger at every admission (no cache), so both workers see every earlier request.
    gw = gateway_on(RELAY_BUDGET_CACHE_SECONDS="0")
    ollama.script("llama3.2", prompt_eval_count=3, eval_count=2)
    for face in FACES:  # three requests, one per face, against a budget of three
        r = face(gw, "capped")
        assert r.status_code == 200, r.text
        settle()
    calls = len(ollama.requests)
    assert calls == 3

    reset = next_midnight()
    # The fourth, on every face: refused before any backend call, in the face's own envelope.
    r = openai_chat(gw, "capped")
    message = check_refusal(r, reset)
    assert r.json()["error"]["type"] == "insufficient_quota"
    assert r.json()["error"]["code"] == "insufficient_quota"
    assert "used 3 of its 3 requests per day" in message and "'capped'" in message
    r = anthropic_message(gw, "capped")
    check_refusal(r, reset)
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "rate_limit_error"
    assert r.headers["request-id"]
    r = ollama_chat(gw, "capped")
    check_refusal(r, reset)
    assert set(r.json()) == {"error"}
    # Streams, embeddings and the Responses API are refused the same way (open_call).
    for path, body in (
        ("/v1/chat/completions", {"model": "llama3.2", "messages": question(), "stream": True}),
        ("/v1/embeddings", {"model": "llama3.2", "input": "hi"}),
        ("/v1/responses", {"model": "llama3.2", "input": "hi"}),
        ("/api/generate", {"model": "llama3.2", "prompt": "hi"}),
    ):
        r = requests.post(gw.url + path, json=body, headers=auth("capped"), timeout=30)
        assert r.status_code == 429, (path, r.text)
    assert len(ollama.requests) == calls  # no refused request reached the backend

    # The official SDK: RateLimitError with OpenAI's code, and no retry (x-should-retry).
    before = metric(gw, "capped", "requests_per_day")
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=SECRETS["capped"], max_retries=2)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="llama3.2", messages=question())  # type: ignore[arg-type]
    assert time.monotonic() - started < 2  # not retried after 0.5 s, 1 s backoffs
    assert caught.value.code == "insufficient_quota"
    assert metric(gw, "capped", "requests_per_day") == before + 1

    # Another key is untouched; the capped key sees its budget spent in /v1/usage.
    assert openai_chat(gw, "free").status_code == 200
    shown = own_budgets(gw, "capped")["requests_per_day"]
    assert shown["limit"] == 3 and shown["spent"] == 3 and shown["remaining"] == 0
    assert shown["resets_at"] == reset.isoformat().replace("+00:00", "Z")
    assert own_budgets(gw, "free") == {}

    # A month's budget names the first of next month.
    assert openai_chat(gw, "monthly").status_code == 200
    settle()
    check_refusal(openai_chat(gw, "monthly"), next_month())


def test_a_tokens_budget_counts_what_requests_used(
    gateway_on: Callable[..., Any], ollama: FakeOllama
) -> None:
    gw = gateway_on(RELAY_BUDGET_CACHE_SECONDS="0")
    ollama.script("llama3.2", prompt_eval_count=6, eval_count=4)  # 10 tokens a request
    codes = []
    for _ in range(5):
        codes.append(openai_chat(gw, "tokens").status_code)
        settle()
    # Admitted while under 25 tokens: 0, 10, 20; the fourth finds 30 spent. A request is
    # admitted on what is known before it runs, so the last one may take the sum past the
    # budget by its own tokens, never more.
    assert codes == [200, 200, 200, 429, 429]
    shown = own_budgets(gw, "tokens")["tokens_per_day"]
    assert shown == {
        "limit": 25,
        "spent": 30,
        "remaining": 0,
        "resets_at": next_midnight().isoformat().replace("+00:00", "Z"),
    }
    r = requests.get(gw.url + "/admin/budgets", headers=ADMIN, timeout=10)
    assert r.status_code == 200
    listed = {row["key"]: row for row in r.json()["data"]}
    assert "free" not in listed  # no budget, not listed
    assert listed["tokens"]["budgets"]["tokens_per_day"]["spent"] == 30
    assert listed["capped"]["budgets"]["requests_per_day"]["remaining"] == 3
    # Like /admin/usage: nothing without the admin token or an allowed address.
    assert requests.get(gw.url + "/admin/budgets", timeout=10).status_code == 403
    # The dashboard's data has one row per budget of a key.
    r = requests.get(gw.url + "/admin/dashboard.json", headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    rows = [row for row in r.json()["budgets"] if row["key"] == "tokens"]
    assert rows == [{"key": "tokens", "budget": "tokens_per_day", **shown}]


def test_the_overshoot_bound_holds_with_concurrent_requests_on_two_workers(
    gateway_on: Callable[..., Any], ollama: FakeOllama
) -> None:
    # The default cache (2 s): a worker decides on what it read and what it counted itself.
    gw = gateway_on()
    gate = threading.Event()
    ollama.script("llama3.2", gate=gate, prompt_eval_count=1, eval_count=1)
    budget, sent = 4, 16

    def one(_: int) -> int:
        return openai_chat(gw, "burst").status_code

    with ThreadPoolExecutor(sent) as pool:
        futures = [pool.submit(one, i) for i in range(sent)]
        # Every request arrives while none has finished: the admitted ones wait in the fake.
        wait_until(lambda: len(ollama.requests) + sum(f.done() for f in futures) >= sent, 15)
        gate.set()
        codes = [f.result() for f in futures]
    admitted = codes.count(200)
    assert set(codes) <= {200, 429}
    # docs/access.md "Budgets": each worker never admits past the budget on its own count, so
    # with P processes (workers × gateways) at most P × budget; the budget itself always.
    assert budget <= admitted <= WORKERS * budget, codes
    assert admitted == len(ollama.requests)

    # Once written and read again (flush 0.05 s + cache 2 s), every worker refuses.
    time.sleep(2.5)
    for _ in range(4):
        assert openai_chat(gw, "burst").status_code == 429
    shown = own_budgets(gw, "burst")["requests_per_day"]
    assert shown["spent"] == admitted  # the ledger's truth, what was really admitted


def test_two_gateways_on_one_database_keep_one_budget(
    start_gateway: Callable[..., Any], database: Database, config: str, ollama: FakeOllama
) -> None:
    env = env_for(database, config, ollama.url, RELAY_BUDGET_CACHE_SECONDS="0")
    gateways = [start_gateway(env), start_gateway(env)]
    ollama.script("llama3.2")
    codes = []
    for i in range(6):  # one at a time, alternating: each sees what the other admitted
        codes.append(openai_chat(gateways[i % 2], "capped").status_code)
        settle()
    assert codes == [200, 200, 200, 429, 429, 429]
    for gw in gateways:
        assert own_budgets(gw, "capped")["requests_per_day"]["spent"] == 3


def test_budgets_are_read_from_the_ledger_after_a_restart(
    start_gateway: Callable[..., Any], database: Database, config: str, ollama: FakeOllama
) -> None:
    env = env_for(database, config, ollama.url)
    first = start_gateway(env)
    ollama.script("llama3.2")
    assert openai_chat(first, "spent").status_code == 200
    first.stop()  # its records are written at exit
    second = start_gateway(env)
    check_refusal(openai_chat(second, "spent"), next_midnight())
    assert own_budgets(second, "spent")["requests_per_day"]["spent"] == 1


@pytest.mark.parametrize("fail_open", [True, False])
def test_with_the_database_unreadable_budgets_fail_open_or_closed(
    gateway_on: Callable[..., Any], database: Database, ollama: FakeOllama, fail_open: bool
) -> None:
    gw = gateway_on(RELAY_BUDGET_CACHE_SECONDS="0", RELAY_BUDGET_FAIL_OPEN=str(fail_open))
    ollama.script("llama3.2")
    assert openai_chat(gw, "spent").status_code == 200  # its budget of one is spent
    settle()
    assert openai_chat(gw, "spent").status_code == 429
    database.make_unreadable()
    try:
        r = openai_chat(gw, "capped")
        if fail_open:
            assert r.status_code == 200, r.text  # admitted: nothing known says otherwise
        else:
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "budget_unavailable"
            assert r.headers["Retry-After"]
            r = anthropic_message(gw, "capped")
            assert r.status_code == 503 and r.json()["error"]["type"] == "overloaded_error"
        # A key without budgets never reads them: it is served either way.
        assert openai_chat(gw, "free").status_code == 200
        wait_until(lambda: "cannot read the usage database" in gw.logs(), 5)
        time.sleep(1.2)  # a second try after the first's pause: still one line per worker
        openai_chat(gw, "capped")
        assert gw.logs().count("cannot read the usage database") <= WORKERS
    finally:
        database.make_readable()

    def recovered() -> bool:
        own_budgets(gw, "capped")  # reads now, on whichever worker answers
        logs = gw.logs()
        return logs.count("can be read again") == logs.count("cannot read the usage database")

    # Back: every worker that logged the outage logs its end, and budgets are kept again.
    wait_until(recovered, 10, step=0.1)
    assert openai_chat(gw, "burst").status_code == 200


def test_the_pass_through_and_default_budgets(
    start_gateway: Callable[..., Any], database: Database, tmp_path: Path
) -> None:
    upstream = FakeOpenAI("chat")
    try:
        config = write_config(
            tmp_path / "pass.toml",
            f'[backends.openai]\ntype = "openai"\nurl = "{upstream.url}/v1"\n'
            'models = ["gpt-*"]\npassthrough = true\n',
        )
        # A RELAY_API_KEYS key takes the defaults for every key.
        env = env_for(database, config, upstream.url, RELAY_BUDGET_CACHE_SECONDS="0")
        gw = start_gateway({**env, "RELAY_API_KEYS": API_KEY, "RELAY_BUDGET_REQUESTS_PER_DAY": "2"})
        codes = []
        for _ in range(3):
            r = requests.post(
                gw.url + "/v1/moderations",
                json={"input": "ok"},
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=30,
            )
            codes.append(r.status_code)
            settle()
        assert codes == [200, 200, 429]
        assert r.json()["error"]["code"] == "insufficient_quota"
        assert len([q for q in upstream.requests if q.path == "/v1/moderations"]) == 2
    finally:
        upstream.close()


def run_tool(config: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "RELAY_ENV_FILE": "", "RELAY_CONFIG": config}
    env.update({f"RELAY_KEY_{name.upper()}": secret for name, secret in SECRETS.items()})
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "keys", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_key_tool_writes_budgets_that_apply_without_a_restart(
    gateway_on: Callable[..., Any], config: str, ollama: FakeOllama
) -> None:
    gw = gateway_on(RELAY_BUDGET_CACHE_SECONDS="0")
    ollama.script("llama3.2")
    bad = run_tool(config, "create", "late", "--budget", "tokens_per_week=5")
    assert bad.returncode != 0 and "tokens_per_month" in bad.stderr
    made = run_tool(config, "create", "late", "--budget", "requests_per_day=1")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    listed = run_tool(config, "list").stdout
    assert "late\tenabled" in listed and "requests_per_day=1" in listed
    headers = {"Authorization": f"Bearer {secret}"}
    body = {"model": "llama3.2", "messages": question()}
    url = gw.url + "/v1/chat/completions"
    wait_until(lambda: requests.get(gw.url + "/v1/models", headers=headers).status_code == 200)
    time.sleep(1.5)  # every worker has looked at the file again
    assert requests.post(url, json=body, headers=headers, timeout=30).status_code == 200
    settle()
    r = requests.post(url, json=body, headers=headers, timeout=30)
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"


def test_budgets_need_the_ledger(start_gateway: Callable[..., Any], config: str, tmp_path) -> None:
    gw = start_gateway(
        {
            "RELAY_CONFIG": config,
            "RELAY_USAGE": "off",
            **{f"RELAY_KEY_{n.upper()}": s for n, s in SECRETS.items()},
        },
        wait=False,
    )
    assert gw.proc.wait(30) != 0
    assert "budgets need the usage ledger" in gw.logs()


def test_the_config_names_a_bad_budget(tmp_path: Path) -> None:
    import config as relay_config

    path = write_config(
        tmp_path / "bad.toml",
        '[keys.x]\nhash = "sha256:' + "0" * 64 + '"\nbudget_tokens_per_day = -1\n',
    )
    with pytest.raises(relay_config.ConfigError, match=r"keys\.x\.budget_tokens_per_day"):
        relay_config.load({"RELAY_CONFIG": path, "RELAY_ENV_FILE": ""})
    # A month's budget reads the month's daily roll-ups: they must be kept that long.
    env = {"RELAY_ENV_FILE": "", "RELAY_BUDGET_TOKENS_PER_MONTH": "1000"}
    with pytest.raises(relay_config.ConfigError, match="RELAY_USAGE_DAILY_RETENTION_DAYS"):
        relay_config.load({**env, "RELAY_USAGE_DAILY_RETENTION_DAYS": "30"})
    loaded = relay_config.load({**env, "RELAY_USAGE_DAILY_RETENTION_DAYS": "31"})
    assert loaded.access.budgets.defaults.tokens_per_month == 1000
