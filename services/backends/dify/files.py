"""Download the files a Dify app returns and keep them, so replies link to lasting URLs.

Dify signs its file URLs for minutes (docs/design.md §8.4). When lasting files are on, each
file Dify serves is fetched through the guarded fetcher (services/common/outbound.py), capped in
size and time, and stored; a file that cannot be kept keeps Dify's URL and a warning is logged:
the reply never fails because of it. Only Dify's own origin, or the files URL the operator names
for it, is fetched: a reply cannot make Relay download from anywhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from loguru import logger

from services.common.outbound import (
    FetchPolicy,
    FetchRefusedError,
    Target,
    fetch_guarded,
    parse_target,
    shown_url,
)
from services.core.types import CallContext
from services.state.file_store import FileRefusedError, LastingFiles

FETCH_SECONDS = 30.0  # a whole download; each read waits at most 10 s
# Dify's signed file URLs (docs/design.md §8.4), also when FILES_URL names another host.
SIGNED_PATH = re.compile(r"/files/(tools/)?[A-Za-z0-9._-]+(/(file|image)-preview)?")


@dataclass(frozen=True, slots=True)
class DifyFileHosts:
    """Where a Dify backend's files live: its own origins, and its FILES_URL's if configured."""

    own: frozenset[str]
    files: frozenset[str] = frozenset()

    @property
    def policy(self) -> FetchPolicy:
        """Those origins only; they are the operator's, so private addresses are fine there."""
        return FetchPolicy(trusted_origins=self.own | self.files, other_hosts=False)


def file_keeper(
    lasting: LastingFiles | None,
    ctx: CallContext,
    title: str,
    connect_timeout: float,
    hosts: DifyFileHosts,
) -> Callable[[str, str], str] | None:
    """Return a function mapping a file's absolute URL (and declared type) to a lasting URL."""
    if lasting is None:
        return None
    files = lasting

    def keep(url: str, declared: str) -> str:
        if not _served_by_dify(url, hosts):
            if _looks_signed(url):
                logger.warning(
                    "{}: file {} is on a host this backend does not serve files from; it keeps "
                    "its upstream URL (name Dify's FILES_URL in the backend's files_url)",
                    title,
                    shown_url(url),
                )
            return url  # a link elsewhere (a remote_url file) is not Dify's to expire
        try:
            data, served = _download(url, hosts.policy, files.max_bytes, connect_timeout)
            kept = files.keep(data, files.media_type(served, declared, url), ctx.public_url)
        except FileRefusedError as e:
            logger.warning("{}: file {} keeps its upstream URL: {}", title, shown_url(url), e)
            return url
        logger.debug("{}: kept file {} ({} bytes)", title, shown_url(url), len(data))
        return kept

    return keep


def _download(
    url: str, policy: FetchPolicy, max_bytes: int, connect_timeout: float
) -> tuple[bytes, str]:
    try:
        fetched = fetch_guarded(
            url,
            policy,
            max_bytes=max_bytes,
            timeout=(connect_timeout, 10.0),
            total_seconds=FETCH_SECONDS,
        )
    except FetchRefusedError as e:
        raise FileRefusedError(e.message[0].lower() + e.message[1:].rstrip(".")) from None
    return fetched.data, fetched.content_type


def _served_by_dify(url: str, hosts: DifyFileHosts) -> bool:
    """Whether Dify serves this file: anything on its own origin, signed files on FILES_URL's."""
    target = _target(url)
    if target is None:
        return False
    if target.origin in hosts.own:
        return True
    return target.origin in hosts.files and _looks_signed(url)


def _looks_signed(url: str) -> bool:
    target = _target(url)
    if target is None:
        return False
    path, _, query = target.request_uri.partition("?")
    return bool(SIGNED_PATH.fullmatch(path)) and {"sign", "timestamp"} <= set(parse_qs(query))


def _target(url: str) -> Target | None:
    try:
        return parse_target(url)
    except FetchRefusedError:
        return None
