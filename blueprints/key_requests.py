"""How many requests each key has in flight in this worker, capped (RELAY_MAX_REQUESTS_PER_KEY).

Every /v1 request holds one of the worker's gevent connections until its answer is written: a
stream until its last chunk, a pass-through download until the client has read it all. Without
a cap one key could take every connection of a worker (many requests to a slow upstream, or
replies it never reads) and `/health` and every other key would wait. A request counts from
the moment its key is known until its answer is closed; over the cap it is a 429 at once.
With no keys configured, callers are counted per address (docs/operations.md "Request bodies").
"""

from __future__ import annotations

from flask import Flask, Response, current_app, g, request

from services.access.ratelimit import API_PREFIXES
from services.access.upload_slots import UploadSlots
from services.core.errors import RateLimitError


class _Slot:
    """One request's place in its caller's count, given back exactly once."""

    def __init__(self, slots: UploadSlots, caller: str) -> None:
        self.slots, self.caller = slots, caller
        self.with_response = False  # the answer gives it back when closed
        self.done = False

    def release(self) -> None:
        if not self.done:
            self.done = True
            self.slots.release(self.caller)


def _take() -> None:
    if not request.path.startswith(API_PREFIXES) or "auth_error" in g:
        return
    key = g.get("api_key")
    if key is None:
        return
    if current_app.extensions["relay"].keys.open:
        caller = "address:" + (request.remote_addr or "")
    else:
        caller = "key:" + str(key.name)
    slots: UploadSlots = current_app.extensions["relay_requests"]
    if not slots.acquire(caller):
        g.close_connection = True  # its body, if any, is never read (request_body.py)
        raise RateLimitError(
            f"Too many requests are in flight with this key at once (at most "
            f"{slots.per_caller}); wait for one to finish.",
            code="too_many_requests_in_flight",
            retry_after=1,
        )
    g.request_slot = _Slot(slots, caller)


def _hand_to_response(response: Response) -> Response:
    slot: _Slot | None = g.get("request_slot")
    if slot is not None:
        slot.with_response = True
        response.call_on_close(slot.release)  # a stream: once its last chunk is written
    return response


def _release_unanswered(_error: BaseException | None) -> None:
    slot: _Slot | None = g.get("request_slot")
    if slot is not None and not slot.with_response:
        slot.release()


def register_key_requests(app: Flask) -> None:
    settings = app.extensions["relay"].settings
    # Unset: half the worker's connections, so one key can never take them all.
    cap = settings.max_requests_per_key or max(1, settings.worker_connections // 2)
    app.extensions["relay_requests"] = UploadSlots(cap)
    app.before_request(_take)
    app.after_request(_hand_to_response)
    app.teardown_request(_release_unanswered)
