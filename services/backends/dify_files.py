"""Download the files a Dify app returns and keep them, so replies link to lasting URLs.

Dify signs its file URLs for minutes (reference/dify-api.md §7.2). When lasting files are on, each
file is fetched through the backend's session, capped in size and time, and stored; a file that
cannot be kept keeps Dify's URL and a warning is logged: the reply never fails because of it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import requests
from loguru import logger

from services.file_store import FileRefusedError, LastingFiles
from services.types import CallContext

FETCH_SECONDS = 30.0  # a whole download; each read waits at most 10 s
# Dify's signed file URLs (reference/dify-api.md §7.2), also when FILES_URL names another host.
SIGNED_PATH = re.compile(r"/files/(tools/)?[A-Za-z0-9._-]+(/(file|image)-preview)?")


def file_keeper(
    session: requests.Session,
    lasting: LastingFiles | None,
    ctx: CallContext,
    title: str,
    connect_timeout: float,
    origin: str,
) -> Callable[[str, str], str] | None:
    """Return a function mapping a file's absolute URL (and declared type) to a lasting URL."""
    if lasting is None:
        return None
    files = lasting

    def keep(url: str, declared: str) -> str:
        if not _from_dify(url, origin):
            return url  # a link elsewhere (a remote_url file) is not Dify's to expire
        try:
            data, served = _download(session, url, files.max_bytes, connect_timeout)
            kept = files.keep(data, files.media_type(served, declared, url), ctx.public_url)
        except FileRefusedError as e:
            logger.warning("{}: file {} keeps its upstream URL: {}", title, _shown(url), e)
            return url
        logger.debug("{}: kept file {} ({} bytes)", title, _shown(url), len(data))
        return kept

    return keep


def _download(
    session: requests.Session, url: str, max_bytes: int, connect_timeout: float
) -> tuple[bytes, str]:
    deadline = time.monotonic() + FETCH_SECONDS
    try:
        with session.get(
            url, stream=True, timeout=(connect_timeout, 10.0), allow_redirects=False
        ) as resp:
            if resp.status_code != 200:
                raise FileRefusedError(f"download answered HTTP {resp.status_code}")
            if int(resp.headers.get("Content-Length") or 0) > max_bytes:
                raise FileRefusedError(f"larger than {max_bytes} bytes")
            data = bytearray()
            for chunk in resp.iter_content(65536):
                data += chunk
                if len(data) > max_bytes:
                    raise FileRefusedError(f"larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise FileRefusedError(f"download took over {FETCH_SECONDS:.0f} s")
            return bytes(data), resp.headers.get("Content-Type", "")
    except (requests.RequestException, ValueError) as e:
        raise FileRefusedError(f"download failed: {type(e).__name__}") from None


def _from_dify(url: str, origin: str) -> bool:
    """Tell whether Dify serves this file: its own origin, or its signed /files/ URLs.

    Relay fetches nothing else, so a workflow cannot make it download from arbitrary addresses.
    """
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" == origin:
        return True
    query = parse_qs(parts.query)
    return bool(SIGNED_PATH.fullmatch(parts.path)) and {"sign", "timestamp"} <= set(query)


def _shown(url: str) -> str:
    """The URL without its query, which holds Dify's signature."""
    return url.split("?", 1)[0]
