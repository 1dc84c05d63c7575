"""Encoders of the cryo-EM VAE: cryoDRGN's MLP presets and an exactly invariant control.

Every encoder takes the masked, translated, CTF-phase-flipped Hartley image ``(B, N)`` of
:class:`~ampcheck.models.cryoem.CryoVAE` and returns ``(mu, logvar)``, each ``(B, zdim)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..families import CRYOEM_ENCODERS
from .mlp import ResidMLP


@dataclass(frozen=True)
class EncoderPreset:
    layers: int
    hidden: int
    zdim: int
    invariant: bool = False


_SIZES: dict[str, EncoderPreset] = {
    "base": EncoderPreset(3, 256, 8),  # the paper's tutorial baseline
    "small": EncoderPreset(2, 256, 2),  # App. C.2
    "large": EncoderPreset(5, 1024, 8),  # the evil-twin "larger network" (§3.3)
    "invariant": EncoderPreset(3, 256, 8, invariant=True),  # the control the paper suggests
}
#: The size of each encoder that ``ampcheck.families.CRYOEM_ENCODERS`` names, in that order (a
#: name without a size here fails at import).
ENCODER_PRESETS: dict[str, EncoderPreset] = {name: _SIZES[name] for name in CRYOEM_ENCODERS}


def encoder_preset(name: str) -> EncoderPreset:
    try:
        return ENCODER_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown encoder preset {name!r}; expected one of "
                          f"{', '.join(ENCODER_PRESETS)}") from None


class MLPEncoder(nn.Module):
    """cryoDRGN's encoder: a residual MLP on the masked Hartley image."""

    def __init__(self, in_dim: int, hidden: int, layers: int, zdim: int):
        super().__init__()
        self.zdim = zdim
        self.mlp = ResidMLP(in_dim, hidden, layers, 2 * zdim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.mlp(x)
        return out[:, : self.zdim], out[:, self.zdim :]


def rotation_orbits(lattice_px: np.ndarray) -> np.ndarray:
    """Group masked lattice points into orbits of the 90° rotations ``k -> (-ky, kx)``.

    Args:
        lattice_px: ``(N, 2)`` integer frequency coordinates ``(kx, ky)`` in Fourier pixels,
            a set closed under 90° rotations that excludes the origin.

    Returns:
        ``(N // 4, 4)`` indices: row ``r`` lists ``k, Rk, R²k = -k, R³k``.
    """
    pts = np.rint(lattice_px).astype(np.int64)
    where = {tuple(p): i for i, p in enumerate(pts)}
    seen = np.zeros(len(pts), dtype=bool)
    orbits = []
    for i, (kx, ky) in enumerate(pts):
        if seen[i]:
            continue
        members = [where[(kx, ky)], where[(-ky, kx)], where[(-kx, -ky)], where[(ky, -kx)]]
        seen[members] = True
        orbits.append(members)
    return np.asarray(orbits, dtype=np.int64)


class InvariantEncoder(nn.Module):
    """An encoder exactly invariant to circular shifts and 90° rotations of the image.

    cryoDRGN's MLP, made invariant without giving up the image's phases:

    1. **Shifts: canonical centring.** The image is moved (a Fourier phase shift) so that the
       circular centroid of its low-pass energy ``|lowpass(x)|²`` sits at the origin. A circular
       shift of the input shifts that centroid by the same amount, so the centred image does
       not change. A blurred *energy* map is used because it is dominated by the particle at low
       SNR, whatever the CTF's sign, so similar particles are centred alike.
    2. **90° rotations: group pooling.** The first layer sees the centred image in all four
       rotations of the Fourier lattice (a permutation of the masked points) and averages its
       activations over them; centring commutes with rotation, so a rotated input permutes the
       four terms of the average.

    The input must not depend on the image's orientation through the CTF: :class:`CryoVAE`
    phase-flips it with the isotropic CTF (mean defocus) for this encoder. Windowing in real
    space is not shift invariant either: train it on unwindowed images (``model_view``).
    """

    def __init__(self, lattice_px: np.ndarray, D: int, hidden: int, layers: int, zdim: int,
                 lowpass_px: float | None = None):
        super().__init__()
        self.zdim, self.D = zdim, int(D)
        pts = np.rint(lattice_px).astype(np.int64)  # (N, 2) (kx, ky)
        # -k sits at the mirrored position of k (see CryoVAE): H(-k) = x.flip(-1)
        orbits = rotation_orbits(pts)
        perms = np.empty((4, len(pts)), dtype=np.int64)  # perms[r][j]: index of R^r k_j
        for m in range(4):
            for r in range(4):
                perms[r, orbits[:, m]] = orbits[:, (m + r) % 4]
        self.register_buffer("perms", torch.from_numpy(perms), persistent=False)
        # the low-pass points and where they go on the D x D FFT grid
        r_lp = self.D / 8 if lowpass_px is None else float(lowpass_px)
        k2 = (pts**2).sum(1)
        low = np.flatnonzero(k2 <= r_lp**2)
        weight = np.exp(-k2[low] / (2 * (r_lp / 2) ** 2))
        self.register_buffer("low", torch.from_numpy(low), persistent=False)
        self.register_buffer("low_weight", torch.from_numpy(weight).float(), persistent=False)
        grid = (pts[low, 1] % self.D) * self.D + pts[low, 0] % self.D
        self.register_buffer("low_grid", torch.from_numpy(grid), persistent=False)
        self.register_buffer("k_frac", torch.from_numpy(pts / self.D).float(), persistent=False)
        self.first = nn.Linear(len(pts), hidden)
        self.mlp = ResidMLP(hidden, hidden, layers - 1, 2 * zdim)

    def centroid(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 2)`` circular centroid ``(x, y)`` in pixels of the low-pass energy of ``x``."""
        B, D = len(x), self.D
        h, h_neg = x[:, self.low], x.flip(-1)[:, self.low]
        f = torch.complex(h + h_neg, h_neg - h) * (0.5 * self.low_weight)  # F from Hartley
        grid = torch.zeros(B, D * D, dtype=f.dtype, device=x.device)
        grid[:, self.low_grid] = f
        energy = torch.fft.ifft2(grid.view(B, D, D)).real.square()
        axis = torch.exp(-2j * torch.pi * torch.arange(D, device=x.device) / D).to(f.dtype)
        ex = energy.sum(1).to(f.dtype) @ axis  # first Fourier coefficients of the marginals
        ey = energy.sum(2).to(f.dtype) @ axis
        return -torch.stack([ex.angle(), ey.angle()], dim=-1) * (D / (2 * torch.pi))

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        """Masked Hartley images ``(B, N)`` moved so that their centroid is at the origin."""
        phase = 2 * torch.pi * (self.k_frac @ -self.centroid(x).T).T  # (B, N)
        return torch.cos(phase) * x + torch.sin(phase) * x.flip(-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.centre(x.float())
        h = torch.relu(self.first(c[:, self.perms])).mean(1)  # (B, 4, N) -> (B, hidden)
        out = self.mlp(h)
        return out[:, : self.zdim], out[:, self.zdim :]


def build_encoder(name: str, lattice_px: np.ndarray, D: int,
                  zdim: int | None = None) -> nn.Module:
    """The encoder preset ``name`` for the masked lattice ``(N, 2)`` (Fourier pixels) of
    ``D x D`` images."""
    preset = encoder_preset(name)
    zdim = preset.zdim if zdim is None else zdim
    if zdim < 1:
        raise ConfigError(f"zdim must be a positive integer, got {zdim}")
    if preset.invariant:
        return InvariantEncoder(lattice_px, D, preset.hidden, preset.layers, zdim)
    return MLPEncoder(len(lattice_px), preset.hidden, preset.layers, zdim)
