"""Lasting copies of files a backend returns: which ones may be kept, under what name, and where.

A FileStore keeps bytes under a name (a local directory here, an S3-compatible bucket in
file_store_s3); LastingFiles is the policy around it: allowed types, the size cap, names nobody
can guess, and the URL a client gets. Downloading is the backend's job. No HTTP routing here.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from config import ConfigError

# Media types Relay keeps and serves back, with the extension its names carry. Nothing a browser
# would run from Relay's origin (HTML, JavaScript, SVG, XML) is here.
ALLOWED: dict[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/avif": "avif",
    "image/bmp": "bmp",
    "application/pdf": "pdf",
    "text/plain": "txt",
    "text/csv": "csv",
    "text/markdown": "md",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/ogg": "oga",
    "audio/mp4": "m4a",
    "audio/webm": "weba",
    "audio/flac": "flac",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "video/ogg": "ogv",
}
ALIASES = {"image/jpg": "image/jpeg", "audio/x-wav": "audio/wav", "audio/mp3": "audio/mpeg"}
MEDIA_TYPES = {ext: kind for kind, ext in ALLOWED.items()}
# Shown in the browser; anything else (office documents) is offered as a download.
INLINE_PREFIXES = ("image/", "audio/", "video/", "text/", "application/pdf")
NAME = re.compile(r"[A-Za-z0-9_-]{32}\.([a-z0-9]{2,4})")
UNKNOWN = ("", "application/octet-stream", "binary/octet-stream")


class FileRefusedError(Exception):
    """A file cannot be kept (type, size, download or store failure); its message says why."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A kept file as the /files view sends it: a local path, or the bytes themselves."""

    name: str
    media_type: str
    path: str | None = None
    data: bytes | None = None

    @property
    def inline(self) -> bool:
        return self.media_type.startswith(INLINE_PREFIXES)


class FileStore(Protocol):
    """Where kept files live. Names are already checked; implementations only store bytes."""

    def put(self, name: str, data: bytes, media_type: str) -> None:
        """Store the bytes; raise FileRefusedError when that fails."""

    def get(self, name: str, media_type: str) -> StoredFile | None:
        """Return the file, or None when there is none by that name."""

    def public_url(self, name: str) -> str | None:
        """Return a URL clients can load the file from directly, or None to serve it via Relay."""


class LocalFileStore:
    """A directory on this machine; Relay serves its files at /files/<name>."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"RELAY_FILES_DIR {directory!r} cannot be created: {e.strerror}"
            ) from None

    def put(self, name: str, data: bytes, media_type: str) -> None:
        # Written beside its final name and renamed, so a reader never sees half a file.
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.directory / name)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            raise FileRefusedError(f"the file directory cannot be written: {e.strerror}") from None

    def get(self, name: str, media_type: str) -> StoredFile | None:
        path = self.directory / name
        return StoredFile(name, media_type, path=str(path)) if path.is_file() else None

    def public_url(self, name: str) -> str | None:
        return None


class LastingFiles:
    """Keep files within the rules and hand out their lasting URLs."""

    def __init__(self, store: FileStore, max_bytes: int, public_url: str | None) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.public_url = public_url

    def media_type(self, served: str, declared: str, url: str) -> str:
        """Pick the file's type (as served, else as declared, else by its name); check it."""
        kind = _plain(served)
        if kind in UNKNOWN:
            kind = _plain(declared)
        if kind in UNKNOWN:
            path = url.split("?", 1)[0].rsplit("/", 1)[-1]
            ext = path.rsplit(".", 1)[-1].lower() if "." in path else ""
            kind = MEDIA_TYPES.get({"jpeg": "jpg"}.get(ext, ext), "")
        kind = ALIASES.get(kind, kind)
        if kind not in ALLOWED:
            raise FileRefusedError(f"type {kind or 'unknown'} is not kept")
        return kind

    def keep(self, data: bytes, media_type: str, base_url: str) -> str:
        """Store the bytes under a new unguessable name; return the URL clients use."""
        if len(data) > self.max_bytes:
            raise FileRefusedError(f"larger than {self.max_bytes} bytes")
        name = f"{secrets.token_urlsafe(24)}.{ALLOWED[media_type]}"
        self.store.put(name, data, media_type)
        direct = self.store.public_url(name)
        return direct or f"{self.public_url or base_url}/files/{name}"

    def open(self, name: str) -> StoredFile | None:
        """Return a kept file by the name in its URL; None for any name Relay did not make."""
        match = NAME.fullmatch(name)
        if not match or match.group(1) not in MEDIA_TYPES:
            return None
        return self.store.get(name, MEDIA_TYPES[match.group(1)])


def _plain(media_type: str) -> str:
    return media_type.split(";", 1)[0].strip().lower()
