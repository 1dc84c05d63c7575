"""Keep the memory that training frees inside the process (Linux with glibc).

Every training step allocates its activations afresh and frees them when the step ends. glibc's
``malloc`` returns blocks above its mmap threshold (32 MiB at most, by default) straight to the
kernel, and trims the heap when more than twice that is free at its top, so the next step
faults the same memory back in, page by page, zeroed by the kernel (at D = 128 a hidden
activation of the decoder is 52 MiB at batch 8). Raising both thresholds keeps freed memory in
the heap for the next step, at the price of a resident set that stays at its high-water mark,
fragmentation included (the README's "Performance" section has the measured speed and memory).

The setting is process-wide, so the library never makes it on its own: the ``ampcheck``
program does, for the commands that train or check (set ``AMPCHECK_MALLOC=system`` to leave
``malloc`` as it is); a script or a test session may call :func:`keep_freed_memory` itself.
"""

from __future__ import annotations

import ctypes
import platform
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc malloc.h)
LIMIT_BYTES = 2**30  # keep_freed_memory's default for both thresholds
_CAPPED_MMAP_THRESHOLD = 32 * 2**20  # the most that some glibc versions accept


def keep_freed_memory(limit_bytes: int = LIMIT_BYTES) -> bool:
    """Have ``malloc`` serve blocks up to ``limit_bytes`` from its heap and keep up to
    ``limit_bytes`` of free heap instead of returning it to the kernel.

    Returns True where the setting took (Linux with glibc), False elsewhere, where it does
    nothing. Some glibc versions refuse an mmap threshold above 32 MiB (half their heap size);
    they get 32 MiB, and larger blocks are still mapped and unmapped each time.
    """
    if limit_bytes <= 0:
        raise ValueError(f"limit_bytes must be positive, got {limit_bytes}")
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    limit = min(limit_bytes, 2**31 - 1)
    took = mallopt(_M_MMAP_THRESHOLD, limit) or mallopt(
        _M_MMAP_THRESHOLD, min(limit, _CAPPED_MMAP_THRESHOLD))
    return bool(took) and bool(mallopt(_M_TRIM_THRESHOLD, limit))
