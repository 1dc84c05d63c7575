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
from .mlp import ResidMLP


@dataclass(frozen=True)
class EncoderPreset:
    layers: int
    hidden: int
    zdim: int
    invariant: bool = False


ENCODER_PRESETS: dict[str, EncoderPreset] = {
    "base": EncoderPreset(3, 256, 8),  # the paper's tutorial baseline
    "small": EncoderPreset(2, 256, 2),  # App. C.2
    "large": EncoderPreset(5, 1024, 8),  # the evil-twin "larger network" (§3.3)
    "invariant": EncoderPreset(3, 256, 8, invariant=True),  # the control the paper suggests
}


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

    Its features are the image's power spectrum averaged over each orbit of the 90° rotations
    of the Fourier lattice. A circular shift multiplies the Fourier transform by a phase and a
    translation or CTF sign flip mixes ``H(k)`` and ``H(-k)`` by a rotation, none of which
    changes ``|F(k)|² = (H(k)² + H(-k)²)/2``; a 90° rotation of the image permutes each orbit.
    So the latents cannot move under these transforms, while the spectrum still carries the
    particle's shape. (Windowing in real space is not shift invariant: train it on unwindowed
    images for exact shift invariance.)
    """

    def __init__(self, orbits: np.ndarray, hidden: int, layers: int, zdim: int):
        super().__init__()
        self.zdim = zdim
        self.register_buffer("orbits", torch.as_tensor(orbits, dtype=torch.long), persistent=False)
        # log-power features all sit near the noise floor: standardising each one (a per-feature
        # operation on invariant features, so invariance is untouched) conditions the MLP.
        self.norm = nn.BatchNorm1d(len(orbits), affine=False)
        self.mlp = ResidMLP(len(orbits), hidden, layers, 2 * zdim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` Hartley values -> ``(B, N // 4)`` log orbit-averaged power."""
        return torch.log1p(x[:, self.orbits].square().mean(-1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.mlp(self.norm(self.features(x)))
        return out[:, : self.zdim], out[:, self.zdim :]


def build_encoder(name: str, lattice_px: np.ndarray, zdim: int | None = None) -> nn.Module:
    """The encoder preset ``name`` for the masked lattice ``(N, 2)`` (Fourier pixels)."""
    preset = encoder_preset(name)
    zdim = preset.zdim if zdim is None else zdim
    if zdim < 1:
        raise ConfigError(f"zdim must be a positive integer, got {zdim}")
    if preset.invariant:
        return InvariantEncoder(rotation_orbits(lattice_px), preset.hidden, preset.layers, zdim)
    return MLPEncoder(len(lattice_px), preset.hidden, preset.layers, zdim)
