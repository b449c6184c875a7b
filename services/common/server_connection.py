"""The server's request served in this greenlet, so that the app can have its connection closed.

gunicorn writes the `Connection` header itself and drops the application's, and after an answer
the server reads whatever is left of the request body, however slowly it comes, to find the next
request. When Relay answers without reading the body (a refused upload), it asks the server to
close instead: it then sends `Connection: close`, so clients and nginx do not reuse the connection.
Under gunicorn's gevent worker, gunicorn.conf.py's pre_request hook records gunicorn's request
here; under Relay's own worker (relay_worker.py) its handler records itself. Both have
`force_close()`.
"""

from __future__ import annotations

import threading
from typing import Any

_current = threading.local()  # one per greenlet: gevent patches threading before this import


def remember(server_request: Any) -> None:
    """Record the server's request (or connection handler) for the greenlet about to serve it."""
    _current.request = server_request


def close_after_response() -> bool:
    """Have the server close the connection after this answer; False outside gunicorn."""
    server_request = getattr(_current, "request", None)
    if server_request is None or not hasattr(server_request, "force_close"):
        return False
    server_request.force_close()
    return True
