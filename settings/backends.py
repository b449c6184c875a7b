"""Backend settings: Ollama, Dify apps and OpenAI-compatible upstreams, from the environment's
quick-start variables or the RELAY_CONFIG file's [backends.NAME] tables; and lasting files.

Reads no environment itself (config.py hands it the merged one). Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from settings.values import (
    ConfigError,
    as_bool,
    as_choice,
    as_dify_url,
    as_float,
    as_int,
    as_opt_str,
    as_optional_url,
    as_url,
)

BACKEND_TYPES = ("ollama", "dify", "openai")
OPENAI_APIS = ("chat", "responses")
DIFY_MODES = ("chat", "agent-chat", "advanced-chat", "agent", "completion", "workflow")
MEMORY_MODES = ("conversation", "history")


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
    files_url: str | None = None  # Dify only: its FILES_URL when another host serves its files
    api_key: str | None = field(default=None, repr=False)  # OpenAI-compatible: upstream key
    api: str = "chat"  # OpenAI-compatible: "chat" or "responses" (the upstream's API)
    # OpenAI-compatible: the name the token limit goes upstream under; "as_sent" keeps the
    # caller's (llama.cpp's Python server and older vLLM know only max_tokens)
    max_tokens_field: str = "as_sent"
    # OpenAI-compatible: /v1 paths Relay does not serve go here; whose key goes with them
    passthrough: bool = False
    passthrough_auth: str = "gateway"  # "gateway": the key above; "caller": the caller's
    passthrough_paths: tuple[str, ...] = ()  # globs under /v1 that may pass; empty: any
    urls: tuple[str, ...] = ()  # several hosts: balanced, with failover (url is the first)
    # Backpressure (services/core/backpressure.py): 0 in flight means no limit.
    max_in_flight: int = 0
    max_queue: int = 0
    queue_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class FileSettings:
    """Lasting copies of the files backends return; off when None.

    See docs/backends.md "Files that last".
    """

    directory: str | None = None  # local store: RELAY_FILES_DIR
    max_bytes: int = 20 * 1024 * 1024
    s3_bucket: str | None = None  # S3-compatible store instead of the directory
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = field(default=None, repr=False)
    s3_secret_access_key: str | None = field(default=None, repr=False)
    s3_prefix: str = ""
    s3_public_url: str | None = None  # objects are public there; else Relay serves them


def backend_settings(env: Mapping[str, str], doc: Mapping[str, Any]) -> tuple[BackendSettings, ...]:
    connect = as_float("RELAY_CONNECT_TIMEOUT", env.get("RELAY_CONNECT_TIMEOUT") or 5.0, lo=0.01)
    read = as_float("RELAY_READ_TIMEOUT", env.get("RELAY_READ_TIMEOUT") or 600.0, lo=0.01)
    flow: dict[str, Any] = {
        "max_in_flight": as_int("RELAY_MAX_IN_FLIGHT", env.get("RELAY_MAX_IN_FLIGHT") or 0, lo=0),
        "max_queue": as_int("RELAY_MAX_QUEUE", env.get("RELAY_MAX_QUEUE") or 0, lo=0),
        "queue_timeout": as_float(
            "RELAY_QUEUE_TIMEOUT", env.get("RELAY_QUEUE_TIMEOUT") or 30.0, lo=0.01
        ),
    }
    tables = doc.get("backends")
    if tables is None:
        return tuple(replace(b, **flow) for b in _backends_from_env(env, connect, read))
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
        # `url` is one host, or a list of hosts to balance over and fail over between.
        check = as_dify_url if kind == "dify" else as_url
        raw = table["url"] if isinstance(table["url"], list) else [table["url"]]
        if not raw:
            raise ConfigError(f"{where}.url must not be an empty list")
        urls = tuple(check(f"{where}.url", u) for u in raw)
        apps = _dify_apps(where, table, env) if kind == "dify" else ()
        allow_caller_keys = as_bool(
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
                url=urls[0],
                urls=urls,
                max_in_flight=as_int(
                    f"{where}.max_in_flight",
                    table.get("max_in_flight", flow["max_in_flight"]),
                    lo=0,
                ),
                max_queue=as_int(
                    f"{where}.max_queue", table.get("max_queue", flow["max_queue"]), lo=0
                ),
                queue_timeout=as_float(
                    f"{where}.queue_timeout",
                    table.get("queue_timeout", flow["queue_timeout"]),
                    lo=0.01,
                ),
                models=tuple(models),
                apps=apps,
                allow_caller_keys=allow_caller_keys,
                files_url=as_optional_url(f"{where}.files_url", table.get("files_url"))
                if kind == "dify"
                else None,
                **(_openai_options(where, table, env) if kind == "openai" else {}),
                connect_timeout=as_float(
                    f"{where}.connect_timeout", table.get("connect_timeout", connect), lo=0.01
                ),
                read_timeout=as_float(
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
    # Several Ollama hosts may be given, comma-separated: balanced, with failover.
    hosts = tuple(
        as_url(ollama_var, u)
        for u in (ollama_url or "http://localhost:11434").split(",")
        if u.strip()
    )
    ollama = BackendSettings(
        name="ollama",
        type="ollama",
        url=hosts[0],
        urls=hosts,
        connect_timeout=connect,
        read_timeout=read,
    )
    if not env.get("DIFY_API_URL"):
        return (ollama,)
    allow = as_bool("DIFY_ALLOW_CALLER_KEYS", env.get("DIFY_ALLOW_CALLER_KEYS", False))
    key = env.get("DIFY_API_KEY", "").strip()
    if not key and not allow:
        raise ConfigError("DIFY_API_KEY is required with DIFY_API_URL")
    name = env.get("DIFY_MODEL") or "dify"
    app = DifyAppSettings(
        name=name,
        api_key=key,
        memory=as_choice("DIFY_MEMORY", env.get("DIFY_MEMORY") or "conversation", MEMORY_MODES),
        query_input=env.get("DIFY_INPUT_VARIABLE") or None,
        answer_output=env.get("DIFY_OUTPUT_VARIABLE") or None,
    )
    # Alone, the Dify app answers every model name, as the tools people migrate from do.
    dify = BackendSettings(
        name="dify",
        type="dify",
        url=as_dify_url("DIFY_API_URL", env["DIFY_API_URL"]),
        models=(name,) if ollama_url else ("*",),
        connect_timeout=connect,
        read_timeout=read,
        apps=(app,) if key else (),
        allow_caller_keys=allow,
        files_url=as_optional_url("DIFY_FILES_URL", env.get("DIFY_FILES_URL")),
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
                memory=as_choice(f"{at}.memory", app.get("memory", "conversation"), MEMORY_MODES),
                inputs=inputs,
                mode=None if mode is None else as_choice(f"{at}.mode", mode, DIFY_MODES),
                query_input=as_opt_str(f"{at}.query_input", app.get("query_input")),
                answer_output=as_opt_str(f"{at}.answer_output", app.get("answer_output")),
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
        "api": as_choice(f"{where}.api", table.get("api", "chat"), OPENAI_APIS),
        "max_tokens_field": as_choice(
            f"{where}.max_tokens_field",
            table.get("max_tokens_field", "as_sent"),
            ("as_sent", "max_tokens", "max_completion_tokens"),
        ),
        "passthrough": as_bool(f"{where}.passthrough", table.get("passthrough", False)),
        "passthrough_auth": as_choice(
            f"{where}.passthrough_auth",
            table.get("passthrough_auth", "gateway"),
            ("gateway", "caller"),
        ),
        "passthrough_paths": _path_globs(
            f"{where}.passthrough_paths", table.get("passthrough_paths", [])
        ),
    }


def _path_globs(name: str, value: Any) -> tuple[str, ...]:
    """Pass-through path globs, relative to /v1 ("audio/*", "moderations")."""
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ConfigError(f"{name} must be a list of paths or globs under /v1")
    globs = tuple(p.strip().strip("/") for p in value)
    if not all(globs):
        raise ConfigError(f"{name} has an empty path")
    return globs


def file_settings(env: Mapping[str, str]) -> FileSettings | None:
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
        max_bytes=as_int(
            "RELAY_FILES_MAX_BYTES", env.get("RELAY_FILES_MAX_BYTES") or 20 * 1024 * 1024, lo=1
        ),
        s3_bucket=bucket,
        s3_endpoint_url=as_optional_url("RELAY_S3_ENDPOINT_URL", env.get("RELAY_S3_ENDPOINT_URL")),
        s3_region=(env.get("RELAY_S3_REGION") or "").strip() or None,
        s3_access_key_id=key_id,
        s3_secret_access_key=secret,
        s3_prefix=(env.get("RELAY_S3_PREFIX") or "").strip().lstrip("/"),
        s3_public_url=as_optional_url("RELAY_S3_PUBLIC_URL", env.get("RELAY_S3_PUBLIC_URL")),
    )
