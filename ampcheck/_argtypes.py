"""argparse types shared by the command line and the pytest plugin (no heavy imports: the
plugin loads this when pytest starts)."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable


def number(convert: Callable[[str], float], lower: float, strict: bool, what: str):
    """A type: ``convert`` the text and require it ``> lower`` (``strict``) or ``>= lower``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value > lower if strict else value >= lower):  # NaN fails both
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value
    return parse


positive_int = number(int, 0, True, "a positive integer")
non_negative_int = number(int, 0, False, "a non-negative integer")
positive_float = number(float, 0, True, "a positive number")


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether it exists is checked when used)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(text)):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return str(text)


def threshold(text: str) -> tuple[str, float]:
    """``NAME=NUMBER``, a threshold override (the name is checked against the checks')."""
    name, sep, value = text.partition("=")
    try:
        value_ = float(value)
    except ValueError:
        value_ = math.nan
    if not sep or not name.strip() or not math.isfinite(value_):
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER (e.g. shift_invariance=0.3), "
                                         f"got {text!r}")
    return name.strip(), value_
