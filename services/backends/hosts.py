"""Several upstream hosts behind one backend: balancing, failover, and hosts that come back.

Requests go round robin over the hosts that are up. A host that cannot be reached is marked down
for a back-off that doubles with each failure (2 s up to 60 s); after it, the next request tries
it again (a probe with real traffic that fails over at once if the host is still down), and a
success marks it up. Standard library only; no I/O here.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

MAX_BACKOFF = 60.0


class HostPool:
    def __init__(self, urls: tuple[str, ...]) -> None:
        self.urls = urls
        self._down_until = dict.fromkeys(urls, 0.0)
        self._failures = dict.fromkeys(urls, 0)
        self._next = 0
        self._lock = threading.Lock()

    def order(self) -> list[str]:
        """Hosts to try, in order: those up (taking turns), then those down, soonest back first."""
        now = time.monotonic()
        with self._lock:
            start, self._next = self._next, self._next + 1
            turn = [self.urls[(start + i) % len(self.urls)] for i in range(len(self.urls))]
            up = [u for u in turn if self._down_until[u] <= now]
            down = sorted(
                (u for u in turn if self._down_until[u] > now), key=lambda u: self._down_until[u]
            )
        return up + down

    def failed(self, url: str) -> None:
        with self._lock:
            self._failures[url] += 1
            backoff = min(MAX_BACKOFF, 2.0 ** self._failures[url])
            self._down_until[url] = time.monotonic() + backoff

    def succeeded(self, url: str) -> bool:
        """Mark a host up; say whether it had been down (to log its return)."""
        with self._lock:
            was_down = self._failures[url] > 0
            self._failures[url], self._down_until[url] = 0, 0.0
        return was_down

    def report(self) -> list[dict[str, str]]:
        now = time.monotonic()
        return [
            {"host": label(u), "state": "up" if self._down_until[u] <= now else "down"}
            for u in self.urls
        ]


def label(url: str) -> str:
    """Name a host for logs and /ready: scheme, host and port, never credentials or paths."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
