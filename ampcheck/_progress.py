"""Progress reporting: a tqdm bar on a terminal, plain log lines otherwise (CI, files)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int, desc: str, unit: str = "it",
             enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while showing progress on stderr.

    On a terminal this is a tqdm bar; otherwise one line at every 10% so that logs stay short.
    """
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        yield from tqdm(items, total=total, desc=desc, unit=unit, leave=False)
        return
    start, next_mark = time.perf_counter(), 0.1
    for i, item in enumerate(items, 1):
        yield item
        if total and i / total >= next_mark - 1e-9:
            elapsed = time.perf_counter() - start
            print(f"{desc}: {i}/{total} {unit} ({100 * i / total:.0f}%, {elapsed:.1f} s)",
                  file=sys.stderr, flush=True)
            next_mark = (int(10 * i / total) + 1) / 10
