"""cryoDRGN's index files (``--ind``): a pickled 1-D array of image indices.

``cryodrgn train_vae --ind ind.pkl`` trains on the images ``ind`` of the stack, in that order:
image ``k`` of the filtered data set is image ``ind[k]`` (0-based) of the stack; poses and CTF
files that hold a row per image of the whole stack are filtered the same way. The file is a
pickle (``cryodrgn filter`` / ``select_random`` write a numpy int array), so it is read with the
restricted unpickler of :mod:`ampcheck.cryoem.pickles`.
"""

from __future__ import annotations

import os

import numpy as np

from ampcheck.cryoem.pickles import load_pickle
from ampcheck.errors import InputError

__all__ = ["read_ind"]

PathLike = str | os.PathLike


def read_ind(path: PathLike, n: int | None = None) -> np.ndarray:
    """The image indices of an index pickle: int64 ``(M,)``, in the file's order.

    Accepted: a 1-D numpy integer array, or a list or tuple of integers, with ``M >= 1``
    distinct values in ``[0, n)`` (``n``: the number of images of the stack it indexes; not
    checked when None). Refused with :class:`InputError` naming the file: anything else, an
    empty selection, an index out of range (negative ones too: cryoDRGN would silently count
    them from the end) and a repeated index (the image would count twice, and could fall on
    both sides of a training/held-out split).
    """
    obj = load_pickle(path)
    arr = np.asarray(obj) if isinstance(obj, np.ndarray | list | tuple) else None
    if arr is None or arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        what = (type(obj).__name__ if arr is None
                else f"a {arr.dtype} array of shape {arr.shape}")
        raise InputError(f"{path}: holds {what}; expected a 1-D array of integer image indices "
                         "(cryoDRGN's --ind format, e.g. written by `cryodrgn filter`)")
    if not len(arr):
        raise InputError(f"{path}: holds no indices; expected the indices of the images to use")
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or (n is not None and high >= n):
        bad = low if low < 0 else high
        limit = "" if n is None else f"; the stack has {n} images (indices 0..{n - 1})"
        raise InputError(f"{path}: index {bad} is out of range{limit}; expected 0-based "
                         "image indices")
    uniq, counts = np.unique(arr, return_counts=True)
    if len(uniq) != len(arr):
        raise InputError(f"{path}: holds {len(arr) - len(uniq)} repeated indices (first: "
                         f"{int(uniq[counts > 1][0])}); expected distinct image indices")
    return arr.astype(np.int64)
