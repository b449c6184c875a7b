"""The one way Relay fetches a URL that came from a caller or an upstream reply.

A URL is parsed once, with the parser the HTTP client uses (urllib3's), and refused when its
text could be read two ways: backslashes, userinfo, whitespace or control characters, percent
signs in the host, or a host that is not a canonical name or address (2130706433, 0177.0.0.1,
127.1, a trailing dot). The host is resolved once, every address is checked against the policy,
and the connection goes to the checked address (pinned), sending the original Host header; TLS
still verifies the name. Redirects are never followed. See docs/threat-model.md.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import certifi
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, Timeout
from urllib3.exceptions import HTTPError, LocationParseError
from urllib3.util import parse_url

DEFAULT_PORTS = {"http": 80, "https": 443}
LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")  # a label an IPv4 parser would read
FORBIDDEN_TEXT = re.compile(r"[^\x21-\x7e]|\\")  # whitespace, controls, non-ASCII, backslash
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
CGNAT = ipaddress.ip_network("100.64.0.0/10")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchRefusedError(Exception):
    """The URL was not fetched, or its answer not accepted; the message is safe to show."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason  # "private" (the host's network), "too_large", "type", or ""


@dataclass(frozen=True, slots=True)
class Target:
    """A URL's parts as the connection will use them."""

    scheme: str
    host: str  # lower case; IPv6 literals without brackets
    port: int
    host_header: str
    request_uri: str

    @property
    def origin(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{shown}:{self.port}"


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Where a fetch may go.

    Trusted origins are the operator's own (a backend's URL): fetched even on private networks.
    Other hosts are fetched only when other_hosts is on, and then only public ones unless
    allow_private is on.
    """

    trusted_origins: frozenset[str] = frozenset()
    other_hosts: bool = True
    allow_private: bool = False

    @staticmethod
    def origins(urls: Iterable[str | None]) -> frozenset[str]:
        """The canonical origins of operator-configured URLs (unparseable ones are skipped)."""
        out = set()
        for url in urls:
            if url:
                try:
                    out.add(parse_target(url, strict=False).origin)
                except FetchRefusedError:
                    continue
        return frozenset(out)


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    content_type: str  # the media type, without parameters, lower case


def shown_url(url: str) -> str:
    """A URL for logs: without its query, which may hold a signature (Dify's file URLs)."""
    return str(url).split("?", 1)[0].split("#", 1)[0][:300]


def parse_target(url: str, *, strict: bool = True) -> Target:
    """Parse an http(s) URL once; strict refuses every text two parsers could read apart."""
    if not isinstance(url, str) or FORBIDDEN_TEXT.search(url):
        raise FetchRefusedError(
            "The URL holds whitespace, control, non-ASCII or backslash characters."
        )
    scheme_end = url.find("://")
    authority = re.split(r"[/?#]", url[scheme_end + 3 :], maxsplit=1)[0] if scheme_end > 0 else ""
    if "@" in authority or "%" in authority:
        raise FetchRefusedError("The URL's host part holds userinfo or percent-encoding.")
    try:
        parts = parse_url(url)
    except (LocationParseError, ValueError):
        raise FetchRefusedError("The URL cannot be parsed.") from None
    scheme = (parts.scheme or "").lower()
    if scheme not in DEFAULT_PORTS or not parts.host:
        raise FetchRefusedError("Only absolute http(s) URLs are fetched.")
    if parts.auth is not None:
        raise FetchRefusedError("The URL's host part holds userinfo.")
    if parts.port == 0:
        raise FetchRefusedError("The URL's port is not valid.")
    host = parts.host.lower()
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise FetchRefusedError("The URL's IPv6 host is not valid.") from None
    elif strict:
        _check_name(host)
    port = parts.port or DEFAULT_PORTS[scheme]
    bracketed = f"[{host}]" if ":" in host else host
    return Target(
        scheme=scheme,
        host=host,
        port=port,
        host_header=bracketed if parts.port is None else f"{bracketed}:{parts.port}",
        request_uri=parts.request_uri,
    )


def _check_name(host: str) -> None:
    """A host name of plain labels, or a canonical dotted-quad address: nothing in between."""
    labels = host.split(".")
    if len(host) > 253 or not all(LABEL.fullmatch(label) for label in labels):
        raise FetchRefusedError(f"The URL's host {host!r} is not a canonical host name.")
    if NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            canonical = str(ipaddress.IPv4Address(host)) == host
        except ValueError:
            canonical = False
        if not canonical:
            raise FetchRefusedError(f"The URL's host {host!r} is not a canonical IPv4 address.")


def is_public(address: Address) -> bool:
    """Whether an address is on the public internet, reading through v4-in-v6 embeddings."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo:
            return False  # tunnels to an address hidden in the bits
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and (address in NAT64 or address in IPV4_COMPATIBLE):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
    elif address in CGNAT:
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_link_local
        or address.is_loopback
        or address.is_private
    )


def resolve(target: Target, private_ok: bool) -> str:
    """Resolve the host once, check every address, and return the one to connect to."""
    try:
        literal: Address | None = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[Address] = [literal]
    else:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise FetchRefusedError(f"The host {target.host!r} cannot be resolved.") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise FetchRefusedError(f"The host {target.host!r} cannot be resolved.")
    if not private_ok and not all(is_public(a) for a in addresses):
        raise FetchRefusedError(
            f"The host {target.host!r} is on a private or local network; "
            "downloads from there are refused.",
            reason="private",
        )
    return str(addresses[0])


def fetch_guarded(
    url: str,
    policy: FetchPolicy,
    *,
    max_bytes: int,
    timeout: tuple[float, float],
    accept: Callable[[str], bool] = lambda kind: True,
    total_seconds: float = 30.0,
) -> Fetched:
    """GET a URL within the policy: one answer (no redirects), 200 only, capped in size."""
    target = parse_target(url)
    trusted = target.origin in policy.trusted_origins
    if not trusted and not policy.other_hosts:
        raise FetchRefusedError(f"The host {target.host!r} is not one this backend serves from.")
    address = resolve(target, private_ok=trusted or policy.allow_private)
    pool = _pool(target, address, timeout)
    deadline = time.monotonic() + total_seconds
    try:
        resp = pool.urlopen(
            "GET",
            target.request_uri,
            headers={"Host": target.host_header, "Accept-Encoding": "identity"},
            redirect=False,
            retries=False,
            preload_content=False,
            decode_content=False,
            assert_same_host=False,
        )
        try:
            if resp.status != 200:
                raise FetchRefusedError(f"The download answered HTTP {resp.status}.")
            kind = str(resp.headers.get("Content-Type", "")).split(";")[0].strip().lower()
            if not accept(kind):
                raise FetchRefusedError(
                    f"The URL returned {kind or 'no content type'}, not an accepted type.",
                    reason="type",
                )
            if int(resp.headers.get("Content-Length") or 0) > max_bytes:
                raise _too_large(max_bytes)
            data = bytearray()
            # read1 returns what has arrived, so the deadline is checked while a server drips bytes.
            while chunk := resp.read1(65536, decode_content=False):
                data += chunk
                if len(data) > max_bytes:
                    raise _too_large(max_bytes)
                if time.monotonic() > deadline:
                    raise FetchRefusedError(f"The download took over {total_seconds:.0f} s.")
            return Fetched(bytes(data), kind)
        finally:
            resp.release_conn()
            resp.close()
    except (HTTPError, OSError, ValueError) as e:
        raise FetchRefusedError(f"The download failed: {type(e).__name__}.") from None
    finally:
        pool.close()


def _too_large(max_bytes: int) -> FetchRefusedError:
    return FetchRefusedError(f"The file is larger than {max_bytes} bytes.", reason="too_large")


def _pool(target: Target, address: str, timeout: tuple[float, float]) -> HTTPConnectionPool:
    """A one-connection pool to the checked address; https still verifies the URL's name."""
    limits = Timeout(connect=timeout[0], read=timeout[1])
    if target.scheme == "https":
        return HTTPSConnectionPool(
            address,
            target.port,
            timeout=limits,
            maxsize=1,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    return HTTPConnectionPool(address, target.port, timeout=limits, maxsize=1, retries=False)
