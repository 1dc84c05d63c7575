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
    cryodrgn_run_data,
    cryodrgn_split,
    load_cryodrgn,
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
    run's ``weights.N.pkl``, the last readable epoch's model and the data set checked (an
    epoch whose weights cannot be read is skipped and listed in ``profile.skipped``).
    Arguments as :func:`~ampcheck.adapters.cryodrgn.check_cryodrgn`; held-out images are
    required."""
    from ..checks import ProtocolModel, settings_for, subject_from, usable_truth
    from ..checks.over_epochs import epoch_checks, measure_epochs, preload
    from ..thresholds import resolve_thresholds

    epochs = selection.select(saved_epochs(run_dir), str(run_dir))
    if ind is None and heldout_ind is None:
        raise ConfigError(f"the profile over epochs compares training with held-out images: "
                          f"{GIVE_HELDOUT}")
    # the latest readable epoch's weights describe the run (the data set's preprocessing,
    # the seed); an unreadable one is skipped and listed like any other
    _, first, load = preload(epochs[::-1], lambda e: load_cryodrgn(run_dir, epoch=e,
                                                                   device=device))
    whole = cryodrgn_run_data(first, particles, poses, ctf, truth=truth, ind=ind,
                              datadir=datadir)
    data, train_idx, _ = cryodrgn_split(whole, particles=particles, heldout_ind=heldout_ind,
                                        ind=ind)
    if train_idx is None:
        raise ConfigError(f"{ind}: names every image, so none is held out; {GIVE_HELDOUT}")
    names = epoch_checks(checks, bool(usable_truth(data.truth)))
    seed = recorded_seed(first.config) or 0  # the checks' (check_cryodrgn_run)
    views = subject_from(first, data, train_indices=train_idx, seeds=[seed])
    settings = settings_for(budget, resolve_thresholds(thresholds), per_epoch=True)

    def check(model):
        return check_cryodrgn_run(model, whole, particles=particles, heldout_ind=heldout_ind,
                                  ind=ind, checks=names, budget=budget, settings=settings)

    profile = measure_epochs(epochs, load, check, data=data, train=views.train,
                             heldout=views.heldout, settings=settings, seed=seed,
                             checkable=ProtocolModel, on_epoch=on_epoch,
                             processes=processes)
    return profile, first, data
