"""Download the files a Dify app returns and keep them, so replies link to lasting URLs.

Dify signs its file URLs for minutes (reference/dify-api.md §7.2). When lasting files are on, each
file is fetched through the backend's session, capped in size and time, and stored; a file that
cannot be kept keeps Dify's URL and a warning is logged: the reply never fails because of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import requests
from loguru import logger

from services.file_store import FileRefusedError, LastingFiles
from services.types import CallContext

FETCH_SECONDS = 30.0  # a whole download; each read waits at most 10 s


def file_keeper(
    session: requests.Session,
    lasting: LastingFiles | None,
    ctx: CallContext,
    title: str,
    connect_timeout: float,
) -> Callable[[str, str], str] | None:
    """Return a function mapping a file's absolute URL (and declared type) to a lasting URL."""
    if lasting is None:
        return None
    files = lasting

    def keep(url: str, declared: str) -> str:
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


def _shown(url: str) -> str:
    """The URL without its query, which holds Dify's signature."""
    return url.split("?", 1)[0]
