"""Work spread over processes side by side, with results in order (the generators' rendering).

:func:`ordered_map` runs a function over a list in forked worker processes, which inherit what
it reads (module globals set before the call: only the function, a module-level one, and the
items are pickled on the way in), and yields the results in the list's order; with one worker, or where ``fork`` is unavailable, it runs in this
process. What a result is never depends on which process made it, so a caller whose items are
fixed gets the same output whatever the number of workers.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from ..errors import ConfigError
from .acquisition import is_integer

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity; all of them where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | None, what: str) -> int:
    """``workers``, or :func:`available_cores` where None; a ConfigError prefixed with
    ``what`` unless it is a positive integer."""
    if workers is None:
        return available_cores()
    if not is_integer(workers) or workers < 1:
        raise ConfigError(f"{what}: workers must be a positive integer, got {workers!r}")
    return int(workers)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn(item)`` for each of ``items``, in order, computed by up to ``workers`` forked
    processes (one task at a time each, so that the first results come early). In a daemon
    process (a pool's worker, which may not have children) it runs in this process. Close
    the iterator (or exhaust it) to end the processes."""
    items = list(items)
    n = min(int(workers), len(items))
    if n < 2 or "fork" not in multiprocessing.get_all_start_methods() \
            or multiprocessing.current_process().daemon:
        yield from map(fn, items)
        return
    with multiprocessing.get_context("fork").Pool(n) as pool:
        yield from pool.imap(fn, items)
