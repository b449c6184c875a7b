"""Wrap a generator of encoded SSE frames in a streaming response."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Response


def sse_response(frames: Iterator[bytes]) -> Response:
    # No Content-Length: gunicorn sends it chunked, frame by frame. X-Accel-Buffering stops
    # nginx from holding the stream back.
    return Response(
        frames,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
