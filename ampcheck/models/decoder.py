"""cryoDRGN's volume decoder: a coordinate MLP on random Fourier features of 3-D frequencies.

The decoder maps a 3-D frequency ``k`` (cycles/pixel, in [-0.5, 0.5]) and a latent ``z`` to
the volume's Fourier transform ``(Re, Im)`` at ``k``. Hermitian symmetry is built in: only the
``kz <= 0`` hemisphere is represented (a point with ``kz > 0`` is evaluated at ``-k`` and
conjugated; on the plane ``kz = 0`` one half-plane likewise), so the volume is real. The
Hartley value is ``Re - Im``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mlp import ResidLinear, ResidMLP


class FourierDecoder(nn.Module):
    """Random Fourier features (cryoDRGN's ``--pe-type gaussian``) + a residual MLP.

    Args:
        D: image size (pixels); the features use ``3 * pe_dim`` random frequency vectors drawn
            from N(0, feat_sigma²) and scaled by ``D/2``.
        zdim: latent dimension.
        hidden, layers: MLP width and number of residual hidden layers (3 x 256 by default).
        pe_dim: default ``D // 2``.
        generator: random generator for the frequency vectors (a fixed buffer, not trained).
    """

    def __init__(self, D: int, zdim: int, hidden: int = 256, layers: int = 3,
                 pe_dim: int | None = None, feat_sigma: float = 0.5,
                 generator: torch.Generator | None = None):
        super().__init__()
        pe_dim = D // 2 if pe_dim is None else pe_dim
        self.zdim = zdim
        freqs = torch.randn(3 * pe_dim, 3, generator=generator) * feat_sigma * (D // 2)
        self.register_buffer("freqs", freqs)
        self.n_features = 6 * pe_dim
        self.mlp = ResidMLP(self.n_features + zdim, hidden, layers, 2)

    def _features(self, coords: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=coords.device.type, enabled=False):  # geometry in fp32
            k = coords.float() @ self.freqs.T
            return torch.cat([torch.sin(k), torch.cos(k)], dim=-1)

    @staticmethod
    def _flipped(coords: torch.Tensor) -> torch.Tensor:
        """Points whose negatives represent them: ``kz > 0``, and on the plane ``kz = 0`` the
        half ``ky > 0`` (and ``kx > 0`` on its line ``ky = 0``), so that every pair ``±k``
        is decoded once and the volume is exactly Hermitian (real)."""
        x, y, z = coords.unbind(-1)
        return (z > 0) | ((z == 0) & ((y > 0) | ((y == 0) & (x > 0))))

    def fourier(self, coords: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Volume transform ``(..., P, 2)`` (Re, Im) at ``coords (B, P, 3)`` for ``z (B, zdim)``."""
        flip = self._flipped(coords)
        coords = torch.where(flip[..., None], -coords, coords)
        features = self._features(coords)
        # The first layer acts on [features(k), z]; z's share is computed once per image
        # instead of once per frequency (the same weights as concatenating).
        first, rest = self.mlp.layers[0], self.mlp.layers[1:]
        w = first.weight
        h = F.linear(features, w[:, : self.n_features])
        h = h + F.linear(z, w[:, self.n_features :], first.bias)[:, None, :]
        if isinstance(first, ResidLinear):  # square first layer: cryoDRGN adds its input
            h = h + torch.cat([features, z[:, None, :].expand(*features.shape[:-1], -1)], -1)
        out = rest(h)
        return torch.stack([out[..., 0], torch.where(flip, -out[..., 1], out[..., 1])], dim=-1)

    def hartley(self, coords: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Hartley values ``(B, P)`` at ``coords (B, P, 3)``."""
        f = self.fourier(coords, z)
        return f[..., 0] - f[..., 1]

    def hartley_symmetric(self, coords_half: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Hartley values on a point set ``[K, -reversed(K)]`` from its first half ``K``.

        ``coords_half (B, P, 3)`` are the first ``P`` points of a symmetric set of ``2P`` whose
        second half lists the negatives in reverse order; ``H(-k) = Re + Im`` at ``k``.
        """
        f = self.fourier(coords_half, z)
        return torch.cat([f[..., 0] - f[..., 1], (f[..., 0] + f[..., 1]).flip(-1)], dim=-1)
