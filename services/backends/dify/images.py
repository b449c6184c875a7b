"""Pick the image files out of a Dify workflow run's events (docs/design.md §8.4). No I/O.

Kept apart from dify.py so the image use case adds one method there and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urljoin

from services.backends.dify.events import _files_in
from services.core.errors import UpstreamError
from services.core.types import ImageRequest


def workflow_inputs(req: ImageRequest, query_input: str) -> dict[str, Any]:
    """The workflow inputs for an image request: the settings, the size, and the prompt."""
    inputs: dict[str, Any] = dict(req.options)
    if req.size:
        inputs["size"] = req.size
    inputs[query_input] = req.prompt
    return inputs


def image_urls(events: Iterable[Mapping[str, Any]], origin: str, title: str) -> list[str]:
    """Return the absolute URLs of the image files a finished workflow run produced."""
    for event in events:
        kind = event.get("event")
        if kind == "error":
            raise UpstreamError(f"{title} failed: {event.get('message') or 'unknown error'}")
        if kind != "workflow_finished":
            continue
        data: dict[str, Any] = event["data"] if isinstance(event.get("data"), dict) else {}
        if data.get("status") != "succeeded":
            raise UpstreamError(f"{title}: the workflow {data.get('status')}: {data.get('error')}")
        files = [*_files_in(data.get("outputs")), *(data.get("files") or [])]
        urls: list[str] = []
        for f in files:
            url = f.get("url") or f.get("remote_url") if isinstance(f, dict) else None
            is_image = isinstance(f, dict) and (
                f.get("type") == "image" or str(f.get("mime_type", "")).startswith("image/")
            )
            if is_image and isinstance(url, str) and url:
                absolute = urljoin(origin + "/", url)  # relative when FILES_URL is unset
                if absolute not in urls:
                    urls.append(absolute)
        if not urls:
            raise UpstreamError(f"{title} finished without an image file among its outputs.")
        return urls
    raise UpstreamError(f"{title} ended the stream before the workflow finished.")
