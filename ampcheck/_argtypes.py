"""argparse types shared by the command line and the pytest plugin (no heavy imports: the
plugin loads this when pytest starts)."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

# The largest integer an option takes. Seeds reach numpy, torch and scikit-learn, the
# narrowest of which (``random_state``, numpy's legacy RandomState) takes 0 <= seed < 2**32;
# checks derive further seeds by adding offsets (seed + 10_000), so 2**31 - 1 leaves them room.
# torch.Generator.manual_seed takes up to 2**64 - 1. Counts (images, epochs, batch size) far
# beyond it are mistakes, not requests.
INT_MAX = 2**31 - 1


def number(convert: Callable[[str], float], lower: float, strict: bool, what: str,
           upper: float | None = None):
    """A type: ``convert`` the text and require it ``> lower`` (``strict``) or ``>= lower``,
    and ``<= upper`` when given."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:  # also an integer of more than 4,300 digits
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value > lower if strict else value >= lower):  # NaN fails both
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        if upper is not None and not value <= upper:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value
    return parse


positive_int = number(int, 0, True, f"a positive integer (at most {INT_MAX})", INT_MAX)
non_negative_int = number(int, 0, False, f"an integer from 0 to {INT_MAX}", INT_MAX)
seed = number(int, 0, False, f"a seed, an integer from 0 to {INT_MAX}", INT_MAX)
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
