"""Turn image URLs from requests into bytes: decode data: URLs, download http(s) ones if allowed.

Downloads are off by default; when on they go through services/common/outbound.py: one parse, capped
in size and time, no redirects, and hosts on private, loopback or link-local networks refused
unless the operator allows them. Every failure is an InvalidRequestError naming the request's param.
"""

from __future__ import annotations

import base64
import binascii

from config import Settings
from services.common.outbound import FetchPolicy, FetchRefusedError, fetch_guarded
from services.core.errors import InvalidRequestError


class ImageLoader:
    def __init__(self, settings: Settings) -> None:
        self.max_bytes = settings.image_max_bytes
        self.fetch_enabled = settings.fetch_image_urls
        self.allow_private = settings.image_fetch_allow_private
        self.timeout = settings.image_fetch_timeout
        # A caller's URL: any public host, private ones only when the operator allows it.
        self.policy = FetchPolicy(allow_private=self.allow_private)

    def load_base64(self, url: str, param: str) -> str:
        """Return the image as base64 text (no data: prefix), checking its size."""
        if url.startswith("data:"):
            self.decode_data_url(url, param)
            return url.partition(";base64,")[2]
        return base64.b64encode(self.fetch(url, param)).decode()

    def decode_data_url(self, url: str, param: str) -> tuple[bytes, str]:
        """Return the bytes and media type of a data:image/...;base64 URL, checking its size."""
        header, _, encoded = url.partition(";base64,")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError(
                "The image data URL is not valid base64.", param=param
            ) from None
        self._check_size(len(raw), param)
        return raw, header.removeprefix("data:")

    def fetch(self, url: str, param: str) -> bytes:
        """Download an http(s) image within the configured limits (services/common/outbound.py)."""
        if not self.fetch_enabled:
            raise InvalidRequestError(
                "Image URLs are not downloaded by this gateway; send the image inline as a "
                "data:image/...;base64 URL (or ask the operator to set RELAY_FETCH_IMAGE_URLS).",
                param=param,
            )
        try:
            return fetch_guarded(
                url,
                self.policy,
                max_bytes=self.max_bytes,
                timeout=(self.timeout, self.timeout),
                accept=lambda kind: kind.startswith("image/"),
                total_seconds=self.timeout,
            ).data
        except FetchRefusedError as e:
            code = "image_too_large" if e.reason == "too_large" else None
            message = (
                e.message.replace("The URL", "The image URL")
                .replace("The file", "The image")
                .replace("not an accepted type", "not an image")
            )
            raise InvalidRequestError(message, param=param, code=code) from None

    def _check_size(self, size: int, param: str) -> None:
        if size > self.max_bytes:
            raise InvalidRequestError(
                f"The image is larger than the {self.max_bytes} bytes this gateway accepts.",
                param=param,
                code="image_too_large",
            )
