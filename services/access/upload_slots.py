"""How many slow request bodies each caller is sending, in this worker (docs/threat-model.md).

A body that trickles in holds one of the worker's connections until it is complete. Capping the
bodies one key may be sending at once keeps a single key from taking them all; requests whose
body has fully arrived (streams being generated) are not counted.
"""

from __future__ import annotations

import threading


class UploadSlots:
    """Per-caller counters of bodies being received, with a fixed cap per caller."""

    def __init__(self, per_caller: int) -> None:
        self.per_caller = per_caller
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()  # gevent-patched in the worker; cheap either way

    def acquire(self, caller: str) -> bool:
        """Take a slot for the caller; False when it already sends as many bodies as allowed."""
        with self._lock:
            busy = self._busy.get(caller, 0)
            if busy >= self.per_caller:
                return False
            self._busy[caller] = busy + 1
            return True

    def release(self, caller: str) -> None:
        with self._lock:
            left = self._busy.get(caller, 0) - 1
            if left > 0:
                self._busy[caller] = left
            else:
                self._busy.pop(caller, None)

    def busy(self, caller: str) -> int:
        with self._lock:
            return self._busy.get(caller, 0)
