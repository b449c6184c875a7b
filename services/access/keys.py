"""API keys: who may call the gateway, which models each key may use, and its limits.

Secrets are kept only as SHA-256 digests. Named keys come from the config file's `[keys.NAME]`
tables and are re-read when that file changes; RELAY_API_KEYS keys are fixed at start-up.

Open mode (no key, everyone admitted) is decided once: a gateway that has ever had a key never
becomes open at runtime. A changed file is read once it has stayed unchanged for half a second.
A reload that finds no key at all (the file emptied, cut short by a
non-atomic write, or its last table deleted) keeps the keys in force and logs an error; to go
open the operator restarts without keys (docs/access.md "Keys").
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from loguru import logger

import config
import settings.access
from services.core.errors import AuthenticationError, PermissionDeniedError
from services.core.types import ModelInfo
from settings.access import KeySettings, Limits
from settings.budgets import NO_BUDGETS, Budgets

RELOAD_INTERVAL = 1.0  # seconds between looks at the key file's modification time
SETTLE_SECONDS = 0.5  # a changed key file must stay unchanged this long before it is read
NO_LIMITS = Limits(0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    models: tuple[str, ...] = ("*",)
    limits: Limits = NO_LIMITS
    cache_group: str | None = None
    expires: datetime | None = None
    enabled: bool = True
    ollama_admin: bool = False  # may pull, push, create, copy and delete models on Ollama
    budgets: Budgets = NO_BUDGETS  # per UTC day and month (docs/access.md "Budgets")

    @property
    def tenant(self) -> str:
        """The reply-cache partition: the key itself unless the operator grouped keys."""
        return self.cache_group or self.name

    def allows(self, model: str) -> bool:
        """Tell whether this key may use `model` (a bare name also matches its ':latest')."""
        names = {model}
        if model.endswith(":latest"):
            names.add(model.removesuffix(":latest"))
        elif ":" not in model:
            names.add(model + ":latest")
        return any(fnmatchcase(n, p) for n in names for p in self.models)


ANONYMOUS = ApiKey(name="anonymous")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def authorize_model(key: ApiKey, model: str) -> None:
    """Raise PermissionDeniedError (403) when the key may not use the model."""
    if not key.allows(model):
        raise PermissionDeniedError(
            f"The API key '{key.name}' is not allowed to use the model `{model}`.", param="model"
        )


def visible_models(key: ApiKey, models: Iterable[ModelInfo]) -> list[ModelInfo]:
    """Keep the models this key may use."""
    return [m for m in models if key.allows(m.id)]


class KeyStore:
    def __init__(
        self,
        secrets: tuple[str, ...],
        named: tuple[KeySettings, ...] = (),
        *,
        defaults: Limits = NO_LIMITS,
        budgets: Budgets = NO_BUDGETS,
        source: str | None = None,
        reader: Callable[[str], tuple[KeySettings, ...]] = settings.access.read_keys,
    ) -> None:
        self._defaults, self._budgets = defaults, budgets
        # A key from RELAY_API_KEYS is named by a short digest prefix: enough to tell keys apart
        # in logs, useless for guessing the key.
        self._fixed = tuple(
            (digest(s), ApiKey(name=f"env-{digest(s)[:8]}", limits=defaults, budgets=budgets))
            for s in secrets
        )
        self._entries = self._fixed + self._build(named)
        # Once closed, always closed: only a restart without keys opens the gateway.
        self._closed = bool(self._entries)
        self._source, self._reader = source, reader
        self._stamp = self._file_stamp()
        self._settling: tuple[int, int, int] | None = None  # a new stamp waiting to settle
        self._checked = time.monotonic()

    def _build(self, named: tuple[KeySettings, ...]) -> tuple[tuple[str, ApiKey], ...]:
        return tuple(
            (
                k.digest,
                ApiKey(
                    name=k.name,
                    models=k.models,
                    limits=k.limits.over(self._defaults),
                    cache_group=k.cache_group,
                    expires=k.expires,
                    enabled=k.enabled,
                    ollama_admin=k.ollama_admin,
                    budgets=k.budgets.over(self._budgets),
                ),
            )
            for k in named
        )

    @property
    def open(self) -> bool:
        """True when no key has ever been configured and every caller is let in."""
        self._maybe_reload()
        return not self._closed

    def authenticate(self, secret: str | None) -> ApiKey:
        """Return the key for a presented secret, or raise AuthenticationError (401)."""
        if self.open:
            return ANONYMOUS
        if not secret:
            raise AuthenticationError("Missing API key. Send it as 'Authorization: Bearer <key>'.")
        wanted = digest(secret)
        found = None
        # Every entry is compared, in constant time, so timing tells nothing about which key
        # (or how much of one) a guess matched.
        for known, key in self._entries:
            if hmac.compare_digest(known, wanted):
                found = key
        if found is None:
            raise AuthenticationError("Incorrect API key provided.")
        if not found.enabled:
            raise AuthenticationError("This API key has been revoked.")
        if found.expires is not None and found.expires <= datetime.now(UTC):
            raise AuthenticationError("This API key has expired.")
        return found

    def all(self) -> list[ApiKey]:
        """Every key in force, revoked and expired ones too (for the admin pages)."""
        self._maybe_reload()
        return [key for _digest, key in self._entries]

    def is_relay_key(self, secret: str) -> bool:
        """Tell whether a secret is any key of this store, revoked and expired ones too."""
        self._maybe_reload()
        wanted = digest(secret)
        found = False
        for known, _key in self._entries:
            found |= hmac.compare_digest(known, wanted)
        return found

    # --- reloading the named keys when their file changes -------------------------------------

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if not self._source:
            return None
        try:
            st = os.stat(self._source)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _maybe_reload(self) -> None:
        # A stat at most once a second keeps this off the request's cost.
        if not self._source or time.monotonic() - self._checked < RELOAD_INTERVAL:
            return
        self._checked = time.monotonic()
        stamp = self._file_stamp()
        if stamp == self._stamp:
            self._settling = None
            return
        if stamp != self._settling:
            # Changed since the last look: read it only once it has stayed the same for
            # SETTLE_SECONDS, so a file an editor rewrites in place is not read half-written (a
            # cut table could lose its `models` or `enabled = false` line and widen a key).
            self._settling = stamp
            self._checked -= RELOAD_INTERVAL - SETTLE_SECONDS  # look again that soon
            return
        self._settling = None
        self._stamp = stamp
        if stamp is None:
            logger.error("keys not reloaded: the config file is gone; the old keys stay in force")
            return
        try:
            named = self._reader(self._source)
        except (config.ConfigError, ValueError) as e:  # ValueError: e.g. bytes that are not UTF-8
            logger.error("keys not reloaded, the old ones stay in force: {}", e)
            return
        entries = self._fixed + self._build(named)
        if self._closed and not entries:
            # An empty key set would admit everyone: likely a file caught mid-write, or the last
            # key deleted. Refusing it keeps the gateway closed (revoke a key to shut it out).
            logger.error(
                "keys not reloaded: the config file now has no key, and an empty key set would "
                "open the gateway to everyone; the old keys stay in force (restart without keys "
                "to run open)"
            )
            return
        self._entries = entries
        self._closed = self._closed or bool(entries)
        logger.info("keys reloaded from the config file: {} named", len(named))
