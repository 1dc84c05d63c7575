"""cryoDRGN's package as the adapters use it: imported on demand, with the process's logging
kept, and what a ``train_vae`` checkpoint records.

cryoDRGN is optional: nothing here imports it until :func:`import_cryodrgn` is called, which
raises :class:`~ampcheck.errors.ConfigError` naming :data:`INSTALL_HINT` where it is absent.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["INSTALL_HINT", "checkpoint_epoch", "import_cryodrgn", "logging_kept"]

INSTALL_HINT = 'pip install "ampcheck[cryodrgn]" (or pip install cryodrgn)'


@contextlib.contextmanager
def logging_kept() -> Iterator[None]:
    """Keep the process's logging configuration across an import of cryodrgn.

    cryoDRGN 4.3's ``__init__`` calls ``logging.config.dictConfig``: it replaces the root
    logger's handlers (INFO to stdout, its own format) and disables every logger that already
    exists, ampcheck's included, so that a program that checks a cryoDRGN run would lose its
    own status lines and print cryoDRGN's records. The root's handlers and level and each
    logger's ``disabled`` flag are put back as they were (loggers cryoDRGN creates stay on)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    loggers = logging.Logger.manager.loggerDict
    disabled = {name: lg.disabled for name, lg in loggers.items()
                if isinstance(lg, logging.Logger)}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lg in list(loggers.items()):
            if isinstance(lg, logging.Logger):
                lg.disabled = disabled.get(name, False)


def import_cryodrgn() -> SimpleNamespace:
    """cryoDRGN's modules the adapter uses, or a :class:`ConfigError` saying how to install
    (imported with the process's logging configuration kept: :func:`logging_kept`)."""
    try:
        with logging_kept():
            import cryodrgn
    except ImportError as e:
        raise ConfigError(f"the cryoDRGN adapter needs the cryodrgn package, which cannot be "
                          f"imported here ({e}); install it with {INSTALL_HINT}") from None
    try:
        with logging_kept():
            from cryodrgn import config, ctf, fft
            from cryodrgn.masking import spherical_window_mask
            from cryodrgn.models import HetOnlyVAE
    except ImportError as e:
        version = getattr(cryodrgn, "__version__", "?")
        raise ConfigError(f"cryodrgn {version} lacks what the adapter uses ({e}); it targets "
                          "cryodrgn 4.3: pip install cryodrgn==4.3.1") from None
    return SimpleNamespace(config=config, ctf=ctf, fft=fft, HetOnlyVAE=HetOnlyVAE,
                           window_mask=spherical_window_mask,
                           version=getattr(cryodrgn, "__version__", "?"))


def checkpoint_epoch(weights: Path, fallback: int | None) -> int | None:
    """The epoch a ``train_vae`` checkpoint records (``save_checkpoint`` stores its 1-based
    ``epoch``, so ``weights.pkl`` says which epoch the final weights are), read without
    loading its tensors (``mmap``); ``fallback`` (the file name's) for a checkpoint that
    cannot be read so (an old, non-zip format)."""
    try:
        ckpt = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # the weights themselves were loaded: only the mmap read failed
        return fallback
    epoch = ckpt.get("epoch") if isinstance(ckpt, dict) else None
    ok = isinstance(epoch, int | np.integer) and not isinstance(epoch, bool) and epoch >= 0
    return int(epoch) if ok else fallback
