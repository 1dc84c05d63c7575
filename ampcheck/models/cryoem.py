"""The cryo-EM VAE in cryoDRGN's style (SPEC §3): an encoder, a Fourier decoder, CTF, poses.

Images arrive as the symmetrised, centred, normalised Hartley transforms ``y (B, D+1, D+1)`` of
:class:`~ampcheck.data.particles.ParticleDataset`. Both encoder and decoder work on the
``N`` points of the lattice inside the circle of radius ``D/2``, without the origin (as
cryoDRGN). The masked points are kept in the lattice's row-major order, which on this
symmetric lattice lists ``-k`` at the mirrored position of ``k``: the second half of the set
is the negated first half reversed, so the decoder evaluates only the first half.

One training step (cryoDRGN's ``train_vae``):

1. translate ``y`` by the pose's ``trans`` (a Hartley phase shift) to centre the particle;
2. encoder input: the translated image times the sign of its CTF (phase flipping; the
   invariant encoder uses the isotropic CTF);
3. decoder: the central slice ``coords @ R`` at latent ``z``, times the CTF;
4. loss: mean squared error over the masked points + ``beta * KL / N``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..cryoem.ctf import ctf_from_table
from ..cryoem.fft import iht3_center
from ..cryoem.lattice import Lattice
from ..errors import ConfigError
from .decoder import FourierDecoder
from .encoders import build_encoder, encoder_preset


def training_mask(D: int) -> np.ndarray:
    """Boolean ``((D+1)**2,)``: inside the circle of radius ``D/2`` and not the origin."""
    lattice = Lattice(D)
    mask = lattice.circular_mask(D / 2)
    mask[len(mask) // 2] = False  # the DC term (cryoDRGN's ignore_DC)
    return mask


class CryoVAE(nn.Module):
    """Encoder + Fourier decoder for ``D x D`` particle images.

    Args:
        D: image size in pixels (even).
        encoder: preset name (``base``, ``small``, ``large``, ``invariant``).
        zdim: latent dimension (default: the preset's).
        dec_hidden, dec_layers: decoder MLP size (cryoDRGN's 3 x 256 by default).
        seed: seeds the weights and the decoder's random Fourier features.
    """

    def __init__(self, D: int, encoder: str = "base", zdim: int | None = None,
                 dec_hidden: int = 256, dec_layers: int = 3, seed: int = 0):
        super().__init__()
        if int(D) != D or D < 4 or D % 2:
            raise ConfigError(f"image size D must be an even integer >= 4, got {D}")
        preset = encoder_preset(encoder)
        zdim = preset.zdim if zdim is None else zdim
        if int(zdim) != zdim or zdim < 1:
            raise ConfigError(f"zdim must be a positive integer, got {zdim}")
        self.D, self.zdim, self.encoder_name = int(D), int(zdim), encoder
        self.isotropic_flip = preset.invariant  # see InvariantEncoder
        mask = training_mask(self.D)
        coords = Lattice(self.D).coords[mask]
        self.n_pixels = int(mask.sum())
        self.kl_weight = 1.0 / self.n_pixels  # KL over the number of pixels, as cryoDRGN
        self.register_buffer("mask", torch.from_numpy(mask), persistent=False)
        self.register_buffer("coords", torch.from_numpy(coords).float(), persistent=False)
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = build_encoder(encoder, coords[:, :2] * self.D, self.D, self.zdim)
            self.decoder = FourierDecoder(self.D, self.zdim, dec_hidden, dec_layers,
                                          generator=gen)

    # ------------------------------------------------------------------ the training step
    def translate(self, y: torch.Tensor, trans_px: torch.Tensor) -> torch.Tensor:
        """Shift masked Hartley images ``(B, N)`` by ``trans_px (B, 2)`` pixels.

        ``H'(k) = cos(2π k·t) H(k) + sin(2π k·t) H(-k)``: the image moves by ``+t``.
        """
        phase = 2 * torch.pi * (self.coords[:, :2] @ trans_px.T).T  # (B, N)
        return torch.cos(phase) * y + torch.sin(phase) * y.flip(-1)

    def ctf(self, ctf_rows: torch.Tensor, isotropic: bool = False) -> torch.Tensor:
        """CTF ``(B, N)`` on the masked lattice from ``ctf.pkl`` rows ``(B, 9)``.

        ``isotropic``: without astigmatism (both defoci at their mean), so that the CTF, like
        the lattice, is unchanged by 90° rotations.
        """
        if isotropic:
            ctf_rows = ctf_rows.clone()
            ctf_rows[:, 2:4] = ctf_rows[:, 2:4].mean(1, keepdim=True)
        freqs = self.coords[None, :, :2] / ctf_rows[:, 1, None, None]  # cycles/Å
        return ctf_from_table(freqs, ctf_rows)

    def prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Centre, mask and phase-flip a batch from the data set (steps 1-2 above).

        Always in float32, also inside an autocast region: phases and CTF are geometry.
        """
        with torch.autocast(device_type=batch["y"].device.type, enabled=False):
            return self._prepare(batch)

    def _prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        y = batch["y"].reshape(len(batch["y"]), -1)[:, self.mask]
        if "trans" in batch:
            y = self.translate(y, batch["trans"])
        prep = {"target": y, "rot": batch["rot"], "x_enc": y}
        if "ctf" in batch:
            prep["ctf"] = self.ctf(batch["ctf"])
            flip = self.ctf(batch["ctf"], isotropic=True) if self.isotropic_flip else prep["ctf"]
            prep["x_enc"] = y * torch.sign(flip)
        return prep

    def encode(self, x_enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x_enc)

    def decode(self, rot: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Predicted Hartley slices ``(B, N)`` for poses ``rot (B, 3, 3)``, no CTF."""
        with torch.autocast(device_type=rot.device.type, enabled=False):  # geometry in fp32
            half = self.coords[: self.n_pixels // 2] @ rot.float()  # (B, N/2, 3) = coords @ R
        return self.decoder.hartley_symmetric(half, z)

    def recon_loss(self, prep: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """Per-image mean squared error ``(B,)`` over the masked pixels (CTF applied)."""
        pred = self.decode(prep["rot"], z)
        if "ctf" in prep:
            pred = pred * prep["ctf"]
        return (pred - prep["target"]).square().mean(-1)

    # ------------------------------------------------------------------ volumes
    @torch.no_grad()
    def decode_volume(self, z: torch.Tensor | np.ndarray,
                      norm: tuple[float, float] = (0.0, 1.0), chunk: int = 65536) -> np.ndarray:
        """The real-space volume ``(D, D, D)`` (indexed ``[z, y, x]``) at latent ``z (zdim,)``.

        As cryoDRGN's ``eval_volume``: the decoder's Hartley values on the ``(D+1)^3``
        lattice inside the sphere of radius 0.5, rescaled by the data's normalisation
        ``(mean, std)``, the last (Nyquist) plane of each axis dropped, then the inverse 3-D
        Hartley transform.
        """
        z = torch.as_tensor(np.asarray(z, dtype=np.float32)).reshape(1, -1)
        z = z.to(self.coords.device)
        ax = torch.linspace(-0.5, 0.5, self.D + 1, device=self.coords.device)
        gz, gy, gx = torch.meshgrid(ax, ax, ax, indexing="ij")
        grid = torch.stack([gx, gy, gz], dim=-1).reshape(-1, 3)
        inside = grid.square().sum(-1) <= 0.25
        values = torch.zeros(len(grid), device=grid.device)
        pts = grid[inside]
        out = torch.cat([self.decoder.hartley(pts[s:s + chunk][None], z)[0]
                         for s in range(0, len(pts), chunk)])
        values[inside] = out
        values = values * norm[1] + norm[0]
        vol_h = values.reshape(self.D + 1, self.D + 1, self.D + 1)[:-1, :-1, :-1]
        return iht3_center(vol_h.double().cpu().numpy()).astype(np.float32)
