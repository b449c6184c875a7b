"""The lasting-file store the settings ask for: a local directory, an S3-compatible bucket, or none.

Built once per process by the gateway (services/core/gateway.py) and shared by the backends that
keep files and by GET /files. boto3 is imported only when a bucket is configured.
"""

from __future__ import annotations

from config import FileSettings, Settings
from services.state.file_store import FileStore, LastingFiles, LocalFileStore


def build_lasting_files(settings: Settings) -> LastingFiles | None:
    """Build the configured store, or None when lasting files are off."""
    files: FileSettings | None = settings.files
    if files is None:
        return None
    store: FileStore
    if files.s3_bucket:
        from services.state.file_store_s3 import S3FileStore

        store = S3FileStore(files)
    else:
        assert files.directory is not None
        store = LocalFileStore(files.directory)
    return LastingFiles(store, files.max_bytes, settings.public_url)
