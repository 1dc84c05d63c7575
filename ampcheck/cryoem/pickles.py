"""Pickles are data from strangers: read with a restricted unpickler, written atomically.

:func:`load_pickle` admits only numpy arrays, tuples, lists, dicts and scalars (cryoDRGN's
poses, CTF, latents and index files hold nothing else); a pickle that asks for any other global
is refused with :class:`~ampcheck.errors.UnsafePickleError` naming it, before anything of it
runs. :func:`load_pickles` / :func:`dump_pickles` read and write several objects in one file;
:func:`float_array` and :func:`check_count` validate the arrays that the readers of
:mod:`ampcheck.cryoem.poses` and :mod:`ampcheck.cryoem.latents` take out of them.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ampcheck.errors import InputError, UnsafePickleError
from ampcheck.files import atomic_path

__all__ = ["load_pickle", "load_pickles", "dump_pickles", "float_array", "check_count"]

PathLike = str | os.PathLike

def _safe_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    import _codecs

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("builtins", "complex"): complex,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("_codecs", "encode"): _codecs.encode,  # bytes in protocol-2 pickles
    }
    for core in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x spellings
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    return allowed


_SAFE_GLOBALS = _safe_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol 0-2 pickles spell builtins the Python 2 way
            module = "builtins"
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._path}: refusing to load {module}.{name} from this pickle; expected only "
                "numpy arrays, tuples, lists, dicts and scalars (the file may be unsafe)"
            ) from None


def load_pickles(path: PathLike, count: int) -> list[Any]:
    """The first ``count`` objects pickled one after another in ``path`` (cryoDRGN's
    ``z.pkl`` holds two), each read with the restricted unpickler of :func:`load_pickle`.
    Raises :class:`InputError` naming the file when it is missing, truncated or not a pickle."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected a pickle)")
    out = []
    with open(path, "rb") as f:
        for i in range(count):
            try:
                out.append(_RestrictedUnpickler(f, path).load())
            except UnsafePickleError:
                raise
            except EOFError as e:
                found = "is empty or truncated" if i == 0 else f"holds only {i} pickled object(s)"
                raise InputError(f"{path}: {found}; expected {count} pickled object(s)") from e
            except Exception as e:
                raise InputError(f"{path}: not a valid pickle ({type(e).__name__}: {e})") from e
    return out


def load_pickle(path: PathLike) -> Any:
    """Load one pickled object of numpy arrays, tuples, lists, dicts and scalars only.

    Anything else raises :class:`UnsafePickleError` naming the forbidden ``module.name``.
    """
    return load_pickles(path, 1)[0]


def dump_pickles(path: PathLike, *objs: Any) -> None:
    """Pickle ``objs`` one after another into ``path`` (protocol 4), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for obj in objs:
            pickle.dump(obj, f, protocol=4)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def float_array(x: Any, path: PathLike, what: str, ndim: int) -> np.ndarray:
    """``x`` itself if it is a finite integer or float array of ``ndim`` dimensions whose
    values fit float32 (every array read is stored as float32); else an :class:`InputError`
    naming ``path`` and ``what`` the array is."""
    if not isinstance(x, np.ndarray) or not (np.issubdtype(x.dtype, np.floating)
                                            or np.issubdtype(x.dtype, np.integer)):
        kind = f"an array of {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
        raise InputError(f"{path}: {what} is {kind}; expected a numeric numpy array")
    if x.ndim != ndim:
        raise InputError(f"{path}: {what} has shape {x.shape}; expected {ndim} dimensions")
    if not np.isfinite(x).all():
        raise InputError(f"{path}: {what} holds NaN or Inf values; expected finite numbers")
    big = float(np.abs(x).max(initial=0))
    if big > _FLOAT32_MAX:
        raise InputError(f"{path}: {what} holds a value of magnitude {big:.3g}; expected "
                         f"numbers that fit float32 (|x| <= {_FLOAT32_MAX:.3g})")
    return x


def check_count(path: PathLike, what: str, found: int, n: int | None) -> None:
    """An :class:`InputError` unless ``path`` holds ``n`` ``what`` (one per image; None: any
    number), ``found`` being how many it holds."""
    if n is not None and found != n:
        raise InputError(f"{path}: holds {found} {what}; expected {n} (one per image)")
