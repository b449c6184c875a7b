"""Reading JSON numbers that must be finite floats.

Python's json reads 1e400 as infinity and writes it back as `Infinity`, which is not JSON, and
converting a huge int to float raises OverflowError; both are caught here, where numbers enter
(docs/api.md "Errors").
"""

from __future__ import annotations

import math
from typing import Any


def finite_float(value: Any) -> float:
    """Return a JSON number as a float; raise ValueError for anything else or a non-finite one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        raise ValueError("not a finite number") from None
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def is_finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that fits a finite float."""
    try:
        finite_float(value)
    except ValueError:
        return False
    return True


def token_count(value: Any) -> int:
    """Read an upstream's token count leniently: a whole, finite, non-negative number, else 0."""
    try:
        number = finite_float(value)
    except ValueError:
        return 0
    if isinstance(value, int):
        return max(value, 0)
    return int(number) if number >= 0 and number.is_integer() else 0
