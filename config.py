"""Every setting Relay reads, its default, its parser and its check.

The only module that reads the environment. `load()` merges, lowest first: built-in defaults,
the optional TOML file named by RELAY_CONFIG, a `.env` file in the working directory, and the
process environment. Any bad value raises ConfigError with one line naming the setting.
Imports only the standard library and python-dotenv, so gunicorn.conf.py may import it before
gevent patches the worker.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Backend and value parsing live beside this module; the names the rest of Relay uses are
# re-exported here so that `config` stays the one place to import settings from.
from settings.access import AccessSettings, RedisSettings, access_settings, redis_settings
from settings.backends import (
    BackendSettings,
    DifyAppSettings,
    FileSettings,
    backend_settings,
    file_settings,
)
from settings.environment import read_environment
from settings.routes import AliasSettings, RouteSettings, TargetSettings, route_settings
from settings.usage import UsageSettings, usage_settings
from settings.values import (
    LOG_LEVELS,
    ConfigError,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_keys,
    as_log_level,
    as_networks,
    as_optional_url,
    as_origins,
    as_str,
    as_table,
    read_toml,
)

__all__ = [
    "LOG_LEVELS",
    "AliasSettings",
    "BackendSettings",
    "ConfigError",
    "DifyAppSettings",
    "FileSettings",
    "RouteSettings",
    "TargetSettings",
]
VERSION = "0.1.0"
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 3000
    workers: int = 1
    worker_connections: int = 1000
    log_level: str = "INFO"
    log_dir: str | None = None
    log_format: str = "text"
    api_keys: tuple[str, ...] = ()
    allow_open: bool = False
    max_body_bytes: int = 20 * 1024 * 1024
    body_timeout: float = 30.0  # seconds a request body may take to arrive (408 after)
    max_uploads_per_key: int = 16  # bodies one key may be sending at once, per worker (429 above)
    max_requests_per_key: int = 0  # in flight per key and worker (429); 0: half the connections
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call /v1; "*" for any
    backends: tuple[BackendSettings, ...] = ()
    fetch_image_urls: bool = False
    image_max_bytes: int = 10 * 1024 * 1024
    image_fetch_allow_private: bool = False
    image_fetch_timeout: float = 10.0
    conversation_ttl: float = 86400.0
    response_ttl: float = 86400.0
    # Stored Responses are bounded in bytes (docs/threat-model.md).
    responses_max_bytes: int = 64 * MIB  # per worker, in memory
    responses_max_bytes_per_key: int = 16 * MIB
    responses_max_conversation_bytes: int = 4 * MIB  # history a stored turn may continue from
    keepalive_seconds: float = 15.0  # SSE comment interval during upstream silences; 0: off
    anthropic_keep_billing_block: bool = False  # pass Claude Code's billing system block on
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    metrics_allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    metrics_token: str | None = field(default=None, repr=False)
    metrics_dir: str | None = None  # set by gunicorn.conf.py for multiprocess metrics
    status_cache_seconds: float = 5.0  # how long / and /ready reuse what backends answered
    config_file: str | None = None
    public_url: str | None = None  # the base URL clients reach Relay at (lasting file links)
    files: FileSettings | None = None  # lasting files; None when off
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Keys, limits, reply cache and Redis: their settings live in settings/access.py.
    access: AccessSettings = field(default_factory=AccessSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    usage: UsageSettings = field(default_factory=UsageSettings)  # the usage ledger (issue 15)
    # Aliases, groups, the retry budget and the circuit breaker (settings/routes.py).
    routes: RouteSettings = field(default_factory=RouteSettings)

    @property
    def open_access(self) -> bool:
        """True when no API key is configured, so every caller is let in."""
        return not self.api_keys and not self.access.keys


# name -> (meaning, default shown in docs). The table in docs/configuration.md follows this list.
ENV_VARS: dict[str, tuple[str, str]] = {
    "HOST": ("address to listen on", "127.0.0.1"),
    "PORT": ("port to listen on", "3000"),
    "OLLAMA_BASE_URL": ("Ollama server (also read as OLLAMA_API)", "http://localhost:11434"),
    "LOG_LEVEL": ("error, warn, info or debug", "info"),
    "RELAY_LOG_FORMAT": ("text for people, json (one object per line) for log shippers", "text"),
    "RELAY_LOG_DIR": ("also write logs to <dir>/relay.<pid>.log (one file per worker)", "unset"),
    "RELAY_API_KEYS": ("comma-separated Bearer keys callers must send", "unset"),
    "RELAY_ALLOW_OPEN": ("allow running without keys on a non-loopback address", "false"),
    "RELAY_CONFIG": ("path to a TOML file for backends and richer settings", "unset"),
    "RELAY_ENV_FILE": ("dotenv file read at start-up; empty to read none", ".env"),
    "RELAY_WORKERS": ("gunicorn worker processes", "1, or one per core with REDIS_URL"),
    "RELAY_WORKER_CONNECTIONS": ("concurrent connections per gevent worker", "1000"),
    "RELAY_MAX_BODY_BYTES": ("largest request body accepted (413 above)", "20971520"),
    "RELAY_BODY_TIMEOUT_SECONDS": ("seconds a request body may take to arrive (408 after)", "30"),
    "RELAY_MAX_UPLOADS_PER_KEY": (
        "slow request bodies one key may be sending at once, per worker (429 above)",
        "16",
    ),
    "RELAY_MAX_REQUESTS_PER_KEY": (
        "requests one key may have in flight at once, streams included, per worker (429 above);"
        " 0 for half of RELAY_WORKER_CONNECTIONS",
        "0",
    ),
    "DIFY_API_URL": ("Dify API of the quick-start app, e.g. https://api.dify.ai/v1", "unset"),
    "DIFY_API_KEY": ("the quick-start Dify app's key (app-...)", "unset"),
    "DIFY_MODEL": ("model name of the quick-start Dify app when Ollama is also set", "dify"),
    "DIFY_MEMORY": (
        "conversation (Dify keeps the thread) or history (transcript each time)",
        "conversation",
    ),
    "DIFY_INPUT_VARIABLE": ("workflow/completion input that receives the user's text", "query"),
    "DIFY_OUTPUT_VARIABLE": ("workflow output that holds the answer", "auto"),
    "DIFY_ALLOW_CALLER_KEYS": ("let callers send their own X-Dify-Api-Key", "false"),
    "DIFY_FILES_URL": (
        "Dify's FILES_URL when another host serves its files (fetched like Dify's own)",
        "unset",
    ),
    "RELAY_CONVERSATION_TTL": (
        "seconds Relay remembers which Dify conversation a chat is",
        "86400",
    ),
    "RELAY_PUBLIC_URL": ("base URL clients reach Relay at, for file links", "request's host"),
    "RELAY_FILES_DIR": ("keep returned files in this directory, served at /files/", "unset"),
    "RELAY_FILES_MAX_BYTES": (
        "largest returned file kept (larger ones keep their URL)",
        "20971520",
    ),
    "RELAY_S3_BUCKET": ("keep returned files in this S3-compatible bucket instead", "unset"),
    "RELAY_S3_ENDPOINT_URL": ("S3-compatible endpoint (MinIO, R2, ...); AWS when unset", "unset"),
    "RELAY_S3_REGION": ("the bucket's region", "unset"),
    "RELAY_S3_ACCESS_KEY_ID": ("S3 access key; boto3's usual sources when unset", "unset"),
    "RELAY_S3_SECRET_ACCESS_KEY": ("S3 secret key, with RELAY_S3_ACCESS_KEY_ID", "unset"),
    "RELAY_S3_PREFIX": ("key prefix for stored files, e.g. relay/", "unset"),
    "RELAY_S3_PUBLIC_URL": (
        "public URL of the bucket's objects; Relay serves them when unset",
        "unset",
    ),
    "RELAY_TRUSTED_PROXIES": (
        "addresses/networks whose X-Forwarded-For is believed",
        "127.0.0.1,::1",
    ),
    "RELAY_METRICS_ALLOW": ("addresses/networks that may read /metrics", "127.0.0.1,::1"),
    "RELAY_METRICS_TOKEN": ("admin token that also opens /metrics (Bearer)", "unset"),
    "RELAY_STATUS_CACHE_SECONDS": (
        "seconds / and /ready reuse backend states and model lists (one refresh at a time)",
        "5",
    ),
    "RELAY_RESPONSE_TTL": ("seconds stored Responses API replies are kept", "86400"),
    "RELAY_RESPONSES_MAX_BYTES": (
        "bytes of stored Responses a worker keeps in memory, least recently used out first",
        "67108864",
    ),
    "RELAY_RESPONSES_MAX_BYTES_PER_KEY": (
        "bytes of stored Responses one key may keep (in memory or Redis)",
        "16777216",
    ),
    "RELAY_RESPONSES_MAX_CONVERSATION_BYTES": (
        "largest stored history previous_response_id may continue (400 past it)",
        "4194304",
    ),
    "RELAY_MAX_IN_FLIGHT": ("requests in flight per backend before queueing; 0 for no limit", "0"),
    "RELAY_MAX_QUEUE": ("requests that may wait per backend beyond that (then 429)", "0"),
    "RELAY_QUEUE_TIMEOUT": ("seconds a queued request waits for a slot (then 503)", "30"),
    "RELAY_CONNECT_TIMEOUT": ("seconds to connect to a backend (504 after)", "5"),
    "RELAY_READ_TIMEOUT": ("longest wait in seconds for a backend's next bytes (504 after)", "600"),
    "RELAY_FETCH_IMAGE_URLS": ("download http(s) image URLs for backends that need bytes", "false"),
    "RELAY_IMAGE_MAX_BYTES": ("largest image accepted, inline or downloaded", "10485760"),
    "RELAY_IMAGE_FETCH_ALLOW_PRIVATE": ("allow image downloads from private addresses", "false"),
    "RELAY_IMAGE_FETCH_TIMEOUT": ("seconds allowed for one image download", "10"),
    "RELAY_CORS_ORIGINS": (
        "browser origins allowed to call /v1, comma-separated, or * for any (CORS)",
        "unset (off)",
    ),
    # Keys, limits, reply cache and Redis (issue 4)
    "RELAY_REQUESTS_PER_MINUTE": ("default requests per minute per key; 0 for no limit", "0"),
    "RELAY_REQUESTS_PER_HOUR": ("default requests per hour per key; 0 for no limit", "0"),
    "RELAY_REQUESTS_PER_DAY": ("default requests per day per key; 0 for no limit", "0"),
    "RELAY_TOKENS_PER_MINUTE": ("default tokens per minute per key; 0 for no limit", "0"),
    "RELAY_UNAUTHENTICATED_PER_MINUTE": (
        "requests per minute per address without a valid key",
        "30",
    ),
    "RELAY_STATUS_PER_MINUTE": (
        "loads of / and /ready per minute per address (they are unauthenticated); 0: no limit",
        "60",
    ),
    "RELAY_LIMITS_FAIL_OPEN": ("let requests through when the limit store is down", "true"),
    "RELAY_CACHE_TTL": ("seconds a reply stays in the reply cache; 0 turns the cache off", "300"),
    "RELAY_CACHE_MODE": (
        "which replies the cache keeps: deterministic (temperature 0 or a seed; embeddings "
        "always), all, or off",
        "deterministic",
    ),
    "RELAY_CACHE_MAX_ENTRIES": ("replies kept per worker by the in-process cache", "1024"),
    "RELAY_CACHE_MAX_BYTES": (
        "bytes of replies kept per worker by the in-process cache",
        "67108864",
    ),
    "RELAY_CACHE_MAX_ENTRY_BYTES": ("largest reply the cache keeps (memory or Redis)", "1048576"),
    "REDIS_URL": ("Redis for limits, reply cache and in-flight sharing across workers", "unset"),
    "RELAY_REDIS_TIMEOUT": ("seconds to wait for Redis before treating it as down", "1"),
    "RELAY_KEEPALIVE_SECONDS": (
        "seconds of upstream silence before a stream gets a `: keep-alive` comment; 0: off",
        "15",
    ),
    "RELAY_ANTHROPIC_KEEP_BILLING_BLOCK": (
        "pass Claude Code's per-request billing system block on to the backend",
        "false",
    ),
    # The usage ledger (issue 15)
    "RELAY_USAGE": ("record every API request in the usage ledger; off writes nothing", "on"),
    "RELAY_DATABASE_URL": (
        "the ledger's database: an SQLite file, or postgresql://user:password@host/db",
        "sqlite:///data/relay.db",
    ),
    "RELAY_DATABASE_POOL_SIZE": (
        "PostgreSQL connections each worker keeps for the ledger (SQLite: unused)",
        "5",
    ),
    "RELAY_USAGE_RETENTION_DAYS": ("days raw usage records are kept; 0 keeps them forever", "90"),
    "RELAY_USAGE_DAILY_RETENTION_DAYS": (
        "days the daily usage roll-ups are kept; 0 keeps them forever",
        "0",
    ),
    "RELAY_USAGE_QUEUE": (
        "usage records waiting to be written, per worker; past it they are dropped and counted",
        "10000",
    ),
    "RELAY_USAGE_FLUSH_SECONDS": ("how often each worker writes its queued usage records", "1"),
    # Budgets, kept against the usage ledger (issue 15)
    "RELAY_BUDGET_TOKENS_PER_DAY": ("default tokens per UTC day per key; 0 for no budget", "0"),
    "RELAY_BUDGET_TOKENS_PER_MONTH": ("default tokens per UTC month per key; 0 for no budget", "0"),
    "RELAY_BUDGET_REQUESTS_PER_DAY": ("default requests per UTC day per key; 0: none", "0"),
    "RELAY_BUDGET_REQUESTS_PER_MONTH": ("default requests per UTC month per key; 0: none", "0"),
    "RELAY_BUDGET_CACHE_SECONDS": (
        "seconds a worker reuses what it read of a key's spending from the ledger",
        "2",
    ),
    "RELAY_BUDGET_FAIL_OPEN": (
        "admit budgeted keys when the ledger cannot be read (false: answer 503)",
        "RELAY_LIMITS_FAIL_OPEN",
    ),
    # Routing: aliases and groups live in RELAY_CONFIG [models."NAME"] (docs/routing.md)
    "RELAY_ROUTE_MAX_ATTEMPTS": ("targets one request may try in a model group (1-16)", "3"),
    "RELAY_ROUTE_DEADLINE_SECONDS": (
        "seconds after which a request tries no further target of its group",
        "60",
    ),
    "RELAY_ROUTE_BREAKER_FAILURES": (
        "consecutive failures that open a group target's circuit (it is skipped)",
        "3",
    ),
    "RELAY_ROUTE_BREAKER_SECONDS": (
        "seconds an open circuit skips its target before one probe (doubles, up to 10x)",
        "30",
    ),
}


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from defaults, RELAY_CONFIG, the `.env` file and the environment."""
    return _build(read_environment(environ))


def default_workers(redis: RedisSettings) -> int:
    """One worker per usable core when Redis shares limits, cache and in-flight counts between
    workers; else one, so they stay exact (docs/operations.md "Workers")."""
    if not redis.url:
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _build(env: Mapping[str, str]) -> Settings:
    file_path = env.get("RELAY_CONFIG") or None
    doc = read_toml(file_path) if file_path else {}
    server = as_table(doc, "server")
    images = as_table(doc, "images")

    def pick(var: str, table: Mapping[str, Any], key: str, default: Any) -> tuple[str, Any]:
        # The environment wins over the file, the file over the default.
        if env.get(var, "") != "":
            return var, env[var]
        if key in table:
            return f"RELAY_CONFIG {key}", table[key]
        return var, default

    host = as_str(*pick("HOST", server, "host", "127.0.0.1"))
    backends = backend_settings(env, doc)
    redis = redis_settings(env, doc)
    settings = Settings(
        host=host,
        port=as_int(*pick("PORT", server, "port", 3000), lo=1, hi=65535),
        workers=as_int(
            *pick("RELAY_WORKERS", server, "workers", default_workers(redis)), lo=1, hi=256
        ),
        worker_connections=as_int(
            *pick("RELAY_WORKER_CONNECTIONS", server, "worker_connections", 1000), lo=1, hi=100_000
        ),
        log_level=as_log_level(*pick("LOG_LEVEL", server, "log_level", "info")),
        log_format=as_choice(
            *pick("RELAY_LOG_FORMAT", server, "log_format", "text"), ("text", "json")
        ),
        log_dir=as_str(*pick("RELAY_LOG_DIR", server, "log_dir", "")) or None,
        api_keys=as_keys(*pick("RELAY_API_KEYS", server, "api_keys", "")),
        allow_open=as_bool(*pick("RELAY_ALLOW_OPEN", server, "allow_open", False)),
        max_body_bytes=as_int(
            *pick("RELAY_MAX_BODY_BYTES", server, "max_body_bytes", 20 * 1024 * 1024), lo=1024
        ),
        body_timeout=as_float(
            *pick("RELAY_BODY_TIMEOUT_SECONDS", server, "body_timeout", 30.0), lo=0.1
        ),
        max_uploads_per_key=as_int(
            *pick("RELAY_MAX_UPLOADS_PER_KEY", server, "max_uploads_per_key", 16), lo=1, hi=100_000
        ),
        # 0 (the default): half the worker's connections, so one key always leaves room.
        max_requests_per_key=as_int(
            *pick("RELAY_MAX_REQUESTS_PER_KEY", server, "max_requests_per_key", 0),
            lo=0,
            hi=100_000,
        ),
        cors_origins=as_origins(*pick("RELAY_CORS_ORIGINS", server, "cors_origins", "")),
        backends=backends,
        fetch_image_urls=as_bool(*pick("RELAY_FETCH_IMAGE_URLS", images, "fetch_urls", False)),
        image_max_bytes=as_int(
            *pick("RELAY_IMAGE_MAX_BYTES", images, "max_bytes", 10 * 1024 * 1024), lo=1
        ),
        image_fetch_allow_private=as_bool(
            *pick("RELAY_IMAGE_FETCH_ALLOW_PRIVATE", images, "allow_private", False)
        ),
        image_fetch_timeout=as_float(
            *pick("RELAY_IMAGE_FETCH_TIMEOUT", images, "fetch_timeout", 10.0), lo=0.1
        ),
        conversation_ttl=as_float(
            *pick("RELAY_CONVERSATION_TTL", server, "conversation_ttl", 86400.0), lo=1
        ),
        response_ttl=as_float(*pick("RELAY_RESPONSE_TTL", server, "response_ttl", 86400.0), lo=1),
        responses_max_bytes=as_int(
            *pick("RELAY_RESPONSES_MAX_BYTES", server, "responses_max_bytes", 64 * MIB), lo=1024
        ),
        responses_max_bytes_per_key=as_int(
            *pick(
                "RELAY_RESPONSES_MAX_BYTES_PER_KEY", server, "responses_max_bytes_per_key", 16 * MIB
            ),
            lo=1024,
        ),
        responses_max_conversation_bytes=as_int(
            *pick(
                "RELAY_RESPONSES_MAX_CONVERSATION_BYTES",
                server,
                "responses_max_conversation_bytes",
                4 * MIB,
            ),
            lo=1024,
        ),
        keepalive_seconds=as_float(
            *pick("RELAY_KEEPALIVE_SECONDS", server, "keepalive_seconds", 15.0), lo=0
        ),
        anthropic_keep_billing_block=as_bool(
            *pick(
                "RELAY_ANTHROPIC_KEEP_BILLING_BLOCK", server, "anthropic_keep_billing_block", False
            )
        ),
        trusted_proxies=as_networks(
            *pick("RELAY_TRUSTED_PROXIES", server, "trusted_proxies", "127.0.0.1,::1")
        ),
        metrics_allow=as_networks(
            *pick("RELAY_METRICS_ALLOW", server, "metrics_allow", "127.0.0.1,::1")
        ),
        metrics_token=as_str(*pick("RELAY_METRICS_TOKEN", server, "metrics_token", "")) or None,
        metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
        status_cache_seconds=as_float(
            *pick("RELAY_STATUS_CACHE_SECONDS", server, "status_cache_seconds", 5.0), lo=0
        ),
        config_file=file_path,
        public_url=as_optional_url("RELAY_PUBLIC_URL", env.get("RELAY_PUBLIC_URL")),
        files=file_settings(env),
        extra={
            k: v
            for k, v in doc.items()
            if k not in ("server", "images", "backends", "models", "routing")
        },
        access=access_settings(env, doc),
        redis=redis,
        usage=usage_settings(env, doc),
        routes=route_settings(env, doc, backends),
    )
    access = settings.access
    if not settings.usage.enabled and (
        access.budgets.defaults.any or any(k.budgets.any for k in access.keys)
    ):
        # The ledger is the budgets' truth (docs/access.md "Budgets"): without it, none is kept.
        raise ConfigError("budgets are set but RELAY_USAGE=off: budgets need the usage ledger")
    monthly = access.budgets.defaults.tokens_per_month or access.budgets.defaults.requests_per_month
    monthly = monthly or any(
        k.budgets.tokens_per_month or k.budgets.requests_per_month for k in access.keys
    )
    if monthly and 0 < settings.usage.daily_retention_days < 31:
        # A month's budget sums the month's daily roll-ups: they must outlive the month.
        raise ConfigError(
            "RELAY_USAGE_DAILY_RETENTION_DAYS must be 0 or at least 31 with a monthly budget"
        )
    return settings


def is_loopback(host: str) -> bool:
    """Tell whether a listen address only accepts connections from this machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, bound_hosts: list[str]) -> str | None:
    """Refuse to serve without keys off loopback unless opted in; return a warning otherwise."""
    exposed = [h for h in bound_hosts if not is_loopback(h)]
    if not settings.open_access:
        return None
    if exposed and not settings.allow_open:
        raise ConfigError(
            f"RELAY_API_KEYS is empty but Relay would listen on {exposed[0]}, reachable from other "
            "machines; set RELAY_API_KEYS, bind HOST=127.0.0.1, or set RELAY_ALLOW_OPEN=true"
        )
    where = "every address" if exposed else "loopback only"
    return f"no API keys configured (RELAY_API_KEYS): every caller is let in ({where})"


def replace(settings: Settings, **changes: Any) -> Settings:
    """Return a copy of the settings with some fields changed (used by tests)."""
    import dataclasses

    return dataclasses.replace(settings, **changes)
