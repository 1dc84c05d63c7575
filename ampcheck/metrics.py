"""Metrics: pure functions on arrays. Each states which way is better.

Fourier shell correlation (FSC) convention, used everywhere in ampcheck:

* shells: voxel ``k`` of the centred 3-D DFT (origin at index ``D/2``) belongs to shell
  ``r = round(|k|)`` in Fourier pixels; shells ``0 .. D/2`` are reported (the corners beyond
  Nyquist are ignored); shell ``r`` has spatial frequency ``r / (D·apix)`` 1/Å;
* ``FSC(r) = Re Σ F1·conj(F2) / sqrt(Σ|F1|² · Σ|F2|²)`` over the shell;
* crossing: the first shell ``r >= 1`` whose FSC falls below the threshold; the resolution is
  ``1 / s`` at the frequency ``s`` where the FSC curve, linearly interpolated between that shell
  and the one before, meets the threshold. A curve that never falls below reaches Nyquist:
  ``2·apix`` is reported.
"""

from __future__ import annotations

import numpy as np

from .cryoem.fft import fft3_center


def fsc(vol1: np.ndarray, vol2: np.ndarray) -> np.ndarray:
    """FSC curve ``(D/2 + 1,)`` of two ``(D, D, D)`` volumes, shells ``0 .. D/2``.

    Higher is better (1: identical up to a positive scale; ~0: unrelated).
    """
    vol1, vol2 = np.asarray(vol1, dtype=np.float64), np.asarray(vol2, dtype=np.float64)
    if vol1.shape != vol2.shape or vol1.ndim != 3 or len(set(vol1.shape)) != 1:
        raise ValueError(f"FSC needs two cubic volumes of one shape, got {vol1.shape} and "
                         f"{vol2.shape}")
    D = vol1.shape[0]
    f1, f2 = fft3_center(vol1), fft3_center(vol2)
    ax = np.arange(D) - D // 2
    r = np.rint(np.sqrt(ax[:, None, None] ** 2 + ax[None, :, None] ** 2
                        + ax[None, None, :] ** 2)).astype(np.int64).ravel()
    keep = r <= D // 2
    r = r[keep]
    cross = np.bincount(r, (f1 * np.conj(f2)).real.ravel()[keep], minlength=D // 2 + 1)
    p1 = np.bincount(r, (np.abs(f1) ** 2).ravel()[keep], minlength=D // 2 + 1)
    p2 = np.bincount(r, (np.abs(f2) ** 2).ravel()[keep], minlength=D // 2 + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p1 * p2 > 0, cross / np.sqrt(p1 * p2), 0.0)


def fsc_resolution(curve: np.ndarray, apix: float, threshold: float = 0.5) -> float:
    """Resolution in Å where an FSC curve crosses ``threshold`` (lower is better).

    ``curve`` is :func:`fsc`'s output for volumes of ``D = 2·(len(curve) - 1)`` voxels of
    ``apix`` Å; see the module docstring for the crossing convention.
    """
    curve = np.asarray(curve, dtype=np.float64)
    D = 2 * (len(curve) - 1)
    freqs = np.arange(len(curve)) / (D * apix)
    below = np.flatnonzero(curve[1:] < threshold)
    if below.size == 0:
        return 2.0 * apix
    i = below[0] + 1  # first shell below the threshold (>= 1)
    f0, f1, c0, c1 = freqs[i - 1], freqs[i], curve[i - 1], curve[i]
    s = f1 if c0 == c1 else f0 + (c0 - threshold) * (f1 - f0) / (c0 - c1)
    return float(np.inf) if s <= 0 else float(1.0 / s)
