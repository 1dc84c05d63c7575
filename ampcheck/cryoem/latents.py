"""cryoDRGN's latents file (``z.pkl``): two consecutive pickles in one file, ``mu (N, zdim)``
then ``logvar (N, zdim)``, float32."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ampcheck.cryoem.pickles import dump_pickles, float_array, load_pickles
from ampcheck.errors import InputError

__all__ = ["read_z", "write_z"]

PathLike = str | os.PathLike

def _check_z(path: PathLike, mu: Any, logvar: Any) -> tuple[np.ndarray, np.ndarray]:
    mu = float_array(mu, path, "mu", 2)
    logvar = float_array(logvar, path, "logvar", 2)
    if mu.shape != logvar.shape:
        raise InputError(f"{path}: mu has shape {mu.shape} but logvar {logvar.shape}; expected "
                         "the same (N, zdim)")
    return mu.astype(np.float32), logvar.astype(np.float32)


def read_z(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read cryoDRGN latents: two consecutive pickles ``mu (N, zdim)``, ``logvar (N, zdim)``."""
    return _check_z(path, *load_pickles(path, 2))


def write_z(path: PathLike, mu: np.ndarray, logvar: np.ndarray) -> None:
    """Write latents as cryoDRGN's ``z.pkl``: ``mu (N, zdim)`` then ``logvar``, two pickles."""
    dump_pickles(path, *_check_z(path, np.asarray(mu), np.asarray(logvar)))
