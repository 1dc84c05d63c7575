"""Adapters: models trained by other programs, behind ampcheck's :class:`~ampcheck.checks.VAE`
protocol, and the model families they register (:mod:`ampcheck.families`; importing this
package registers them, and the registry imports it when a config names a family no one has
registered yet).

* :mod:`ampcheck.adapters.cryodrgn`: a ``cryodrgn train_vae`` output directory (needs the
  optional ``cryodrgn`` package: ``pip install "ampcheck[cryodrgn]"``; importing this module
  does not);
* :mod:`ampcheck.adapters.cryodrgn_retrain`: such a run's network as the model family
  ``cryodrgn``, retrained by ampcheck's loop with the run's settings (its evil twins and
  lookup table);
* :mod:`ampcheck.adapters.cryodrgn_lib`: the cryodrgn package as both use it;
* :mod:`ampcheck.adapters.cryodrgn_facts`: what the report page says of such a run.
"""

from __future__ import annotations

from . import cryodrgn_facts  # noqa: F401  (registers the page's facts of a cryoDRGN run)
from .cryodrgn import (
    CryoDRGNVAE,
    check_cryodrgn,
    cryodrgn_dataset,
    cryodrgn_latents,
    load_cryodrgn,
)

__all__ = ["CryoDRGNVAE", "check_cryodrgn", "cryodrgn_dataset", "cryodrgn_latents",
           "load_cryodrgn"]
