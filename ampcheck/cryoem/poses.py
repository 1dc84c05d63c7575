"""Poses and CTF parameters in cryoDRGN's files and conventions.

* Poses (``pose.pkl``): a tuple ``(rot (N, 3, 3), trans (N, 2))`` with ``trans`` in fractions
  of the box, or a bare ``(N, 3, 3)`` array of rotations.
* CTF (``ctf.pkl``): ``(N, 9)`` ``[D, apix, dfu, dfv, dfang, volt, cs, w, phase_shift]``
  (pixels, Å, Å, Å, degrees, kV, mm, ratio, degrees).

:func:`check_poses` and :func:`check_ctf` validate arrays from any source (a pickle, a
``.star``, a caller) the same way; CTF rows with a defocus that is not positive are refused.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ampcheck.cryoem.ctf import CTF_COLUMNS
from ampcheck.cryoem.pickles import check_count, dump_pickles, float_array, load_pickle
from ampcheck.errors import InputError

__all__ = ["check_poses", "read_poses", "write_poses", "check_ctf", "read_ctf", "write_ctf"]

PathLike = str | os.PathLike

def check_poses(path: PathLike, rot: Any, trans: Any, n: int | None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate poses; return float32 ``rot (N, 3, 3)`` and ``trans (N, 2)`` (fractions) | None."""
    if isinstance(rot, np.ndarray) and rot.ndim != 3:
        hint = " (Euler angles? convert them to matrices)" if rot.shape[-1:] == (3,) else ""
        raise InputError(f"{path}: rotations have shape {rot.shape}; expected (N, 3, 3) rotation "
                         f"matrices{hint}")
    rot = float_array(rot, path, "rotations", 3).astype(np.float64)
    if rot.shape[1:] != (3, 3):
        raise InputError(f"{path}: rotations have shape {rot.shape}; expected (N, 3, 3)")
    with np.errstate(all="ignore"):  # huge entries overflow to inf: refused just below
        err = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2), initial=0.0)
        det = np.linalg.det(rot) if len(rot) else np.ones(0)
    bad = ~((err <= 1e-3) & (np.abs(det - 1) <= 1e-3))  # NaN is bad too
    if bad.any():
        k = int(np.nonzero(bad)[0][0])
        raise InputError(f"{path}: {int(bad.sum())} of {len(rot)} matrices are not rotations "
                         f"(first: #{k}, max |R R^T - I| = {err[k]:.3g}, det = {det[k]:.4g}); "
                         "expected orthonormal matrices with determinant +1")
    check_count(path, "rotations", len(rot), n)
    if trans is None:
        return rot.astype(np.float32), None
    trans = float_array(trans, path, "translations", 2)
    if trans.shape != (len(rot), 2):
        raise InputError(f"{path}: translations have shape {trans.shape}; expected "
                         f"({len(rot)}, 2) to match the {len(rot)} rotations")
    tmax = float(np.abs(trans).max(initial=0.0))
    if tmax > 1:
        raise InputError(f"{path}: translations must be fractions of the box (|t| <= 1); found "
                         f"max |t| = {tmax:.4g}; did you save pixels?")
    return rot.astype(np.float32), trans.astype(np.float32)


def read_poses(path: PathLike, n: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a cryoDRGN poses pickle: ``(rot (N, 3, 3), trans (N, 2) | None)``, float32.

    The file holds a tuple ``(rot, trans)`` or a bare ``(N, 3, 3)`` array (rotations only);
    ``trans`` is in fractions of the box. ``n``: the expected number of poses.
    """
    obj = load_pickle(path)
    if isinstance(obj, (tuple, list)) and len(obj) in (1, 2):
        return check_poses(path, obj[0], obj[1] if len(obj) == 2 else None, n)
    if isinstance(obj, np.ndarray):
        return check_poses(path, obj, None, n)
    kind = f"a {type(obj).__name__} of length {len(obj)}" if isinstance(obj, (tuple, list)) \
        else type(obj).__name__
    raise InputError(f"{path}: holds {kind}; expected a tuple (rot (N, 3, 3), trans (N, 2)) or "
                     "an (N, 3, 3) array of rotations")


def write_poses(path: PathLike, rot: np.ndarray, trans: np.ndarray | None = None) -> None:
    """Write poses as cryoDRGN does: a pickled tuple ``(rot, trans)``, or ``rot`` alone.

    ``rot (N, 3, 3)``; ``trans (N, 2)`` in fractions of the box. Validated before writing.
    """
    rot, trans = check_poses(path, np.asarray(rot), None if trans is None else np.asarray(trans),
                              None)
    dump_pickles(path, rot if trans is None else (rot, trans))




def check_ctf(path: PathLike, ctf: Any, n: int | None) -> np.ndarray:
    """Validate CTF parameters ``(N, 9)``; return them as float32.

    Refused: a shape other than ``(N, 9)``, non-finite values, and per row a non-positive
    ``D``, ``apix``, ``volt`` or defocus (``dfu``, ``dfv``), a negative ``cs`` and ``w``
    outside [0, 1]. Defocus is in Å with underfocus positive (cryoDRGN's and RELION's
    convention). Zero or negative defocus (in focus, or overfocus) is not how single-particle
    images are taken but what a sign flip or a failed fit writes, and a model trained with it
    fits the wrong CTF; so it is refused, naming the row, rather than used silently.
    """
    ctf = float_array(ctf, path, "CTF parameters", 2)
    if ctf.shape[1] != 9:
        raise InputError(f"{path}: CTF parameters have shape {ctf.shape}; expected (N, 9) columns "
                         f"[{', '.join(CTF_COLUMNS)}]")
    checks = [(0, lambda c: c > 0, "D (image size) must be positive"),
              (1, lambda c: c > 0, "apix (Å/pixel) must be positive"),
              (2, lambda c: c > 0, "dfu (defocus in Å, underfocus) must be positive"),
              (3, lambda c: c > 0, "dfv (defocus in Å, underfocus) must be positive"),
              (5, lambda c: c > 0, "volt (kV) must be positive"),
              (6, lambda c: c >= 0, "cs (mm) must be non-negative"),
              (7, lambda c: (c >= 0) & (c <= 1), "w (amplitude contrast) must be in [0, 1]")]
    for col, ok, what in checks:
        bad = np.flatnonzero(~ok(ctf[:, col]))
        if bad.size:
            raise InputError(f"{path}: CTF column {col} {what}; row {bad[0]} (0-based) has "
                             f"{ctf[bad[0], col]:g} (columns: {', '.join(CTF_COLUMNS)})")
    check_count(path, "CTF rows", len(ctf), n)
    return ctf.astype(np.float32)


def read_ctf(path: PathLike, n: int | None = None) -> np.ndarray:
    """Read a cryoDRGN CTF pickle: float32 ``(N, 9)`` ``[D, apix, dfu, dfv, dfang, volt, cs, w,
    phase_shift]`` (pixels, Å, Å, Å, degrees, kV, mm, ratio, degrees)."""
    return check_ctf(path, load_pickle(path), n)


def write_ctf(path: PathLike, ctf: np.ndarray) -> None:
    """Write CTF parameters ``(N, 9)`` as a float32 pickle (cryoDRGN's ``ctf.pkl``)."""
    dump_pickles(path, check_ctf(path, np.asarray(ctf), None))
