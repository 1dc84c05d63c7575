"""The profile over epochs of a ``cryodrgn train_vae`` run (``check --cryodrgn --epoch all``).

cryoDRGN keeps ``weights.N.pkl`` every ``--checkpoint`` epochs (1 by default);
:func:`check_cryodrgn_epochs` loads each chosen one once and measures it through the
single-epoch path (:func:`~ampcheck.adapters.cryodrgn.check_cryodrgn_run`, as ``check
--cryodrgn --epoch N``) on the run's held-out images (``ind`` or ``heldout_ind``), with what
:func:`ampcheck.checks.over_epochs.measure_epochs` adds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..budgets import DEFAULT_BUDGET
from ..errors import ConfigError
from .cryodrgn import (
    GIVE_HELDOUT,
    PathLike,
    check_cryodrgn_run,
    cryodrgn_split,
    load_cryodrgn,
    open_cryodrgn_run,
    saved_epochs,
)
from .cryodrgn_retrain import recorded_seed

__all__ = ["check_cryodrgn_epochs"]


def check_cryodrgn_epochs(run_dir: PathLike, particles: PathLike, poses: PathLike | None,
                          ctf: PathLike | None = None, *, selection, truth: PathLike | None = None,
                          heldout_ind: PathLike | None = None, ind: PathLike | None = None,
                          datadir: PathLike | None = None, checks: Iterable[str] | None = None,
                          thresholds: Mapping[str, float] | None = None,
                          budget: str = DEFAULT_BUDGET, device: str = "auto",
                          on_epoch=None, processes: int = 1) -> tuple[Any, Any, Any]:
    """``(profile, model, data)``: the :class:`~ampcheck.checks.over_epochs.EpochProfile` of
    the epochs ``selection`` (:class:`~ampcheck.epochs.EpochSelection`) picks among the
    run's ``weights.N.pkl``, the last epoch's model and the data set checked. Arguments as
    :func:`~ampcheck.adapters.cryodrgn.check_cryodrgn`; held-out images are required."""
    from ..checks import ProtocolModel, settings_for, subject_from, usable_truth
    from ..checks.over_epochs import epoch_checks, measure_epochs
    from ..thresholds import resolve_thresholds

    epochs = selection.select(saved_epochs(run_dir), str(run_dir))
    if ind is None and heldout_ind is None:
        raise ConfigError(f"the profile over epochs compares training with held-out images: "
                          f"{GIVE_HELDOUT}")
    first, whole = open_cryodrgn_run(run_dir, particles, poses, ctf, truth=truth, ind=ind,
                                     datadir=datadir, epoch=epochs[-1], device=device)
    data, train_idx, _ = cryodrgn_split(whole, particles=particles, heldout_ind=heldout_ind,
                                        ind=ind)
    if train_idx is None:
        raise ConfigError(f"{ind}: names every image, so none is held out; {GIVE_HELDOUT}")
    names = epoch_checks(checks, bool(usable_truth(data.truth)))
    seed = recorded_seed(first.config) or 0  # the checks' (check_cryodrgn_run)
    views = subject_from(first, data, train_indices=train_idx, seeds=[seed])
    loaded = {epochs[-1]: first}

    def load(epoch: int):
        return loaded.pop(epoch, None) or load_cryodrgn(run_dir, epoch=epoch, device=device)

    settings = settings_for(budget, resolve_thresholds(thresholds), per_epoch=True)

    def check(model):
        return check_cryodrgn_run(model, whole, particles=particles, heldout_ind=heldout_ind,
                                  ind=ind, checks=names, budget=budget, settings=settings)

    profile = measure_epochs(epochs, load, check, data=data, train=views.train,
                             heldout=views.heldout, settings=settings, seed=seed,
                             checkable=ProtocolModel, on_epoch=on_epoch,
                             processes=processes)
    return profile, first, data
