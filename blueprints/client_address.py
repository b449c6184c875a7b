"""Find the real client address behind trusted reverse proxies (nginx), for logs and limits.

X-Forwarded-For is believed only when the connection comes from a trusted proxy, and then only
as far as the hops are trusted proxies too: walking the list from the right, the first address
that is not a trusted proxy is the client. A client's own forged entries sit further left.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """WSGI middleware that rewrites REMOTE_ADDR to the client's address."""

    def __init__(self, app: Callable[..., Any], networks: Iterable[str]) -> None:
        self.app = app
        self.networks: list[Network] = [ipaddress.ip_network(n) for n in networks]

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        remote = environ.get("REMOTE_ADDR", "")
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded and self.trusted(remote):
            client = remote
            for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
                client = hop
                if not self.trusted(hop):
                    break
            environ["relay.proxy_addr"] = remote
            environ["REMOTE_ADDR"] = client
        return self.app(environ, start_response)
