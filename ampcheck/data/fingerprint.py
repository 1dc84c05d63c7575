"""A data set's fingerprint: what a checkpoint records of the images it was trained on.

``--resume`` and ``ampcheck check --run`` compare it with the data set they are given, so that a
model is never continued or checked on other images of the same number and size. It hashes the
count, the image size, up to :data:`SAMPLE` evenly spaced raw images (all of them in small data
sets) and every pose and CTF row: milliseconds for the default data set, and bounded (a few MB
read) for a stack larger than memory.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

__all__ = ["fingerprint", "SAMPLE"]

SAMPLE = 512  # images hashed: any two data sets that differ in content differ here in practice


def fingerprint(data: Any) -> str:
    """A hex digest of ``data`` (a data set with ``len``, ``D`` and ``images(indices)``, and
    optionally ``rot``, ``trans_frac`` and ``ctf``), as trained on: its order matters."""
    n = len(data)
    h = hashlib.blake2b(digest_size=16)
    h.update(np.array([n, int(data.D)], np.int64).tobytes())
    if n:
        pick = np.unique(np.linspace(0, n - 1, min(n, SAMPLE)).round().astype(np.int64))
        h.update(np.ascontiguousarray(data.images(pick), np.float32).tobytes())
    for name in ("rot", "trans_frac", "ctf"):
        value = getattr(data, name, None)
        h.update(name.encode())
        if value is not None:
            h.update(np.ascontiguousarray(value, np.float32).tobytes())
    return h.hexdigest()
