"""Fourier lattices of a ``D x D`` image (D even), in cryoDRGN's layout.

The training lattice is the ``(D+1) x (D+1)`` grid of a symmetrised, centred Hartley image
(:func:`ampcheck.cryoem.fft.symmetrize_ht`), with coordinates in cycles per pixel from -0.5 to
0.5; ``x`` (coordinate 0) runs along columns and ``y`` (coordinate 1) along rows. Divide by the
pixel size to get spatial frequencies in 1/Å.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np


class Lattice:
    """The symmetric ``(D+1)^2`` frequency lattice of ``D x D`` images.

    Attributes:
        D: image size in pixels (even).
        coords: ``((D+1)**2, 3)`` float64 frequency coordinates in cycles/pixel, z = 0.
    """

    def __init__(self, D: int):
        if D < 2 or D % 2:
            raise ValueError(f"image size D must be an even integer >= 2, got {D}")
        self.D = int(D)

    @cached_property
    def coords(self) -> np.ndarray:
        ax = np.linspace(-0.5, 0.5, self.D + 1)
        x, y = np.meshgrid(ax, ax)  # x varies along columns, y along rows
        return np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], axis=1)

    def freqs2d(self, apix: float) -> np.ndarray:
        """``((D+1)**2, 2)`` spatial frequencies in 1/Å for pixel size ``apix`` Å."""
        return self.coords[:, :2] / apix

    def circular_mask(self, radius_px: float | None = None) -> np.ndarray:
        """Boolean ``((D+1)**2,)`` mask of frequencies within ``radius_px`` (default ``D/2``).

        The radius is in Fourier pixels: ``radius_px = D/2`` reaches Nyquist (0.5 cycles/pixel).
        """
        radius_px = self.D / 2 if radius_px is None else radius_px
        r2 = (self.coords[:, :2] ** 2).sum(axis=1)
        return r2 <= (radius_px / self.D) ** 2 + 1e-12


def rfft_frequencies(D: int, apix: float) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (1/Å) of an unshifted ``rfft2`` grid of ``D x D`` images.

    Returns ``(ky, kx)`` with shapes ``(D,)`` and ``(D // 2 + 1,)``: the row (y) frequencies in
    ``numpy.fft.fftfreq`` order and the non-negative column (x) frequencies.
    """
    return np.fft.fftfreq(D, d=apix), np.fft.rfftfreq(D, d=apix)


def radial_window(D: int, in_rad: float = 0.85, out_rad: float = 0.99) -> np.ndarray:
    """Soft circular real-space window ``(D, D)``, as cryoDRGN's default preprocessing.

    1 within ``in_rad`` and 0 beyond ``out_rad`` (fractions of the half box), linear between;
    the centre is pixel ``(D/2, D/2)``.
    """
    if not 0 < in_rad <= out_rad:
        raise ValueError(f"need 0 < in_rad <= out_rad, got {in_rad}, {out_rad}")
    ax = np.linspace(-1, 1, D + 1)[:-1]
    r = np.hypot(*np.meshgrid(ax, ax, indexing="ij"))
    if in_rad == out_rad:
        return (r <= out_rad).astype(np.float64)
    return np.clip(1.0 - (r - in_rad) / (out_rad - in_rad), 0.0, 1.0)
