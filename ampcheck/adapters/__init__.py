"""Adapters: models trained by other programs, behind ampcheck's :class:`~ampcheck.checks.VAE`
protocol.

* :mod:`ampcheck.adapters.cryodrgn`: a ``cryodrgn train_vae`` output directory (needs the
  optional ``cryodrgn`` package: ``pip install "ampcheck[cryodrgn]"``; importing this module
  does not);
* :mod:`ampcheck.adapters.cryodrgn_retrain`: such a run's network, retrained by ampcheck's
  loop with the run's settings (its evil twins and lookup table).
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
