"""The exceptions ampcheck raises for problems a user can fix.

Every error a user can cause (a bad file, a bad option, a bad configuration) is an
:class:`AmpcheckError`; the command line prints its message and exits non-zero without a
traceback. ``assert`` is kept for internal invariants only.
"""

from __future__ import annotations

__all__ = ["AmpcheckError", "InputError", "ConfigError", "UnsafePickleError", "TrainingDiverged",
           "OutputError", "BusyError", "first_line", "one_line"]


class AmpcheckError(Exception):
    """Base class of every error that is the user's to fix."""


class InputError(AmpcheckError, ValueError):
    """Input data is missing, malformed or inconsistent (names the file and what was expected)."""


class UnsafePickleError(InputError):
    """A pickle asked for something other than plain arrays, tuples, lists, dicts and scalars."""


class ConfigError(AmpcheckError, ValueError):
    """An option or configuration value is out of range or unknown."""


class TrainingDiverged(AmpcheckError, RuntimeError):
    """The loss became NaN, infinite or exploded (the message names the epoch and batch)."""


class OutputError(AmpcheckError, OSError):
    """An output could not be written (a full disk, a file-size limit, no permission); the
    message names the file, and what was there before is intact."""


class BusyError(ConfigError):
    """Another ampcheck process is writing the same output directory (the message names it)."""


def first_line(err: BaseException) -> str:
    """The first line of a library's error message (torch's carry C++ backtraces after it),
    or the exception's type when it has no message."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def one_line(message: object) -> str:
    """``message`` (an error or a warning) on one line, every word of it kept: how the command
    line prints ampcheck's own messages, whose lines are wrapped text (:func:`first_line`
    keeps the first line alone, for a library's message whose tail is a backtrace)."""
    return " ".join(str(message).split())
