"""The S3-compatible FileStore (AWS S3, MinIO, Cloudflare R2, Garage, ...), through boto3.

Objects are written with their media type. With RELAY_S3_PUBLIC_URL the bucket (or a CDN in
front of it) serves them and replies link there; without it Relay reads them back and serves them
at /files/<name>, so the bucket can stay private. Presigned URLs are not used: they expire
(SigV4 allows at most seven days), which is what lasting files are meant to avoid.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from loguru import logger

from config import FileSettings
from services.core.errors import UpstreamError, UpstreamUnavailableError
from services.state.file_store import FileRefusedError, StoredFile


class S3FileStore:
    def __init__(self, settings: FileSettings) -> None:
        assert settings.s3_bucket is not None
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.public = settings.s3_public_url
        # Short timeouts and few retries: a slow bucket must not hold a chat reply for long.
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            config=Config(
                connect_timeout=5,
                read_timeout=20,
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"} if settings.s3_endpoint_url else None,
            ),
        )

    def put(self, name: str, data: bytes, media_type: str) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self.prefix + name, Body=data, ContentType=media_type
            )
        except (BotoCoreError, ClientError) as e:
            raise FileRefusedError(f"the bucket refused it: {_reason(e)}") from None

    def get(self, name: str, media_type: str) -> StoredFile | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
            data = obj["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            logger.warning("file store: reading {} failed: {}", name, _reason(e))
            raise UpstreamError("The file store failed to return the file.") from None
        except BotoCoreError as e:
            logger.warning("file store: reading {} failed: {}", name, _reason(e))
            raise UpstreamUnavailableError("The file store cannot be reached.") from None
        return StoredFile(name, media_type, data=data)

    def public_url(self, name: str) -> str | None:
        return f"{self.public}/{self.prefix}{name}" if self.public else None


def _reason(error: Exception) -> str:
    """Name the failure without the request (which holds signed headers)."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code") or "error")
    return type(error).__name__
