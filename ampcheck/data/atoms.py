"""Density maps and projections of atomic models (numpy only; no structure reader needed).

**Atoms.** Each atom is an isotropic 3-D Gaussian whose integral is its element's weight (the
caller's; :mod:`ampcheck.data.structure_files` uses the electron scattering factor at zero
angle, ``f_e(0)``) and whose width ``σ = 0.225 × resolution`` is the same for every atom
(UCSF Chimera's ``molmap`` convention: the map is band-limited near the stated resolution).
The atom's own, sharper profile is neglected: a fair approximation at the resolutions that a
box of tens of pixels reaches (a few Å and coarser).

**Maps.** :func:`rasterize_atoms` samples the density at voxel centres (voxel ``j`` at
``(j − D/2)·apix`` Å, maps indexed ``[z, y, x]``, the convention of
:mod:`ampcheck.cryoem.volumes`), each atom cut off beyond ``4.5 σ`` (relative error < 5e-5).

**Projections.** :class:`SliceProjector` takes one such map and returns the Fourier transforms
of its projections in any pose (cryoDRGN's convention: the slice ``R.T @ (kx, ky, 0)``) and
in-plane shift, in the layout of :func:`ampcheck.cryoem.volumes.project_blobs_fourier`, so that
:func:`~ampcheck.cryoem.volumes.spectrum_to_images` applies the CTF as for the synthetic
molecule. The map is zero-padded (:func:`padding`), pre-divided by the transform of the
trilinear kernel (gridding correction) and the central slices are interpolated trilinearly, as
cryo-EM simulators and reconstruction codes do. Cost per image is ``O(D²)`` whatever the
number of atoms; per map, one ``(2D)³`` FFT. The tests compare it with the exact projection of
the same Gaussian atoms.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import scipy.fft

#: Gaussian width per Å of resolution (Chimera's molmap: σ = resolution / (π √2)).
SIGMA_PER_RESOLUTION = 1.0 / (math.pi * math.sqrt(2.0))
CUTOFF_SIGMAS = 4.5



def padding(D: int) -> int:
    """The projector's zero-padding factor: 3 up to D = 96 (projections within 1% of the exact
    ones at the default resolution, measured), 2 above (memory: a (2D)³ transform)."""
    return 3 if D <= 96 else 2


def atom_sigma(resolution: float) -> float:
    """The width σ (Å) of every atom's Gaussian at ``resolution`` Å."""
    return SIGMA_PER_RESOLUTION * float(resolution)


def rasterize_atoms(coords: np.ndarray, weights: np.ndarray, sigma: float, D: int,
                    apix: float) -> np.ndarray:
    """The density ``(D, D, D)`` float64, indexed ``[z, y, x]``, of Gaussian atoms.

    Args:
        coords: ``(K, 3)`` atom positions ``(x, y, z)`` in Å from the box centre.
        weights: ``(K,)`` integral of each atom's density (e.g. ``f_e(0)`` in Å).
        sigma: width of every atom in Å.
        D, apix: box size (voxels) and voxel size (Å).

    Units: weight per Å³. Atoms whose Gaussian reaches outside the box are cut at the edge.
    """
    coords = np.asarray(coords, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    h = max(1, math.ceil(CUTOFF_SIGMAS * sigma / apix))
    offsets = np.arange(-h, h + 1)
    pos = coords / apix + D // 2  # (K, 3) voxel coordinates (x, y, z)
    base = np.rint(pos).astype(np.int64)
    idx = base[:, :, None] + offsets  # (K, 3, W)
    g = np.exp(-0.5 * ((idx - pos[:, :, None]) * (apix / sigma)) ** 2)
    g *= (idx >= 0) & (idx < D)
    np.clip(idx, 0, D - 1, out=idx)
    amp = weights / (2 * math.pi * sigma**2) ** 1.5
    g[:, 2] *= amp[:, None]
    out = np.zeros(D**3)
    # one atom at a time would be K Python steps; in blocks, the (K, W, W, W) products are
    # bounded in memory and summed by bincount
    block = max(1, 2_000_000 // len(offsets) ** 3)
    for s in range(0, len(coords), block):
        gx, gy, gz = g[s:s + block, 0], g[s:s + block, 1], g[s:s + block, 2]
        ix, iy, iz = idx[s:s + block, 0], idx[s:s + block, 1], idx[s:s + block, 2]
        vals = gz[:, :, None, None] * gy[:, None, :, None] * gx[:, None, None, :]
        flat = (iz[:, :, None, None] * D + iy[:, None, :, None]) * D + ix[:, None, None, :]
        out += np.bincount(flat.ravel(), vals.ravel(), minlength=D**3)
    return out.reshape(D, D, D)


def project_atoms_real(coords: np.ndarray, weights: np.ndarray, sigma: float, rot: np.ndarray,
                       D: int, apix: float) -> np.ndarray:
    """Exact projections ``(B, D, D)`` of Gaussian atoms in poses ``rot`` ``(B, 3, 3)``: the
    analytic 2-D Gaussians ``w / (2πσ²) · exp(−|x − (R c)_xy|² / 2σ²)`` sampled at pixel
    centres (units weight per Å²). Cost ``B·K·D²``: a reference for tests, not for stacks."""
    c = np.asarray(coords, dtype=np.float64) @ np.asarray(rot, dtype=np.float64).transpose(0, 2, 1)
    ax = (np.arange(D) - D // 2) * apix
    gx = np.exp(-((ax - c[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, K, D)
    gy = np.exp(-((ax - c[..., 1:2]) ** 2) / (2 * sigma**2))
    gy *= (np.asarray(weights, dtype=np.float64) / (2 * math.pi * sigma**2))[None, :, None]
    return gy.transpose(0, 2, 1) @ gx


class SliceProjector:
    """Fourier transforms of the projections of one map (see the module's docstring).

    Args:
        volume: ``(D, D, D)`` map indexed ``[z, y, x]``, voxel ``j`` at ``(j − D/2)·apix``.
        apix: voxel size in Å.
        pad: the zero-padding factor (default :func:`padding`).
        fft_threads: the map's FFT's threads (scipy's ``workers``; −1 every core).
    """

    def __init__(self, volume: np.ndarray, apix: float, pad: int | None = None,
                 fft_threads: int = -1):
        volume = np.asarray(volume, dtype=np.float64)
        D = volume.shape[0]
        if volume.shape != (D, D, D) or D % 2:
            raise ValueError(f"expected a cubic map with an even edge, got {volume.shape}")
        self.pad = padding(D) if pad is None else int(pad)
        self.D, self.apix, N = D, float(apix), self.pad * D
        # Trilinear interpolation on the padded transform multiplies the map by
        # sinc²(π x / N) along each axis; dividing first undoes it.
        x = (np.arange(D) - D // 2) / N
        corr = np.sinc(x) ** 2
        # the origin voxel (D/2) at index 0 of the padded map, wrapping around: the transform
        # then needs no shifting; times the voxel volume, it samples the continuous transform
        padded = np.zeros((N,) * 3, dtype=np.float32)
        at = (np.arange(D) - D // 2) % N
        padded[np.ix_(at, at, at)] = volume / (corr[:, None, None] * corr[None, :, None]
                                               * corr[None, None])
        spec = scipy.fft.rfftn(padded, workers=fft_threads)  # (N, N, N//2 + 1), axes [z, y, x]
        spec *= np.float32(self.apix**3)
        # z and y in centred order (index N/2 is frequency 0): interpolation needs no wrapping;
        # two more samples along each axis (z, y: the periodic continuation; x: zeros beyond
        # Nyquist), so that a neighbour of any point in the sphere |k| <= N/2 is stored.
        # Row j of the table holds frequency j − N/2: its first N/2 rows are the spectrum's
        # last N/2, the rest its first N/2 + 2; copied block by block, once.
        half = N // 2
        table = np.zeros((N + 2, N + 2, half + 3), dtype=spec.dtype)
        parts = ((slice(0, half), slice(half, N)), (slice(half, N + 2), slice(0, half + 2)))
        for (tz, sz), (ty, sy) in itertools.product(parts, parts):
            table[tz, ty, :half + 1] = spec[sz, sy]
        self.N, self._flat = N, table.reshape(-1)
        my = np.arange(D) - D // 2  # centred ky order
        mx = np.arange(D // 2 + 1)
        self._m = np.stack(np.broadcast_arrays(mx[None, :], my[:, None], 0 * mx[None, :]),
                           axis=-1).reshape(-1, 3).astype(np.float64)  # (kx, ky, 0) in 1/D
        # the image's Nyquist circle: the images are band-limited there
        self._disc = (self._m[:, :2] ** 2).sum(1) <= (D // 2) ** 2

    def _trilinear(self, k: np.ndarray) -> np.ndarray:
        """The padded transform at ``k`` ``(M, 3)`` (x, y, z) in grid units from the origin,
        interpolated trilinearly; the real map's symmetry ``F(−k) = conj F(k)`` serves
        ``kx < 0``. ``|k|`` must not exceed ``N/2`` along any axis."""
        N, half = self.N, self.N // 2
        flip = k[:, 0] < 0
        k = np.where(flip[:, None], -k, k)
        k[:, 1:] += half
        i = k.astype(np.int64)  # floor: every coordinate is non-negative now
        t = (k - i).astype(np.float32)
        u = 1 - t
        row, plane = half + 3, (N + 2) * (half + 3)
        base = (i[:, 2] * (N + 2) + i[:, 1]) * row + i[:, 0]
        f = self._flat
        w00, w01 = u[:, 2] * u[:, 1], u[:, 2] * t[:, 1]
        w10, w11 = t[:, 2] * u[:, 1], t[:, 2] * t[:, 1]
        acc = (w00 * (u[:, 0] * f[base] + t[:, 0] * f[base + 1])
               + w01 * (u[:, 0] * f[base + row] + t[:, 0] * f[base + row + 1])
               + w10 * (u[:, 0] * f[base + plane] + t[:, 0] * f[base + plane + 1])
               + w11 * (u[:, 0] * f[base + plane + row] + t[:, 0] * f[base + plane + row + 1]))
        return np.where(flip, acc.conj(), acc)

    def spectra(self, rot: np.ndarray, shifts_px: np.ndarray | None = None) -> np.ndarray:
        """``(B, D, D // 2 + 1)`` complex128 transforms of the projections in poses ``rot``
        ``(B, 3, 3)``, the particle displaced by ``shifts_px`` ``(B, 2)`` pixels, on the
        unshifted ``rfft2`` grid (as :func:`~ampcheck.cryoem.volumes.project_blobs_fourier`).
        Frequencies beyond the Nyquist circle (the image's corners) are zero."""
        D = self.D
        rot = np.asarray(rot, dtype=np.float64).reshape(-1, 3, 3)
        k = self._m @ rot  # (B, P, 3): R.T @ m for each row m, as row vectors m @ R
        # frequency m/D is pad·m samples of the padded grid (spacing 1/N) from the origin
        out = np.zeros((len(rot), len(self._m)), dtype=np.complex128)
        out[:, self._disc] = self._trilinear((self.pad * k[:, self._disc]).reshape(-1, 3)
                                             ).reshape(len(rot), -1)
        out = out.reshape(len(rot), D, D // 2 + 1)
        if shifts_px is not None:
            sh = np.asarray(shifts_px, dtype=np.float64).reshape(-1, 2)
            my = (np.arange(D) - D // 2) / D
            mx = np.arange(D // 2 + 1) / D
            out *= (np.exp(-2j * np.pi * sh[:, 1, None] * my)[:, :, None]
                    * np.exp(-2j * np.pi * sh[:, 0, None] * mx)[:, None, :])
        return np.fft.ifftshift(out, axes=-2)
