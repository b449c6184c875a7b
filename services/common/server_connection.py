"""The gunicorn request served in this greenlet, so that the app can have its connection closed.

gunicorn writes the `Connection` header itself and drops the application's, and after an answer
it reads whatever is left of the request body, however slowly it comes, to find the next request.
When Relay answers without reading the body (a refused upload), it asks gunicorn to close instead:
gunicorn then sends `Connection: close`, so clients and nginx do not reuse the connection.
gunicorn.conf.py's pre_request hook records the request here.
"""

from __future__ import annotations

import threading
from typing import Any

_current = threading.local()  # one per greenlet: gevent patches threading before this import


def remember(server_request: Any) -> None:
    """Record gunicorn's request object for the greenlet about to serve it."""
    _current.request = server_request


def close_after_response() -> bool:
    """Have gunicorn close the connection after this answer; False outside gunicorn."""
    server_request = getattr(_current, "request", None)
    if server_request is None or not hasattr(server_request, "force_close"):
        return False
    server_request.force_close()
    return True
