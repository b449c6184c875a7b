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
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

VERSION = "0.1.0"

if TYPE_CHECKING:
    from config_access import AccessSettings, RedisSettings

LOG_LEVELS = {
    "error": "ERROR",
    "warn": "WARNING",
    "warning": "WARNING",
    "info": "INFO",
    "debug": "DEBUG",
}
BACKEND_TYPES = ("ollama", "dify", "openai")
OPENAI_APIS = ("chat", "responses")
DIFY_MODES = ("chat", "agent-chat", "advanced-chat", "agent", "completion", "workflow")
MEMORY_MODES = ("conversation", "history")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and says what was wrong."""


@dataclass(frozen=True, slots=True)
class DifyAppSettings:
    """One Dify app, exposed as the model `name`; its key never appears in repr or logs."""

    name: str
    api_key: str = field(repr=False)
    memory: str = "conversation"
    inputs: Mapping[str, Any] = field(default_factory=dict)
    mode: str | None = None  # detected with GET /info when not set
    query_input: str | None = None  # workflow/completion input that receives the user's text
    answer_output: str | None = None  # workflow output that holds the answer


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """One upstream server: its type, where it is and which model names it serves."""

    name: str
    type: str
    url: str
    models: tuple[str, ...] = ("*",)
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    apps: tuple[DifyAppSettings, ...] = ()  # Dify only
    allow_caller_keys: bool = False  # Dify only: callers may send X-Dify-Api-Key
    api_key: str | None = field(default=None, repr=False)  # OpenAI-compatible: upstream key
    api: str = "chat"  # OpenAI-compatible: "chat" or "responses" (the upstream's API)
    # OpenAI-compatible: /v1 paths Relay does not serve go here; whose key goes with them
    passthrough: bool = False
    passthrough_auth: str = "gateway"  # "gateway": the key above; "caller": the caller's


@dataclass(frozen=True, slots=True)
class FileSettings:
    """Lasting copies of the files backends return (README "Files that last"); off when None."""

    directory: str | None = None  # local store: RELAY_FILES_DIR
    max_bytes: int = 20 * 1024 * 1024
    s3_bucket: str | None = None  # S3-compatible store instead of the directory
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = field(default=None, repr=False)
    s3_secret_access_key: str | None = field(default=None, repr=False)
    s3_prefix: str = ""
    s3_public_url: str | None = None  # objects are public there; else Relay serves them


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
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call /v1; "*" for any
    backends: tuple[BackendSettings, ...] = ()
    fetch_image_urls: bool = False
    image_max_bytes: int = 10 * 1024 * 1024
    image_fetch_allow_private: bool = False
    image_fetch_timeout: float = 10.0
    conversation_ttl: float = 86400.0
    response_ttl: float = 86400.0
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    metrics_allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")
    metrics_token: str | None = field(default=None, repr=False)
    metrics_dir: str | None = None  # set by gunicorn.conf.py for multiprocess metrics
    config_file: str | None = None
    public_url: str | None = None  # the base URL clients reach Relay at (lasting file links)
    files: FileSettings | None = None  # lasting files; None when off
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Keys, limits, reply cache and Redis (issue 4): their settings live in config_access.py.
    access: AccessSettings = field(default_factory=lambda: _access_module().AccessSettings())
    redis: RedisSettings = field(default_factory=lambda: _access_module().RedisSettings())

    @property
    def open_access(self) -> bool:
        """True when no API key is configured, so every caller is let in."""
        return not self.api_keys and not self.access.keys


# name -> (meaning, default shown in docs). The README's configuration table follows this list.
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
    "RELAY_WORKERS": ("gunicorn worker processes", "1"),
    "RELAY_WORKER_CONNECTIONS": ("concurrent connections per gevent worker", "1000"),
    "RELAY_MAX_BODY_BYTES": ("largest request body accepted (413 above)", "20971520"),
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
    "RELAY_RESPONSE_TTL": ("seconds stored Responses API replies are kept", "86400"),
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
    "RELAY_LIMITS_FAIL_OPEN": ("let requests through when the limit store is down", "true"),
    "RELAY_CACHE_TTL": ("seconds a reply stays in the reply cache; 0 turns the cache off", "300"),
    "RELAY_CACHE_MAX_ENTRIES": ("replies kept per worker by the in-process cache", "1024"),
    "REDIS_URL": ("Redis for limits, reply cache and in-flight sharing across workers", "unset"),
    "RELAY_REDIS_TIMEOUT": ("seconds to wait for Redis before treating it as down", "1"),
}


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from defaults, RELAY_CONFIG, the `.env` file and the environment."""
    return _build(_environment(environ))


def _environment(environ: Mapping[str, str] | None) -> dict[str, str]:
    process_env = os.environ if environ is None else environ
    dotenv_path = process_env.get("RELAY_ENV_FILE", ".env")
    env: dict[str, str] = {}
    if dotenv_path and os.path.isfile(dotenv_path):
        env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    env.update(process_env)
    return env


def _build(env: Mapping[str, str]) -> Settings:
    file_path = env.get("RELAY_CONFIG") or None
    doc = _read_toml(file_path) if file_path else {}
    server = _table(doc, "server")
    images = _table(doc, "images")

    def pick(var: str, table: Mapping[str, Any], key: str, default: Any) -> tuple[str, Any]:
        # The environment wins over the file, the file over the default.
        if env.get(var, "") != "":
            return var, env[var]
        if key in table:
            return f"RELAY_CONFIG {key}", table[key]
        return var, default

    host = _str(*pick("HOST", server, "host", "127.0.0.1"))
    settings = Settings(
        host=host,
        port=_int(*pick("PORT", server, "port", 3000), lo=1, hi=65535),
        workers=_int(*pick("RELAY_WORKERS", server, "workers", 1), lo=1, hi=256),
        worker_connections=_int(
            *pick("RELAY_WORKER_CONNECTIONS", server, "worker_connections", 1000), lo=1, hi=100_000
        ),
        log_level=_log_level(*pick("LOG_LEVEL", server, "log_level", "info")),
        log_format=_choice(
            *pick("RELAY_LOG_FORMAT", server, "log_format", "text"), ("text", "json")
        ),
        log_dir=_str(*pick("RELAY_LOG_DIR", server, "log_dir", "")) or None,
        api_keys=_keys(*pick("RELAY_API_KEYS", server, "api_keys", "")),
        allow_open=_bool(*pick("RELAY_ALLOW_OPEN", server, "allow_open", False)),
        max_body_bytes=_int(
            *pick("RELAY_MAX_BODY_BYTES", server, "max_body_bytes", 20 * 1024 * 1024), lo=1024
        ),
        cors_origins=_origins(*pick("RELAY_CORS_ORIGINS", server, "cors_origins", "")),
        backends=_backends(env, doc),
        fetch_image_urls=_bool(*pick("RELAY_FETCH_IMAGE_URLS", images, "fetch_urls", False)),
        image_max_bytes=_int(
            *pick("RELAY_IMAGE_MAX_BYTES", images, "max_bytes", 10 * 1024 * 1024), lo=1
        ),
        image_fetch_allow_private=_bool(
            *pick("RELAY_IMAGE_FETCH_ALLOW_PRIVATE", images, "allow_private", False)
        ),
        image_fetch_timeout=_float(
            *pick("RELAY_IMAGE_FETCH_TIMEOUT", images, "fetch_timeout", 10.0), lo=0.1
        ),
        conversation_ttl=_float(
            *pick("RELAY_CONVERSATION_TTL", server, "conversation_ttl", 86400.0), lo=1
        ),
        response_ttl=_float(*pick("RELAY_RESPONSE_TTL", server, "response_ttl", 86400.0), lo=1),
        trusted_proxies=_networks(
            *pick("RELAY_TRUSTED_PROXIES", server, "trusted_proxies", "127.0.0.1,::1")
        ),
        metrics_allow=_networks(
            *pick("RELAY_METRICS_ALLOW", server, "metrics_allow", "127.0.0.1,::1")
        ),
        metrics_token=_str(*pick("RELAY_METRICS_TOKEN", server, "metrics_token", "")) or None,
        metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
        config_file=file_path,
        public_url=_optional_url("RELAY_PUBLIC_URL", env.get("RELAY_PUBLIC_URL")),
        files=_file_settings(env),
        extra={k: v for k, v in doc.items() if k not in ("server", "images", "backends")},
        access=_access_module().access_settings(env, doc),
        redis=_access_module().redis_settings(env, doc),
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


# --- backends -----------------------------------------------------------------------------


def _backends(env: Mapping[str, str], doc: Mapping[str, Any]) -> tuple[BackendSettings, ...]:
    connect = _float("RELAY_CONNECT_TIMEOUT", env.get("RELAY_CONNECT_TIMEOUT") or 5.0, lo=0.01)
    read = _float("RELAY_READ_TIMEOUT", env.get("RELAY_READ_TIMEOUT") or 600.0, lo=0.01)
    tables = doc.get("backends")
    if tables is None:
        return _backends_from_env(env, connect, read)
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(
            "RELAY_CONFIG backends must be a table of named backends, e.g. [backends.local]"
        )
    out = []
    for name, table in tables.items():
        where = f"RELAY_CONFIG backends.{name}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        kind = table.get("type", "ollama")
        if kind not in BACKEND_TYPES:
            raise ConfigError(
                f"{where}.type must be one of {', '.join(BACKEND_TYPES)}, got {kind!r}"
            )
        if "url" not in table:
            raise ConfigError(f"{where}.url is required")
        apps = _dify_apps(where, table, env) if kind == "dify" else ()
        allow_caller_keys = _bool(
            f"{where}.allow_caller_keys", table.get("allow_caller_keys", False)
        )
        if kind == "dify" and not apps and not allow_caller_keys:
            raise ConfigError(
                f"{where} needs an [{where[13:]}.apps.NAME] table or allow_caller_keys"
            )
        models = table.get("models", [a.name for a in apps] if apps else ["*"])
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise ConfigError(f"{where}.models must be a list of model names or globs")
        out.append(
            BackendSettings(
                name=name,
                type=kind,
                url=(_dify_url if kind == "dify" else _url)(f"{where}.url", table["url"]),
                models=tuple(models),
                apps=apps,
                allow_caller_keys=allow_caller_keys,
                **(_openai_options(where, table, env) if kind == "openai" else {}),
                connect_timeout=_float(
                    f"{where}.connect_timeout", table.get("connect_timeout", connect), lo=0.01
                ),
                read_timeout=_float(
                    f"{where}.read_timeout", table.get("read_timeout", read), lo=0.01
                ),
            )
        )
    return tuple(out)


def _backends_from_env(
    env: Mapping[str, str], connect: float, read: float
) -> tuple[BackendSettings, ...]:
    """The quick start: Ollama from OLLAMA_BASE_URL, one Dify app from DIFY_API_URL."""
    ollama_var = "OLLAMA_BASE_URL" if env.get("OLLAMA_BASE_URL") else "OLLAMA_API"
    ollama_url = env.get("OLLAMA_BASE_URL") or env.get("OLLAMA_API")
    ollama = BackendSettings(
        name="ollama",
        type="ollama",
        url=_url(ollama_var, ollama_url or "http://localhost:11434"),
        connect_timeout=connect,
        read_timeout=read,
    )
    if not env.get("DIFY_API_URL"):
        return (ollama,)
    allow = _bool("DIFY_ALLOW_CALLER_KEYS", env.get("DIFY_ALLOW_CALLER_KEYS", False))
    key = env.get("DIFY_API_KEY", "").strip()
    if not key and not allow:
        raise ConfigError("DIFY_API_KEY is required with DIFY_API_URL")
    name = env.get("DIFY_MODEL") or "dify"
    app = DifyAppSettings(
        name=name,
        api_key=key,
        memory=_choice("DIFY_MEMORY", env.get("DIFY_MEMORY") or "conversation", MEMORY_MODES),
        query_input=env.get("DIFY_INPUT_VARIABLE") or None,
        answer_output=env.get("DIFY_OUTPUT_VARIABLE") or None,
    )
    # Alone, the Dify app answers every model name, as the tools people migrate from do.
    dify = BackendSettings(
        name="dify",
        type="dify",
        url=_dify_url("DIFY_API_URL", env["DIFY_API_URL"]),
        models=(name,) if ollama_url else ("*",),
        connect_timeout=connect,
        read_timeout=read,
        apps=(app,) if key else (),
        allow_caller_keys=allow,
    )
    return (dify, ollama) if ollama_url else (dify,)


def _dify_apps(
    where: str, table: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[DifyAppSettings, ...]:
    apps = table.get("apps", {})
    if not isinstance(apps, dict):
        raise ConfigError(f"{where}.apps must be a table of named apps")
    out = []
    for name, app in apps.items():
        at = f"{where}.apps.{name}"
        if not isinstance(app, dict):
            raise ConfigError(f"{at} must be a table")
        key_env = app.get("key_env")
        if not isinstance(key_env, str) or not key_env:
            raise ConfigError(f"{at}.key_env must name the environment variable holding its key")
        if not env.get(key_env, "").strip():
            raise ConfigError(f"{at}.key_env: the environment variable {key_env} is not set")
        inputs = app.get("inputs", {})
        if not isinstance(inputs, dict):
            raise ConfigError(f"{at}.inputs must be a table")
        mode = app.get("mode")
        out.append(
            DifyAppSettings(
                name=name,
                api_key=env[key_env].strip(),
                memory=_choice(f"{at}.memory", app.get("memory", "conversation"), MEMORY_MODES),
                inputs=inputs,
                mode=None if mode is None else _choice(f"{at}.mode", mode, DIFY_MODES),
                query_input=_opt_str(f"{at}.query_input", app.get("query_input")),
                answer_output=_opt_str(f"{at}.answer_output", app.get("answer_output")),
            )
        )
    return tuple(out)


def _openai_options(where: str, table: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The settings of an OpenAI-compatible upstream: its key (from key_env) and its API."""
    key_env = table.get("key_env")
    key = None
    if key_env is not None:
        if not isinstance(key_env, str) or not key_env:
            raise ConfigError(f"{where}.key_env must name the environment variable holding its key")
        key = env.get(key_env, "").strip()
        if not key:
            raise ConfigError(f"{where}.key_env: the environment variable {key_env} is not set")
    return {
        "api_key": key,
        "api": _choice(f"{where}.api", table.get("api", "chat"), OPENAI_APIS),
        "passthrough": _bool(f"{where}.passthrough", table.get("passthrough", False)),
        "passthrough_auth": _choice(
            f"{where}.passthrough_auth",
            table.get("passthrough_auth", "gateway"),
            ("gateway", "caller"),
        ),
    }


def _file_settings(env: Mapping[str, str]) -> FileSettings | None:
    """Lasting files: a local directory or an S3-compatible bucket, or None (off)."""
    directory = (env.get("RELAY_FILES_DIR") or "").strip() or None
    bucket = (env.get("RELAY_S3_BUCKET") or "").strip() or None
    if directory and bucket:
        raise ConfigError("set RELAY_FILES_DIR or RELAY_S3_BUCKET, not both")
    if not directory and not bucket:
        return None
    key_id = (env.get("RELAY_S3_ACCESS_KEY_ID") or "").strip() or None
    secret = (env.get("RELAY_S3_SECRET_ACCESS_KEY") or "").strip() or None
    if bool(key_id) != bool(secret):
        raise ConfigError("RELAY_S3_ACCESS_KEY_ID and RELAY_S3_SECRET_ACCESS_KEY go together")
    return FileSettings(
        directory=directory,
        max_bytes=_int(
            "RELAY_FILES_MAX_BYTES", env.get("RELAY_FILES_MAX_BYTES") or 20 * 1024 * 1024, lo=1
        ),
        s3_bucket=bucket,
        s3_endpoint_url=_optional_url("RELAY_S3_ENDPOINT_URL", env.get("RELAY_S3_ENDPOINT_URL")),
        s3_region=(env.get("RELAY_S3_REGION") or "").strip() or None,
        s3_access_key_id=key_id,
        s3_secret_access_key=secret,
        s3_prefix=(env.get("RELAY_S3_PREFIX") or "").strip().lstrip("/"),
        s3_public_url=_optional_url("RELAY_S3_PUBLIC_URL", env.get("RELAY_S3_PUBLIC_URL")),
    )


# --- value parsers: each names the setting in its error -----------------------------------


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"RELAY_CONFIG cannot read {path!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"RELAY_CONFIG {path!r} is not valid TOML: {e}") from None


def _table(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"RELAY_CONFIG [{name}] must be a table")
    return value


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value.strip()


def _int(name: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    try:
        if isinstance(value, bool | float):
            raise ValueError
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ConfigError(f"{name} must be {bounds}, got {number}")
    return number


def _float(name: str, value: Any, *, lo: float | None = None) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if lo is not None and not number >= lo:
        raise ConfigError(f"{name} must be at least {lo}, got {number}")
    return number


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _log_level(name: str, value: Any) -> str:
    text = str(value).strip().lower()
    if text not in LOG_LEVELS:
        raise ConfigError(f"{name} must be one of error, warn, info, debug; got {value!r}")
    return LOG_LEVELS[text]


def _keys(name: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    keys = tuple(str(k).strip() for k in items if str(k).strip())
    for key in keys:
        if len(key) < 8 or any(c.isspace() for c in key):
            raise ConfigError(f"{name} has a key shorter than 8 characters or with spaces in it")
    return keys


def _networks(name: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    out = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"{name} must list IP addresses or networks, got {item!r}") from None
    return tuple(out)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def _opt_str(name: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{name} must be a non-empty string")
    return value


def _origins(name: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    origins = tuple(str(o).strip().rstrip("/") for o in items if str(o).strip())
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and (
            parts.scheme not in ("http", "https") or not parts.hostname or parts.path
        ):
            raise ConfigError(
                f"{name} must list origins like https://app.example.com (scheme, host and "
                f"optional port, no path) or *, got {origin!r}"
            )
    return origins


def _dify_url(name: str, value: Any) -> str:
    """Accept Dify's API URL with or without the /v1 suffix; return it with."""
    url = _url(name, value)
    return url if url.endswith("/v1") else url + "/v1"


def _optional_url(name: str, value: Any) -> str | None:
    return _url(name, value) if value and str(value).strip() else None


def _url(name: str, value: Any) -> str:
    text = str(value).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{name} must be an http(s) URL like http://localhost:11434, got {value!r}"
        )
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(f"{name} has a bad port: {value!r}") from None
    return text


def _access_module() -> ModuleType:
    # config_access builds on this module's parsers, so it is imported when first needed.
    import config_access

    return config_access


def replace(settings: Settings, **changes: Any) -> Settings:
    """Return a copy of the settings with some fields changed (used by tests)."""
    import dataclasses

    return dataclasses.replace(settings, **changes)
