"""Pseudo-atomic volumes made of isotropic Gaussian blobs, with exact projections.

A blob of amplitude ``a``, centre ``c`` (Å) and width ``σ`` (Å) has density
``ρ(r) = a·exp(−|r − c|² / 2σ²)``. Everything about it is analytic:

* its 3-D Fourier transform is ``a·(2πσ²)^{3/2}·exp(−2π²σ²|k|²)·exp(−2πi k·c)``
  (convention ``F(k) = ∫ρ(r) e^{−2πi k·r} dr``, ``k`` in 1/Å);
* its projection along z is the 2-D Gaussian ``a·√(2π)·σ·exp(−|(x, y) − c_xy|² / 2σ²)``.

A projection in pose ``R`` (cryoDRGN's convention, see :mod:`ampcheck.cryoem.rotations`) is
computed either in Fourier space, by evaluating the transform on the central slice
``R.T @ (kx, ky, 0)`` of the DFT grid (the Fourier slice theorem, no interpolation), or in real
space, by sampling the projected 2-D Gaussians at pixel centres. Both are separable in x and y,
so a batch of projections is a batched matrix product of per-blob factors.

Grid convention: pixel (voxel) index ``j`` sits at ``(j − D/2)·apix`` Å, so the centre of a
``D``-box is index ``D/2``, the origin of the centred DFT. Volumes are indexed ``[z, y, x]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from .ctf import ctf_from_table
from .lattice import rfft_frequencies

_TWO_PI = 2.0 * np.pi


def _axis_angstroms(D: int, apix: float) -> np.ndarray:
    return (np.arange(D) - D // 2) * apix


def _batch(centers: np.ndarray, weights: np.ndarray, rot: np.ndarray, apix: float,
           shifts_px: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-image centres ``(B, K, 3)``, rotated and displaced in plane, and weights ``(B, K)``."""
    rot = np.asarray(rot, dtype=np.float64).reshape(-1, 3, 3)
    centers = np.broadcast_to(np.asarray(centers, dtype=np.float64),
                              (rot.shape[0], *np.shape(centers)[-2:]))
    weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), centers.shape[:2])
    # Rotated centres R @ c, written for row vectors: c @ R.T
    moved = centers @ rot.transpose(0, 2, 1)
    if shifts_px is not None:
        moved[..., :2] += np.asarray(shifts_px, dtype=np.float64)[:, None, :] * apix
    return moved, weights


def _phase_powers(coord: np.ndarray, m_max: int, dk: float) -> np.ndarray:
    """``exp(-2πi·coord·m·dk)`` for ``m = 0 .. m_max`` along a new last axis."""
    z = np.exp(-1j * _TWO_PI * dk * coord)
    out = np.empty((*coord.shape, m_max + 1), dtype=np.complex128)
    out[..., 0] = 1.0
    out[..., 1:] = z[..., None]
    return np.cumprod(out, axis=-1, out=out)


def project_blobs_fourier(centers: np.ndarray, sigmas: np.ndarray, weights: np.ndarray,
                          rot: np.ndarray, D: int, apix: float,
                          shifts_px: np.ndarray | None = None) -> np.ndarray:
    """Exact Fourier transforms of projections, on the unshifted half-plane ``rfft2`` grid.

    Args:
        centers: ``(K, 3)`` or ``(B, K, 3)`` blob centres in Å.
        sigmas: ``(K,)`` blob widths in Å.
        weights: ``(K,)`` or ``(B, K)`` blob amplitudes (0 removes a blob).
        rot: ``(B, 3, 3)`` poses.
        D, apix: image size (pixels) and pixel size (Å).
        shifts_px: optional ``(B, 2)`` displacement ``(dx, dy)`` of the particle in pixels
            (the image content moves by ``+shift``).

    Returns:
        ``(B, D, D // 2 + 1)`` complex128 continuous Fourier transform of each projection,
        sampled at ``(ky, kx)`` = :func:`~ampcheck.cryoem.lattice.rfft_frequencies`.
    """
    c, w = _batch(centers, weights, rot, apix, shifts_px)
    sig2 = np.asarray(sigmas, dtype=np.float64) ** 2
    # The transform is separable: Σ_k amp_k·env_k(kx)·env_k(ky)·phase_k(kx)·phase_k(ky), with
    # the Gaussian envelope env = exp(-2π²σ²k²) and phase = exp(-2πi k c). Blobs of one width
    # share the envelope, which then multiplies the (small) sum once per width instead of
    # every per-blob factor; sorting by width makes each group a contiguous slice.
    order = np.argsort(sig2, kind="stable")
    sig2, c, w = sig2[order], c[:, order], w[:, order]
    # On the uniform grid k_m = m·dk the phases are powers z^m of one unit number per blob:
    # a cumulative product (rounding ~ m·1e-16) replaces B·K·D complex exponentials. Along y
    # the grid runs in centred order, m = -D/2 .. D/2-1, i.e. z^(-D/2)·z^j for j = 0 .. D-1;
    # the constant z^(-D/2) and the amplitude go into the (smaller) x factor.
    dk = 1.0 / (D * apix)
    px = _phase_powers(c[..., 0], D // 2, dk)  # (B, K, D//2+1)
    py = _phase_powers(c[..., 1], D - 1, dk)  # (B, K, D)
    amp = w * (_TWO_PI * sig2) ** 1.5 * np.exp(1j * _TWO_PI * dk * (D // 2) * c[..., 1])
    px *= amp[..., None]
    ky = (np.arange(D) - D // 2) * dk
    kx = np.arange(D // 2 + 1) * dk
    out = np.zeros((c.shape[0], D, D // 2 + 1), dtype=np.complex128)
    bounds = np.flatnonzero(np.diff(sig2)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(sig2)], strict=True):
        env = np.exp(-2 * np.pi**2 * sig2[lo] * (ky[:, None] ** 2 + kx[None, :] ** 2))
        out += (py[:, lo:hi].transpose(0, 2, 1) @ px[:, lo:hi]) * env
    return np.fft.ifftshift(out, axes=-2)  # centred ky order -> fftfreq order


def spectrum_to_images(spectrum: np.ndarray, D: int, apix: float,
                       ctf_table: np.ndarray | None = None, *,
                       fft_threads: int = -1) -> np.ndarray:
    """Real-space images ``(B, D, D)`` from half-plane spectra of :func:`project_blobs_fourier`.

    Optionally multiplies by the CTF of each image first (``ctf_table`` rows as in ``ctf.pkl``).
    The result is the projection sampled at pixel centres (units: density·Å), periodic in the
    box and band-limited at Nyquist. ``fft_threads``: the inverse FFT's threads (scipy's
    ``workers``; −1 every core); each image's values are the same whatever the number.
    """
    if ctf_table is not None:
        ky, kx = rfft_frequencies(D, apix)
        freqs = np.stack(np.broadcast_arrays(kx[None, :], ky[:, None]), axis=-1).reshape(-1, 2)
        ctf = ctf_from_table(freqs, np.asarray(ctf_table, dtype=np.float64))
        spectrum = spectrum * ctf.reshape(-1, D, D // 2 + 1)
    # Riemann sum of the inverse transform: p(x) = Σ_k P(k) e^{2πikx} Δk², Δk = 1/(D·apix),
    # and irfft2 divides by D², so scale by 1/apix². fftshift moves the origin to index D/2.
    img = scipy.fft.irfft2(spectrum, s=(D, D), axes=(-2, -1), workers=fft_threads) / apix**2
    return np.fft.fftshift(img, axes=(-2, -1))


def project_blobs_real(centers: np.ndarray, sigmas: np.ndarray, weights: np.ndarray,
                       rot: np.ndarray, D: int, apix: float,
                       shifts_px: np.ndarray | None = None) -> np.ndarray:
    """Projections ``(B, D, D)`` as analytic 2-D Gaussians sampled at pixel centres.

    Same arguments as :func:`project_blobs_fourier`; units density·Å. Not periodic: a blob
    near the edge is cut off, where the Fourier route wraps it around.
    """
    c, w = _batch(centers, weights, rot, apix, shifts_px)
    sig = np.asarray(sigmas, dtype=np.float64)
    ax = _axis_angstroms(D, apix)
    inv2s2 = (0.5 / sig**2)[None, :, None]
    gx = np.exp(-((ax - c[..., 0:1]) ** 2) * inv2s2)  # (B, K, D)
    gy = np.exp(-((ax - c[..., 1:2]) ** 2) * inv2s2)
    gy *= (w * np.sqrt(_TWO_PI) * sig)[..., None]
    return gy.transpose(0, 2, 1) @ gx


def rasterize_blobs(centers: np.ndarray, sigmas: np.ndarray, weights: np.ndarray, D: int,
                    apix: float) -> np.ndarray:
    """Density sampled at voxel centres: ``(D, D, D)`` float64 indexed ``[z, y, x]``."""
    c = np.asarray(centers, dtype=np.float64)
    sig = np.asarray(sigmas, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    ax = _axis_angstroms(D, apix)
    inv2s2 = (0.5 / sig**2)[:, None]
    gx, gy, gz = (np.exp(-((ax - c[:, i : i + 1]) ** 2) * inv2s2) for i in range(3))
    zy = (gz[:, :, None] * gy[:, None, :]).reshape(len(c), D * D)  # (K, D²)
    return (zy.T @ (w[:, None] * gx)).reshape(D, D, D)


def blob_fourier_transform(centers: np.ndarray, sigmas: np.ndarray, weights: np.ndarray,
                           k: np.ndarray) -> np.ndarray:
    """Analytic 3-D Fourier transform at frequencies ``k`` ``(..., 3)`` in 1/Å (complex)."""
    c = np.asarray(centers, dtype=np.float64)
    sig2 = np.asarray(sigmas, dtype=np.float64) ** 2
    w = np.asarray(weights, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    k2 = (k**2).sum(-1)[..., None]
    phase = k @ c.T  # (..., K)
    terms = w * (_TWO_PI * sig2) ** 1.5 * np.exp(-2 * np.pi**2 * sig2 * k2 - 1j * _TWO_PI * phase)
    return terms.sum(-1)


@dataclass(frozen=True)
class BlobVolume:
    """A pseudo-atomic volume: ``K`` isotropic Gaussian blobs.

    Attributes:
        centers: ``(K, 3)`` blob centres ``(x, y, z)`` in Å from the box centre.
        sigmas: ``(K,)`` widths in Å.
        weights: ``(K,)`` amplitudes (density at a blob's centre).
    """

    centers: np.ndarray
    sigmas: np.ndarray
    weights: np.ndarray

    def __post_init__(self):
        k = len(self.centers)
        if np.shape(self.centers) != (k, 3) or np.shape(self.sigmas) != (k,) \
                or np.shape(self.weights) != (k,):
            raise ValueError("BlobVolume needs centers (K, 3), sigmas (K,) and weights (K,)")
        if np.any(np.asarray(self.sigmas) <= 0):
            raise ValueError("blob widths must be positive")

    def fourier(self, k: np.ndarray) -> np.ndarray:
        """Analytic Fourier transform at ``(..., 3)`` frequencies in 1/Å."""
        return blob_fourier_transform(self.centers, self.sigmas, self.weights, k)

    def rasterize(self, D: int, apix: float) -> np.ndarray:
        """``(D, D, D)`` density on the voxel grid, indexed ``[z, y, x]``."""
        return rasterize_blobs(self.centers, self.sigmas, self.weights, D, apix)

    def project(self, rot: np.ndarray, D: int, apix: float,
                shifts_px: np.ndarray | None = None, ctf_table: np.ndarray | None = None,
                route: str = "fourier") -> np.ndarray:
        """``(B, D, D)`` projections in poses ``rot`` ``(B, 3, 3)``, optionally CTF-modulated.

        ``route="fourier"`` (exact central slices, periodic and band-limited; the only route
        that applies a CTF) or ``"real"`` (analytic real-space Gaussians).
        """
        if route == "real":
            if ctf_table is not None:
                raise ValueError("the real-space route does not apply a CTF")
            return project_blobs_real(self.centers, self.sigmas, self.weights, rot, D, apix,
                                      shifts_px)
        if route != "fourier":
            raise ValueError(f"route must be 'fourier' or 'real', got {route!r}")
        spec = project_blobs_fourier(self.centers, self.sigmas, self.weights, rot, D, apix,
                                     shifts_px)
        return spectrum_to_images(spec, D, apix, ctf_table)
