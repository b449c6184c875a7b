"""The image generation use case: run the call on its backend (routed once, in open_call).

Images take no reply cache and no backpressure slot, as before the core pipeline existed.
"""

from __future__ import annotations

from services.core.errors import UpstreamError
from services.core.pipeline import Call, Outcome
from services.core.types import GeneratedImage, ImageRequest


def generate(call: Call, req: ImageRequest) -> Outcome[list[GeneratedImage]]:
    """Make the images on the call's backend; at least one must come back."""
    images = call.backend.generate_images(req, call.ctx)
    if not images:
        raise UpstreamError(f"{call.backend.title} returned no image.")
    return Outcome(call.backend.name, images)
