"""Centred Fourier and Hartley transforms, for numpy arrays and torch tensors alike.

"Centred" means the zero frequency sits at index ``D // 2`` of each transformed axis, as in
cryoDRGN (``fftshift(fft(ifftshift(x)))``). The discrete Hartley transform is
``H = Re(F) - Im(F)``; it is real for real input and is its own inverse up to ``1 / N``.
All functions act on the last two axes (``*2``) or on the last three (``*3``).
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch

Array = np.ndarray | torch.Tensor


def _fftn_center(x: Array, ndim: int, inverse: bool) -> Array:
    if isinstance(x, torch.Tensor):
        dims = tuple(range(-ndim, 0))
        f = torch.fft.ifftn if inverse else torch.fft.fftn
        return torch.fft.fftshift(f(torch.fft.ifftshift(x, dim=dims), dim=dims), dim=dims)
    axes = tuple(range(-ndim, 0))
    f = scipy.fft.ifftn if inverse else scipy.fft.fftn
    return np.fft.fftshift(f(np.fft.ifftshift(x, axes=axes), axes=axes), axes=axes)


def fft2_center(img: Array) -> Array:
    """Centred 2-D DFT of ``(..., D, D)`` images (complex output, same shape)."""
    return _fftn_center(img, 2, inverse=False)


def ifft2_center(f: Array) -> Array:
    """Inverse of :func:`fft2_center` (complex output; take ``.real`` for real images)."""
    return _fftn_center(f, 2, inverse=True)


def fft3_center(vol: Array) -> Array:
    """Centred 3-D DFT of ``(..., D, D, D)`` volumes."""
    return _fftn_center(vol, 3, inverse=False)


def ifft3_center(f: Array) -> Array:
    """Inverse of :func:`fft3_center`."""
    return _fftn_center(f, 3, inverse=True)


def _real_minus_imag(f: Array) -> Array:
    return f.real - f.imag


def ht2_center(img: Array) -> Array:
    """Centred 2-D discrete Hartley transform of real ``(..., D, D)`` images."""
    return _real_minus_imag(fft2_center(img))


def iht2_center(h: Array) -> Array:
    """Inverse of :func:`ht2_center`: the same transform divided by the number of pixels."""
    n = h.shape[-1] * h.shape[-2]
    return _real_minus_imag(fft2_center(h)) / n


def ht3_center(vol: Array) -> Array:
    """Centred 3-D discrete Hartley transform of real ``(..., D, D, D)`` volumes."""
    return _real_minus_imag(fft3_center(vol))


def iht3_center(h: Array) -> Array:
    """Inverse of :func:`ht3_center`."""
    n = h.shape[-1] * h.shape[-2] * h.shape[-3]
    return _real_minus_imag(fft3_center(h)) / n


def symmetrize_ht(ht: Array) -> Array:
    """Pad centred ``(..., D, D)`` Hartley images (D even) to ``(..., D+1, D+1)``.

    The extra last row and column repeat the first ones (the Nyquist frequency, which is its own
    mirror), so that the lattice is symmetric about the centre and ``H(-k)`` is a flip, as in
    cryoDRGN's training lattice.
    """
    D = ht.shape[-1]
    if ht.shape[-2] != D or D % 2:
        raise ValueError(f"expected (..., D, D) Hartley images with D even, got {tuple(ht.shape)}")
    if isinstance(ht, torch.Tensor):
        out = torch.empty((*ht.shape[:-2], D + 1, D + 1), dtype=ht.dtype, device=ht.device)
    else:
        out = np.empty((*ht.shape[:-2], D + 1, D + 1), dtype=ht.dtype)
    out[..., :D, :D] = ht
    out[..., D, :D] = ht[..., 0, :]
    out[..., :D, D] = ht[..., :, 0]
    out[..., D, D] = ht[..., 0, 0]
    return out
