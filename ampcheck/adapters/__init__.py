"""Adapters: models trained by other programs, behind ampcheck's :class:`~ampcheck.checks.VAE`
protocol.

* :mod:`ampcheck.adapters.cryodrgn`: a ``cryodrgn train_vae`` output directory (needs the
  optional ``cryodrgn`` package: ``pip install "ampcheck[cryodrgn]"``; importing this module
  does not).
"""

from __future__ import annotations

from .cryodrgn import (
    CryoDRGNVAE,
    check_cryodrgn,
    cryodrgn_dataset,
    cryodrgn_latents,
    load_cryodrgn,
)

__all__ = ["CryoDRGNVAE", "check_cryodrgn", "cryodrgn_dataset", "cryodrgn_latents",
           "load_cryodrgn"]
