"""Pure parsing of image generation requests (OpenAI body + X-Replicate-* headers) and rendering.

The header family is the one of the image proxy Relay replaces (docs/design.md §9);
each header is checked against its range and lands in ImageRequest.options under a snake_case
name. Errors name the body field or the header as `param`. No I/O.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from services.core.errors import InvalidRequestError
from services.core.types import GeneratedImage, ImageRequest
from services.faces.chat_request import opt_int, requested_model
from services.faces.extension_fields import IMAGE_FIELDS, check_extension_fields

SCHEDULERS = ("DDIM", "DPMSolverMultistep", "K_EULER", "K_EULER_ANCESTRAL", "PNDM")
OUTPUT_FORMATS = ("jpg", "png", "webp")
_SIZE = re.compile(r"^(auto|\d{2,5}x\d{2,5})$")
_KNOWN = {"model", "prompt", "n", "size", "response_format", "user"}


def _number(lo: float, hi: float | None, whole: bool) -> Callable[[str, str], Any]:
    def parse(header: str, raw: str) -> Any:
        try:
            value: float = int(raw) if whole else float(raw)
        except ValueError:
            value = float("nan")
        in_range = value >= lo and (hi is None or value <= hi)  # also refuses nan
        if not in_range or not math.isfinite(value):
            kind = "a whole number" if whole else "a number"
            bounds = f"between {lo:g} and {hi:g}" if hi is not None else f"of at least {lo:g}"
            raise InvalidRequestError(
                f"The {header} header must be {kind} {bounds}; got {raw!r}.", param=header
            )
        return value

    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[str, str], Any]:
    def parse(header: str, raw: str) -> Any:
        if raw not in choices:
            raise InvalidRequestError(
                f"The {header} header must be one of {', '.join(choices)}; got {raw!r}.",
                param=header,
            )
        return raw

    return parse


def _yes_no(header: str, raw: str) -> bool:
    if raw.lower() not in ("yes", "no"):
        raise InvalidRequestError(
            f"The {header} header must be yes or no; got {raw!r}.", param=header
        )
    return raw.lower() == "yes"


def _upscale_factor(header: str, raw: str) -> int:
    if raw not in ("2", "4"):
        raise InvalidRequestError(f"The {header} header must be 2 or 4; got {raw!r}.", param=header)
    return int(raw)


def _text(header: str, raw: str) -> str:
    if not raw.strip():
        raise InvalidRequestError(f"The {header} header must not be empty.", param=header)
    return raw


def _url(header: str, raw: str) -> str:
    if not re.match(r"^https?://[^\s/]+\S*$", raw):
        raise InvalidRequestError(
            f"The {header} header must be an http(s) URL; got {raw!r}.", param=header
        )
    return raw


# header -> (option name, parser); the table in docs/backends.md follows this one.
HEADERS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "X-Output-Format": ("output_format", _choice(OUTPUT_FORMATS)),
    "X-Replicate-Seed": ("seed", _number(0, None, whole=True)),
    "X-Replicate-Num-Inference-Steps": ("num_inference_steps", _number(1, 500, whole=True)),
    "X-Replicate-Guidance-Scale": ("guidance_scale", _number(1, 20, whole=False)),
    "X-Replicate-Negative-Prompt": ("negative_prompt", _text),
    "X-Replicate-Num-Outputs": ("num_outputs", _number(1, 4, whole=True)),
    "X-Replicate-Scheduler": ("scheduler", _choice(SCHEDULERS)),
    "X-Replicate-Prompt-Strength": ("prompt_strength", _number(0, 1, whole=False)),
    "X-Replicate-Safety-Checker": ("safety_checker", _yes_no),
    "X-Replicate-Enhance-Prompt": ("enhance_prompt", _yes_no),
    "X-Replicate-Upscale": ("upscale", _yes_no),
    "X-Replicate-Upscale-Factor": ("upscale_factor", _upscale_factor),
    "X-Replicate-Style-Preset": ("style_preset", _text),
    "X-Replicate-Init-Image": ("init_image", _url),
    "X-Replicate-Mask": ("mask", _url),
}


def parse_image_options(headers: Mapping[str, str]) -> dict[str, Any]:
    """Validate the generation-setting headers present and return them as options."""
    given = {k.lower(): v.strip() for k, v in headers.items()}
    options = {}
    for header, (name, parse) in HEADERS.items():
        raw = given.get(header.lower())
        if raw is not None:
            options[name] = parse(header, raw)
    return options


def parse_image_request(body: Any, headers: Mapping[str, str]) -> ImageRequest:
    """Validate an OpenAI images.generate body plus its headers into an ImageRequest."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    check_extension_fields(body, IMAGE_FIELDS)
    model = requested_model(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequestError(
            "'prompt' is required and must be a non-empty string.", param="prompt"
        )
    n = opt_int(body, "n", lo=1)
    if n is not None and n > 10:
        raise InvalidRequestError("'n' must be between 1 and 10.", param="n")
    size = body.get("size")
    if size is not None and (not isinstance(size, str) or not _SIZE.match(size)):
        raise InvalidRequestError("'size' must look like 1024x1024 (or be 'auto').", param="size")
    response_format = body.get("response_format") or "url"
    if response_format not in ("url", "b64_json"):
        raise InvalidRequestError(
            "'response_format' must be 'url' or 'b64_json'.", param="response_format"
        )
    options = parse_image_options(headers)
    outputs = options.get("num_outputs")
    if outputs is not None and n is not None and outputs != n:
        raise InvalidRequestError(
            f"X-Replicate-Num-Outputs ({outputs}) and 'n' ({n}) disagree; send one of them.",
            param="X-Replicate-Num-Outputs",
        )
    user = body.get("user")
    return ImageRequest(
        model=model,
        prompt=prompt,
        n=n or outputs or 1,
        size=size,
        response_format=response_format,
        user=user or None,
        options=options,
        extra={k: v for k, v in body.items() if k not in _KNOWN},
    )


def render_images(images: list[GeneratedImage]) -> dict[str, Any]:
    """Render generated images in OpenAI's images response shape."""
    data = []
    for image in images:
        item: dict[str, Any] = (
            {"b64_json": image.b64_json} if image.b64_json is not None else {"url": image.url}
        )
        if image.revised_prompt:
            item["revised_prompt"] = image.revised_prompt
        data.append(item)
    return {"created": int(time.time()), "data": data}
