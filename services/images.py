"""Turn image URLs from requests into bytes: decode data: URLs, download http(s) ones if allowed.

Downloads are off by default; when on they are capped in size and time, follow no redirects,
and refuse hosts that resolve to private, loopback or link-local addresses unless the operator
allows them. Every failure is an InvalidRequestError naming the request's param.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
from urllib.parse import urlsplit

import requests

from config import Settings
from services.errors import InvalidRequestError


class ImageLoader:
    def __init__(self, settings: Settings) -> None:
        self.max_bytes = settings.image_max_bytes
        self.fetch_enabled = settings.fetch_image_urls
        self.allow_private = settings.image_fetch_allow_private
        self.timeout = settings.image_fetch_timeout
        self.session = requests.Session()
        self.session.trust_env = False

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
        """Download an http(s) image within the configured limits."""
        if not self.fetch_enabled:
            raise InvalidRequestError(
                "Image URLs are not downloaded by this gateway; send the image inline as a "
                "data:image/...;base64 URL (or ask the operator to set RELAY_FETCH_IMAGE_URLS).",
                param=param,
            )
        host = urlsplit(url).hostname or ""
        if not self.allow_private:
            self._check_public(host, param)
        try:
            with self.session.get(
                url, stream=True, timeout=self.timeout, allow_redirects=False
            ) as resp:
                if resp.status_code != 200:
                    raise InvalidRequestError(
                        f"Downloading the image failed with HTTP {resp.status_code}.", param=param
                    )
                kind = resp.headers.get("Content-Type", "").split(";")[0].strip()
                if not kind.startswith("image/"):
                    raise InvalidRequestError(
                        f"The image URL returned {kind or 'no content type'}, not an image.",
                        param=param,
                    )
                data = b""
                for chunk in resp.iter_content(65536):
                    data += chunk
                    self._check_size(len(data), param)
                return data
        except requests.RequestException as e:
            raise InvalidRequestError(
                f"Downloading the image failed: {type(e).__name__}.", param=param
            ) from None

    def _check_size(self, size: int, param: str) -> None:
        if size > self.max_bytes:
            raise InvalidRequestError(
                f"The image is larger than the {self.max_bytes} bytes this gateway accepts.",
                param=param,
                code="image_too_large",
            )

    @staticmethod
    def _check_public(host: str, param: str) -> None:
        try:
            infos = socket.getaddrinfo(host, None)
        except (OSError, UnicodeError):
            raise InvalidRequestError(
                f"The image host {host!r} cannot be resolved.", param=param
            ) from None
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if not address.is_global:
                raise InvalidRequestError(
                    f"The image host {host!r} is on a private or local network; "
                    "downloads from there are refused.",
                    param=param,
                )
