"""The usage ledger through real gunicorn: each finished request becomes exactly one record with
the right fields, read back through /admin/usage, /v1/usage and the CLI (docs/operations.md
"Usage")."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
import requests

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
    record_of,
    run_cli,
)

ME, OTHER = key_name(API_KEY), key_name(OTHER_KEY)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return tmp_path_factory.mktemp("ledger") / "nested" / "relay.db"  # the directory is made


@pytest.fixture(scope="module")
def gw(start_module_gateway, fake_ollama, db):
    return start_module_gateway(ledger_env(db, fake_ollama.url))


def test_a_whole_chat_is_one_record_with_its_fields(gw, ollama: FakeOllama, db):
    ollama.script("llama3.2", content=["Secret", " reply", " text"])
    before = datetime.now(UTC).replace(tzinfo=None)
    r = chat(gw, messages=[{"role": "user", "content": "prompt words nobody keeps"}])
    assert r.status_code == 200
    rec = record_of(gw, r.headers["X-Request-ID"])
    assert rec["key_name"] == ME
    assert (rec["model"], rec["upstream_model"], rec["backend"]) == ("llama3.2",) * 2 + ("ollama",)
    assert (rec["endpoint"], rec["method"], rec["status"]) == ("/v1/chat/completions", "POST", 200)
    assert (rec["error_type"], rec["error_code"]) == (None, None)
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (12, 5)
    assert rec["tokens_estimated"] is False
    assert rec["cache"] == "MISS"
    assert rec["streamed"] is False and rec["abandoned"] is False
    assert rec["first_token_ms"] is None and rec["duration_ms"] > 0
    assert rec["client"] == "127.0.0.1"
    ts = datetime.fromisoformat(rec["ts"].removesuffix("Z"))
    assert before - timedelta(seconds=1) <= ts <= datetime.now(UTC).replace(tzinfo=None)
    # Never the key, never the prompt or the reply: not in the answer, not in the file.
    text = json.dumps(rec)
    raw = db.read_bytes() + db.with_name("relay.db-wal").read_bytes()
    for secret in (API_KEY, "prompt words", "Secret reply"):
        assert secret not in text and secret.encode() not in raw


def test_a_streamed_chat_records_time_to_first_token(gw, ollama: FakeOllama):
    ollama.script("llama3.2", content=["a", "b", "c"], pace=0.02)
    r = chat(gw, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    rec = record_of(gw, r.headers["X-Request-ID"])
    assert rec["streamed"] is True and rec["abandoned"] is False
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["status"]) == (12, 5, 200)
    assert 0 < rec["first_token_ms"] <= rec["duration_ms"]
    assert rec["duration_ms"] >= 40  # three pieces, 20 ms apart


def test_errors_are_recorded_with_their_type_and_code(gw, ollama: FakeOllama):
    unknown = chat(gw, model="no-such-model")
    assert unknown.status_code == 404
    rec = record_of(gw, unknown.headers["X-Request-ID"])
    assert (rec["status"], rec["error_type"], rec["error_code"]) == (
        404,
        "invalid_request_error",
        "model_not_found",
    )
    assert rec["prompt_tokens"] == 0  # Ollama answered 404: nothing was used

    ollama.script("broken", status=500, error="boom")
    failed = chat(gw, model="broken")
    assert failed.status_code == 502
    rec = record_of(gw, failed.headers["X-Request-ID"])
    assert (rec["status"], rec["backend"], rec["error_type"]) == (502, "ollama", "server_error")

    unauthenticated = chat(gw, key="sk-not-a-key")
    assert unauthenticated.status_code == 401
    rec = record_of(gw, unauthenticated.headers["X-Request-ID"])
    assert (rec["key_name"], rec["status"], rec["error_code"]) == (None, 401, "invalid_api_key")


def test_a_stream_that_fails_midway_is_one_error_record(gw, ollama: FakeOllama):
    ollama.script("llama3.2", content=["part"], midstream_error="the model crashed")
    r = chat(gw, stream=True)
    assert r.status_code == 200 and '"error"' in r.text
    rec = record_of(gw, r.headers["X-Request-ID"])
    assert (rec["status"], rec["error_type"], rec["abandoned"]) == (200, "stream_error", False)


def test_a_cache_hit_is_its_own_record(gw, ollama: FakeOllama):
    body = {"messages": [{"role": "user", "content": "cache me for usage"}]}
    first, second = chat(gw, **body), chat(gw, **body)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    miss = record_of(gw, first.headers["X-Request-ID"])
    hit = record_of(gw, second.headers["X-Request-ID"])
    assert (miss["cache"], hit["cache"]) == ("MISS", "HIT")
    assert hit["completion_tokens"] == miss["completion_tokens"] == 5


def test_an_abandoned_stream_is_recorded_with_what_it_sent(gw, ollama: FakeOllama):
    ollama.script("llama3.2", content=[f"w{i} " for i in range(40)], pace=0.05)
    with requests.post(
        gw.url + "/v1/chat/completions",
        json={"model": "llama3.2", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {API_KEY}"},
        stream=True,
        timeout=30,
    ) as r:
        request_id = r.headers["X-Request-ID"]
        lines = r.iter_lines()
        data = [line for line in (next(lines) for _ in range(8)) if line.startswith(b"data:")]
        assert len(data) >= 3
    wait_until(lambda: ollama.disconnects, timeout=10)
    rec = record_of(gw, request_id)
    assert rec["streamed"] is True and rec["abandoned"] is True, json.dumps(rec)
    assert rec["error_type"] is None and rec["status"] == 200
    # What went out before the client left, estimated: at least what it read, less than all.
    assert 2 <= rec["completion_tokens"] < 40 and rec["tokens_estimated"] is True


def test_embeddings_are_recorded(gw, ollama: FakeOllama):
    ollama.script("nomic-embed-text")
    r = requests.post(
        gw.url + "/v1/embeddings",
        json={"model": "nomic-embed-text", "input": ["three words here", "two words"]},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert r.status_code == 200
    rec = record_of(gw, r.headers["X-Request-ID"])
    assert (rec["endpoint"], rec["model"], rec["prompt_tokens"]) == (
        "/v1/embeddings",
        "nomic-embed-text",
        5,
    )
    assert rec["completion_tokens"] == 0 and rec["streamed"] is False


def test_the_summary_adds_up_by_key_model_and_day(gw, ollama: FakeOllama):
    ollama.script("qwen3:8b", prompt_eval_count=7, eval_count=3)
    ids = [chat(gw, key=OTHER_KEY, model="qwen3:8b").headers["X-Request-ID"] for _ in range(3)]
    for request_id in ids:
        record_of(gw, request_id)
    today = datetime.now(UTC).date().isoformat()
    params = {"group_by": "key,model,day", "key": OTHER, "since": today, "until": today}
    r = requests.get(gw.url + "/admin/usage", params=params, headers=ADMIN, timeout=10)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    body = r.json()
    assert body["source"] == "daily" and body["group_by"] == ["key", "model", "day"]
    [row] = body["data"]
    assert (row["key"], row["model"], row["day"]) == (OTHER, "qwen3:8b", today)
    assert (row["requests"], row["errors"], row["prompt_tokens"]) == (3, 0, 21)
    assert (row["completion_tokens"], row["total_tokens"]) == (9, 30)
    # The same period with times of day reads the raw records, and agrees.
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    params |= {"since": start.isoformat(), "until": (start + timedelta(days=1)).isoformat()}
    raw = requests.get(gw.url + "/admin/usage", params=params, headers=ADMIN, timeout=10).json()
    assert raw["source"] == "records"
    assert [{**r, "mean_duration_ms": None} for r in raw["data"]] == [
        {**row, "mean_duration_ms": None}
    ]


def test_csv_by_parameter_or_accept_header(gw, ollama: FakeOllama):
    record_of(gw, chat(gw).headers["X-Request-ID"])
    by_param = requests.get(
        gw.url + "/admin/usage", params={"format": "csv", "group_by": "key"}, headers=ADMIN
    )
    by_accept = requests.get(
        gw.url + "/admin/usage", params={"group_by": "key"}, headers={**ADMIN, "Accept": "text/csv"}
    )
    for r in (by_param, by_accept):
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert ME in {row["key"] for row in rows}
        assert {"requests", "prompt_tokens", "total_tokens"} <= set(rows[0])
    records = requests.get(
        gw.url + "/admin/usage/records", params={"format": "csv", "limit": "5"}, headers=ADMIN
    )
    assert len(list(csv.DictReader(io.StringIO(records.text)))) == 5


def test_a_caller_model_name_cannot_become_a_spreadsheet_formula(gw):
    r = chat(gw, model="=HYPERLINK(1)")
    record_of(gw, r.headers["X-Request-ID"])
    text = requests.get(
        gw.url + "/admin/usage/records",
        params={"format": "csv", "request_id": r.headers["X-Request-ID"]},
        headers=ADMIN,
    ).text
    assert ",'=HYPERLINK(1)," in text and ",=HYPERLINK" not in text


def test_a_key_reads_only_its_own_usage(gw, ollama: FakeOllama):
    mine = chat(gw).headers["X-Request-ID"]
    theirs = chat(gw, key=OTHER_KEY).headers["X-Request-ID"]
    record_of(gw, mine), record_of(gw, theirs)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    summary = requests.get(gw.url + "/v1/usage", params={"group_by": "key"}, headers=auth).json()
    assert [row["key"] for row in summary["data"]] == [ME]
    records = requests.get(gw.url + "/v1/usage/records", params={"limit": "1000"}, headers=auth)
    ids = {row["request_id"] for row in records.json()["data"]}
    assert mine in ids and theirs not in ids
    assert {row["key_name"] for row in records.json()["data"]} == {ME}
    # Asking for another key is refused, not quietly narrowed.
    other = requests.get(gw.url + "/v1/usage", params={"key": OTHER}, headers=auth)
    assert other.status_code == 400 and other.json()["error"]["param"] == "key"
    # Reading usage is not usage.
    assert not admin_records(gw, request_id=records.headers["X-Request-ID"])
    # Without a key: the usual 401.
    assert requests.get(gw.url + "/v1/usage").status_code == 401


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {API_KEY}"}],
    ids=["no token", "wrong token", "an API key"],
)
def test_admin_usage_is_refused_without_the_admin_token(gw, headers):
    for path in ("/admin/usage", "/admin/usage/records"):
        r = requests.get(gw.url + path, headers=headers, params={"group_by": "nonsense"})
        assert r.status_code == 403, r.text  # refused before the parameters are even read
        assert r.json()["error"]["code"] == "admin_forbidden"
        assert "data" not in r.json()


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"group_by": "key,secret"}, "group_by"),
        ({"group_by": "key,key"}, "group_by"),
        ({"limit": "0"}, "limit"),
        ({"limit": "100000"}, "limit"),
        ({"format": "xml"}, "format"),
        ({"colour": "blue"}, "colour"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since"),
        ({"x" * 500: "1"}, "x" * 64),
    ],
)
def test_bad_parameters_are_a_400_naming_them(gw, params, param):
    for url, headers in (
        (gw.url + "/admin/usage", ADMIN),
        (gw.url + "/v1/usage", {"Authorization": f"Bearer {API_KEY}"}),
    ):
        r = requests.get(url, params=params, headers=headers)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", param)


def test_the_cli_prints_tables_and_csv(gw, db, ollama: FakeOllama):
    ollama.script("qwen3:8b", prompt_eval_count=7, eval_count=3)
    request_id = chat(gw, key=OTHER_KEY, model="qwen3:8b").headers["X-Request-ID"]
    record_of(gw, request_id)
    table = run_cli(db, "--key", OTHER, "--model", "qwen3:8b")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split()[:4] == ["key", "model", "day", "requests"]
    assert lines and all(line.split()[:2] == [OTHER, "qwen3:8b"] for line in lines)
    as_csv = run_cli(db, "--by", "key", "--csv", "--key", OTHER)
    [row] = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    admin = requests.get(
        gw.url + "/admin/usage", params={"group_by": "key", "key": OTHER}, headers=ADMIN
    ).json()["data"][0]
    assert (
        int(row["requests"]) == admin["requests"]
        and int(row["total_tokens"]) == admin["total_tokens"]
    )
    records = run_cli(db, "--records", "--csv", "--limit", "1")
    assert list(csv.DictReader(io.StringIO(records.stdout)))[0]["request_id"]
    bad = run_cli(db, "--since", "last week")
    assert bad.returncode != 0 and "--since" in bad.stderr
    off = run_cli(db, usage="off")
    assert off.returncode != 0 and "RELAY_USAGE=off" in off.stderr


def test_rows_in_the_file_match_the_api(gw, db):
    record_of(gw, chat(gw).headers["X-Request-ID"])
    on_disk = db_rows(db, "SELECT count(*) AS n FROM usage_records")[0]["n"]
    served = requests.get(gw.url + "/admin/usage", params={"group_by": ""}, headers=ADMIN).json()[
        "data"
    ]
    assert served[0]["requests"] == on_disk
    assert [r["version"] for r in db_rows(db, "SELECT version FROM schema_version")] == [1, 2]
    assert ADMIN_TOKEN.encode() not in db.read_bytes()


def test_bounds_at_the_ends_of_the_calendar_are_answered(gw):
    for params in (
        {"since": "0001-01-01", "until": "9999-12-31"},
        {"since": "0001-01-01T00:00:00", "until": "9999-12-31"},
        {"since": "2026-01-01T00:00:00Z", "until": "9999-12-31T23:59:59.999999"},
    ):
        r = requests.get(gw.url + "/admin/usage", params=params, headers=ADMIN)
        assert r.status_code == 200, (params, r.text)
        assert r.json()["data"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_anthropic_face_is_recorded(gw, ollama: FakeOllama, stream):
    r = requests.post(
        gw.url + "/v1/messages",
        json={
            "model": "llama3.2",
            "max_tokens": 50,
            "stream": stream,
            "messages": [{"role": "user", "content": f"hi {stream}"}],
        },
        headers={"anthropic-version": "2023-06-01", "x-api-key": API_KEY},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    rec = record_of(gw, r.headers["X-Request-ID"])
    assert (rec["endpoint"], rec["key_name"], rec["backend"]) == ("/v1/messages", ME, "ollama")
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (12, 5)
    assert (rec["streamed"], rec["abandoned"], rec["error_type"]) == (stream, False, None)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_ollama_face_is_recorded(gw, ollama: FakeOllama, stream):
    r = requests.post(
        gw.url + "/api/chat",
        json={
            "model": "llama3.2",
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    rec = record_of(gw, r.headers["X-Request-ID"])
    assert (rec["endpoint"], rec["key_name"], rec["model"]) == ("/api/chat", ME, "llama3.2")
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (12, 5)
    assert (rec["streamed"], rec["abandoned"], rec["error_type"]) == (stream, False, None)


def test_a_face_error_is_recorded_with_its_type(gw):
    r = requests.post(
        gw.url + "/v1/messages",
        json={"model": "llama3.2", "messages": []},
        headers={"anthropic-version": "2023-06-01", "x-api-key": API_KEY},
    )
    assert r.status_code == 400 and r.json()["type"] == "error"  # Anthropic's envelope
    rec = record_of(gw, r.headers["X-Request-ID"])
    assert (rec["status"], rec["error_type"]) == (400, "invalid_request_error")
