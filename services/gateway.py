"""The app-scoped services, built once per process in create_app()."""

from __future__ import annotations

from dataclasses import dataclass

from config import Settings
from services.backends import build_backends
from services.images import ImageLoader
from services.keys import KeyStore
from services.metrics import Metrics
from services.response_store import MemoryResponseStore, ResponseStore
from services.router import Router


@dataclass(slots=True)
class Gateway:
    settings: Settings
    router: Router
    keys: KeyStore
    responses: ResponseStore
    metrics: Metrics


def build_gateway(settings: Settings) -> Gateway:
    """Wire the services together from the settings."""
    images = ImageLoader(settings)
    return Gateway(
        settings=settings,
        router=Router(build_backends(settings, images)),
        keys=KeyStore(settings.api_keys),
        responses=MemoryResponseStore(settings.response_ttl),
        metrics=Metrics(settings.metrics_dir),
    )
