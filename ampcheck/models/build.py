"""The networks of ampcheck's own model families, built from a training config for a data set.

:mod:`ampcheck.families` names these builders by ``"module:function"`` so that the registry
stays torch-free; each is ``(config, data, device) -> network``, the network on the CPU (the
training loop moves it).
"""

from __future__ import annotations

from typing import Any

from .cryoem import CryoVAE
from .mnist import MnistVAE


def cryoem_vae(config: Any, data: Any, device: Any = None) -> CryoVAE:
    """The cryo-EM VAE for ``data``'s ``D x D`` images, with the config's encoder preset."""
    return CryoVAE(data.D, config.encoder, config.zdim, seed=config.seed)


def mnist_vae(config: Any, data: Any = None, device: Any = None) -> MnistVAE:
    """The MNIST VAE (the paper's 2-dimensional latent unless the config gives ``zdim``)."""
    return MnistVAE(zdim=config.zdim or 2, seed=config.seed)
