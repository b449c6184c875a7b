"""Pure parts of keys, limits and the reply cache: formats, canonical keys, the key file editor."""

from __future__ import annotations

import threading
import tomllib
from datetime import UTC, datetime

import pytest

import config
from services.access import keyfile
from services.access.keys import ApiKey, KeyStore, digest
from services.access.ratelimit import go_duration, limit_string, retry_after
from services.core.types import ChatRequest, ChatResult, Message, ToolCall, Usage
from services.operations.chat_cache import CHAT_CODEC, chat_payload, replay
from services.state.reply_cache import (
    BYPASS,
    HIT,
    MISS,
    CachePolicy,
    Codec,
    MemoryStore,
    ReplyCache,
    cache_key,
    parse_cache_control,
)
from settings import access as access_settings


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (360, "6m0s"), (16614.72, "4h36m54.72s")],
)
def test_durations_are_formatted_as_go_and_openai_do(seconds, text):
    assert go_duration(seconds) == text


def test_retry_after_is_between_one_and_sixty_seconds():
    assert [retry_after(s) for s in (0, 0.2, 59.1, 3600)] == [1, 1, 60, 60]


def test_limit_strings_leave_out_unlimited_windows():
    assert limit_string(access_settings.Limits(60, 0, 1000, 5)) == "60/minute;1000/day"
    assert limit_string(access_settings.Limits(0, 0, 0, 0)) == ""


def test_cache_control_directives():
    assert parse_cache_control("", "", "t") == CachePolicy("t", read=True, store=True)
    assert parse_cache_control("no-cache", "", "t") == CachePolicy("t", read=False, store=True)
    assert parse_cache_control("max-age=0, No-Store", "", "t") == CachePolicy("t", True, False)
    assert parse_cache_control("", "no-cache", "t").read is False


def request(**kw: object) -> ChatRequest:
    base: dict[str, object] = {"model": "m", "messages": (Message("user", "hi"),)}
    return ChatRequest(**{**base, **kw})  # type: ignore[arg-type]


def test_cache_key_covers_what_changes_the_answer_and_nothing_else():
    def key(req: ChatRequest, tenant: str = "a", backend: str = "b") -> str:
        return cache_key("chat.completions", tenant, backend, chat_payload(req))

    plain = key(request())
    assert plain == key(request(stream=True, include_usage=True, user="someone"))
    assert plain == key(request(extra={"metadata": {"x": 1}}))
    assert plain != key(request(temperature=0.5))
    assert plain != key(request(extra={"options": {"num_ctx": 4096}}))
    assert plain != key(request(), tenant="other")
    assert plain != key(request(), backend="other")
    schema_ab = {"type": "json_object", "a": 1, "b": 2}
    schema_ba = {"b": 2, "a": 1, "type": "json_object"}
    assert key(request(response_format=schema_ab)) == key(request(response_format=schema_ba))


def test_chat_results_round_trip_and_cut_off_replies_are_not_storable():
    result = ChatResult("hi", "why", (ToolCall("c1", "f", "{}", 0),), "tool_calls", Usage(3, 4))
    assert CHAT_CODEC.decode(CHAT_CODEC.encode(result)) == result
    assert not CHAT_CODEC.storable(ChatResult("h", finish_reason="length"))
    deltas = list(replay(result))
    assert deltas[-1].finish_reason == "tool_calls" and deltas[-1].usage == Usage(3, 4)


def test_memory_cache_computes_once_and_honours_the_policy():
    cache = ReplyCache(MemoryStore(60, 10, threading.Lock()), None, wait=1)
    codec = Codec(str.encode, bytes.decode, lambda r: r != "cut")
    calls: list[str] = []

    def compute(value: str):
        return lambda: calls.append(value) or value

    policy = CachePolicy("t")
    assert cache.run(lambda: "k", policy, compute("one"), codec) == ("one", MISS)
    assert cache.run(lambda: "k", policy, compute("two"), codec) == ("one", HIT)
    assert cache.run(lambda: "k", CachePolicy("t", read=False), compute("three"), codec) == (
        "three",
        BYPASS,
    )
    assert cache.run(lambda: "k", policy, compute("four"), codec) == ("three", HIT)
    assert cache.run(lambda: "c", policy, compute("cut"), codec) == ("cut", MISS)
    assert cache.run(lambda: "c", policy, compute("cut"), codec) == ("cut", MISS)
    assert calls == ["one", "three", "cut", "cut"]


def test_key_models_match_names_with_or_without_latest():
    key = ApiKey("k", models=("llama3.2", "qwen*"))
    assert key.allows("llama3.2") and key.allows("llama3.2:latest") and key.allows("qwen3:8b")
    assert not key.allows("llama3.2:1b") and not key.allows("mistral")


def test_key_tool_edits_keep_the_file_and_write_only_digests(tmp_path):
    file = tmp_path / "relay.toml"
    path = str(file)
    file.write_text("# my gateway\n[server]\nport = 3000\n")
    secret = keyfile.create_key(
        path,
        "team-a",
        models=("llama*",),
        expires=datetime(2027, 1, 1, tzinfo=UTC),
        limits={"requests_per_minute": 5},
    )
    text = file.read_text()
    assert text.startswith("# my gateway\n[server]\nport = 3000\n")
    assert secret not in text and digest(secret) in text
    keyfile.create_key(path, "team-b")
    keyfile.set_enabled(path, "team-a", False)
    doc = tomllib.loads(file.read_text())
    assert doc["keys"]["team-a"]["enabled"] is False and doc["keys"]["team-b"]["enabled"] is True
    (a, b) = access_settings.read_keys(path, {})
    assert a.name == "team-a" and a.limits.requests_per_minute == 5 and a.models == ("llama*",)
    assert a.expires == datetime(2027, 1, 1, tzinfo=UTC) and not a.enabled
    with pytest.raises(config.ConfigError):
        keyfile.create_key(path, "team-b")
    with pytest.raises(config.ConfigError):
        keyfile.create_key(path, "bad name")
    store = KeyStore((), access_settings.read_keys(path, {}))
    with pytest.raises(Exception, match="revoked"):
        store.authenticate(secret)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RELAY_CACHE_TTL": "abc"}, "RELAY_CACHE_TTL must be a number"),
        ({"RELAY_CACHE_MODE": "some"}, "RELAY_CACHE_MODE must be one of deterministic, all, off"),
        ({"RELAY_REQUESTS_PER_MINUTE": "-1"}, "RELAY_REQUESTS_PER_MINUTE must be at least 0"),
        ({"RELAY_LIMITS_FAIL_OPEN": "maybe"}, "RELAY_LIMITS_FAIL_OPEN must be true or false"),
        ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL must be a redis:// URL"),
    ],
)
def test_new_settings_fail_with_one_line_naming_them(env, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load({"RELAY_ENV_FILE": "", **env})


def test_named_keys_close_open_access():
    settings = config.load({"RELAY_ENV_FILE": ""})
    assert settings.open_access
    named = access_settings.AccessSettings(keys=(access_settings.KeySettings("a", "0" * 64),))
    assert not config.replace(settings, access=named).open_access
