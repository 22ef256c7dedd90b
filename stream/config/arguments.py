"""Argument types for the command line: each turns a flag's text into a checked value.

argparse reports an ``ArgumentTypeError`` as one line naming the flag, so every verb's
bad value reads the same way.

Example:
    >>> at_least(1)("4096")
    4096
    >>> positive_number("2.5")
    2.5
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def at_least(minimum: int) -> Callable[[str], int]:
    """A whole number ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} must be >= {minimum}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def finite_number(text: str) -> float:
    """Any finite number."""
    value = _number(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} must be finite")
    return value


def positive_number(text: str) -> float:
    """A finite number > 0."""
    value = _number(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number > 0")
    return value


def positive_or_endless(text: str) -> float:
    """A number > 0, or ``inf`` (e.g. ``--seconds inf``: without end)."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value


def span(text: str) -> tuple[float, float]:
    """``START:END`` as two numbers; a side left out is open (``-inf`` or ``inf``).

    Example:
        >>> span("0:0.7"), span("3900:")
        ((0.0, 0.7), (3900.0, inf))
    """
    start, colon, end = text.partition(":")
    if not colon:
        raise argparse.ArgumentTypeError(f"{text!r} is not START:END, e.g. 0:0.7")
    try:
        return (float(start) if start.strip() else -math.inf,
                float(end) if end.strip() else math.inf)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not START:END of numbers, "
                                         "e.g. 0:0.7") from None
