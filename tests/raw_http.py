"""Raw HTTP exchanges for tests about the bytes on the wire (the HTTP server's own answers)."""

from __future__ import annotations

import socket
from typing import Any


def exchange(gateway: Any, data: bytes) -> bytes:
    """Send `data`, then read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])
