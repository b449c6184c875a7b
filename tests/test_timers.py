"""The shared deadline thread behind request-body timeouts (services/common/timers.py)."""

from __future__ import annotations

import threading
import time

from services.common.timers import SharedTimers


def test_deadlines_fire_in_order_never_early_and_cancelled_ones_never():
    timers = SharedTimers(tick=0.01)
    fired: list[tuple[str, float]] = []
    done = threading.Event()
    start = time.monotonic()

    def note(name: str):
        def action() -> None:
            fired.append((name, time.monotonic() - start))
            if name == "last":
                done.set()

        return action

    timers.call_later(0.30, note("last"))
    timers.call_later(0.10, note("first"))
    timers.call_later(0.20, note("second")).cancel()
    timers.call_later(0.15, note("middle"))
    assert done.wait(5)
    assert [name for name, _ in fired] == ["first", "middle", "last"]
    for (name, at), due in zip(fired, (0.10, 0.15, 0.30), strict=True):
        assert at >= due, f"{name} fired early"
    assert timers.pending() == 0


def test_an_earlier_deadline_wakes_a_thread_asleep_until_a_later_one():
    timers = SharedTimers(tick=0.01)
    timers.call_later(30, lambda: None)  # the thread now sleeps for 30 s
    time.sleep(0.05)
    fired = threading.Event()
    timers.call_later(0.05, fired.set)
    assert fired.wait(2)


def test_a_failing_action_does_not_stop_the_others():
    timers = SharedTimers(tick=0.01)
    fired = threading.Event()

    def broken() -> None:
        raise RuntimeError("boom")

    timers.call_later(0.01, broken)
    timers.call_later(0.02, fired.set)
    assert fired.wait(2)
