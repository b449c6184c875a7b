"""The image generation use case: run the call on its backend (routed once, in open_call).

Images take no reply cache and no backpressure slot, as before the core pipeline existed.
"""

from __future__ import annotations

from services.core.errors import UpstreamError
from services.core.pipeline import Call, Outcome
from services.core.types import GeneratedImage, ImageRequest


def generate(call: Call, req: ImageRequest) -> Outcome[list[GeneratedImage]]:
    """Make the images on the route's first target; at least one must come back. Images take
    no fallback: a generation may have been paid for even when it fails late."""
    target = call.route.primary
    images = target.backend.generate_images(target.fit(req), call.ctx)
    if not images:
        raise UpstreamError(f"{target.backend.title} returned no image.")
    return Outcome(target.backend.name, images, route=target.name)
