"""The classic MNIST VAE of the paper's App. B (SPEC §3): the control that amortizes well.

Encoder: an MLP with three hidden layers of width 256 and ReLU, then two separate linear heads to
``mu`` and ``logvar`` (zdim 2). Decoder: two hidden layers (256, ReLU) to one logit per pixel;
the pixel probabilities are the sigmoid of the logits, and the likelihood is Bernoulli. It drives
the same training loop as :class:`~ampcheck.models.cryoem.CryoVAE`: ``prepare`` a batch of
:class:`~ampcheck.data.mnist.MnistDataset`, ``encode`` it, ``recon_loss`` at a latent ``z``; the
loop adds ``kl_weight * beta * KL``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError

__all__ = ["MnistVAE"]


def _positive_int(name: str, value: int) -> int:
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class MnistVAE(nn.Module):
    """MLP VAE on ``image_size x image_size`` images with pixels in [0, 1].

    Args:
        zdim: latent dimension (the paper's 2).
        hidden: width of every hidden layer (256).
        image_size: image side in pixels (28).
        seed: seeds the initial weights (without touching the global random state).

    Attributes:
        kl_weight: 1.0; the loss per image is the Bernoulli negative log-likelihood summed over
            pixels plus ``beta * KL`` (the standard ELBO).
    """

    def __init__(self, zdim: int = 2, hidden: int = 256, image_size: int = 28, seed: int = 0):
        super().__init__()
        self.zdim = _positive_int("zdim", zdim)
        self.hidden = _positive_int("hidden", hidden)
        self.image_size = _positive_int("image_size", image_size)
        self.n_pixels = self.image_size**2
        self.kl_weight = 1.0
        h, p = self.hidden, self.n_pixels
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = nn.Sequential(nn.Linear(p, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
                                         nn.Linear(h, h), nn.ReLU())
            self.mu_head = nn.Linear(h, self.zdim)
            self.logvar_head = nn.Linear(h, self.zdim)
            self.decoder = nn.Sequential(nn.Linear(self.zdim, h), nn.ReLU(), nn.Linear(h, h),
                                         nn.ReLU(), nn.Linear(h, p))

    def prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"x_enc", "target"}``, both the flattened images ``(B, image_size**2)``."""
        y = batch["y"]
        if y.shape[-2:] != (self.image_size, self.image_size):
            raise InputError(f"images of shape {tuple(y.shape[1:])}; this MnistVAE expects "
                             f"{self.image_size} x {self.image_size}")
        x = y.reshape(len(y), self.n_pixels)
        return {"x_enc": x, "target": x}

    def encode(self, x_enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, each ``(B, zdim)``, of flattened images ``(B, image_size**2)``."""
        h = self.encoder(x_enc)
        return self.mu_head(h), self.logvar_head(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits ``(B, image_size**2)`` at latents ``z (B, zdim)``."""
        return self.decoder(z)

    def decode_images(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities ``(B, image_size, image_size)`` (for plots)."""
        return torch.sigmoid(self.decode(z)).reshape(len(z), self.image_size, self.image_size)

    def recon_loss(self, prep: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """Bernoulli negative log-likelihood per image ``(B,)``, in nats summed over pixels."""
        logits = self.decode(z)
        return F.binary_cross_entropy_with_logits(logits, prep["target"],
                                                  reduction="none").sum(-1)
