"""The image generation use case: route the request to its backend and run it."""

from __future__ import annotations

from services.backends.base import Backend
from services.errors import UpstreamError
from services.gateway import Gateway
from services.types import CallContext, GeneratedImage, ImageRequest


def generate(
    gw: Gateway, req: ImageRequest, ctx: CallContext
) -> tuple[Backend, list[GeneratedImage]]:
    """Make the images on the backend that serves the model; at least one must come back."""
    backend = gw.router.resolve(req.model, ctx)
    images = backend.generate_images(req, ctx)
    if not images:
        raise UpstreamError(f"{backend.title} returned no image.")
    return backend, images
