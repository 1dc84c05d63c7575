"""Progress reporting: a tqdm bar on a terminal, log records otherwise (CI, files).

Library code logs (``logging.getLogger(__name__)``) and configures no handler: where the
records go is the application's choice (the ``ampcheck`` command line prints them on stderr).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)


def progress(items: Iterable[T], total: int, desc: str, unit: str = "it",
             enabled: bool = True) -> Iterator[T]:
    """Yield ``items`` while showing progress.

    Where stderr is a terminal this is a tqdm bar; otherwise one INFO record at every 10% on
    this module's logger, so that logs stay short.
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
            logger.info("%s: %d/%d %s (%.0f%%, %.1f s)", desc, i, total, unit, 100 * i / total,
                        elapsed)
            next_mark = (int(10 * i / total) + 1) / 10
