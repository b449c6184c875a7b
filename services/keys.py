"""API keys: who may call the gateway. Secrets are kept only as SHA-256 digests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from services.errors import AuthenticationError


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str


ANONYMOUS = ApiKey(name="anonymous")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, secrets: tuple[str, ...]) -> None:
        # A key from RELAY_API_KEYS is named by a short digest prefix: enough to tell keys apart
        # in logs, useless for guessing the key.
        self._by_digest = {_digest(s): ApiKey(name=f"env-{_digest(s)[:8]}") for s in secrets}

    @property
    def open(self) -> bool:
        """True when no key is configured and every caller is let in."""
        return not self._by_digest

    def authenticate(self, secret: str | None) -> ApiKey:
        """Return the key for a presented secret, or raise AuthenticationError (401)."""
        if self.open:
            return ANONYMOUS
        if not secret:
            raise AuthenticationError("Missing API key. Send it as 'Authorization: Bearer <key>'.")
        # Looking up the digest, not the secret, keeps the comparison's timing independent
        # of how much of the secret a guess got right.
        key = self._by_digest.get(_digest(secret))
        if key is None:
            raise AuthenticationError("Incorrect API key provided.")
        return key
