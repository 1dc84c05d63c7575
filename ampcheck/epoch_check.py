"""The profile over epochs of a run of ``ampcheck train`` (``check --run RUN --epoch all``).

:func:`check_run_epochs` measures the numbered checkpoints that ``ampcheck train
--checkpoint-every`` kept (:func:`ampcheck.checkpoints.epoch_checkpoints`) on the run's own
split, each epoch through the single-epoch path of ``check --run RUN --epoch N``
(:func:`ampcheck.checks.check_vae` on the run's config, the epoch's model adopted by the
cache), so the numbers of one epoch are the same either way
(:func:`ampcheck.checks.over_epochs.measure_epochs`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .checkpoints import epoch_checkpoints

__all__ = ["check_run_epochs", "checkpoint_loader"]


def checkpoint_loader(saved: Mapping[int, str | Path], train_set, device: str | None = None
                      ) -> Callable[[int], Any]:
    """``load(epoch)``: the :class:`~ampcheck.train.TrainedModel` of ``saved[epoch]`` (an
    ``ampcheck train`` checkpoint) on ``train_set``, the images it trained on (``device``:
    None, the checkpoint's own); a file that cannot be read raises one
    :class:`~ampcheck.errors.InputError` line naming it."""
    from .train import TrainedModel

    def load(epoch: int):
        return TrainedModel.load(saved[epoch], train_set, device=device)

    return load


def check_run_epochs(run_dir: str | Path, selection, *, checks=None, thresholds=None,
                     device: str = "auto", on_epoch=None, processes: int = 1
                     ) -> tuple[Any, dict, Any]:
    """``(profile, meta, data)``: the :class:`~ampcheck.checks.over_epochs.EpochProfile` of
    the epochs ``selection`` (:class:`~ampcheck.epochs.EpochSelection`) picks among those
    the run saved, with its ``run.json`` and data set (``processes``: epochs measured side
    by side, :func:`~ampcheck.checks.over_epochs.measure_epochs`)."""
    from .checks import TrainingCache, check_vae, settings_for, usable_truth
    from .checks.over_epochs import epoch_checks, measure_epochs
    from .runs import open_run
    from .thresholds import resolve_thresholds
    from .train import training_split

    run_dir = Path(run_dir)
    meta, cfg, data, train_set, _ = open_run(run_dir, device, vae_only=True)
    saved = epoch_checkpoints(run_dir)
    epochs = selection.select(saved, str(run_dir))
    budget = meta.get("budget", "smoke")
    names = epoch_checks(checks, bool(usable_truth(data.truth)))
    _, heldout = training_split(cfg, data)

    load = checkpoint_loader(saved, train_set, cfg.device)
    settings = settings_for(budget, resolve_thresholds(thresholds), per_epoch=True)

    def check(model):
        cache = TrainingCache()
        cache.add(model, train_set)  # the epoch's weights stand for the run's config
        return check_vae(cfg, data, checks=names, budget=budget, seeds=[cfg.seed],
                         settings=settings, cache=cache, name=f"{cfg.model}:{cfg.encoder}")

    profile = measure_epochs(epochs, load, check, data=data, train=train_set,
                             heldout=heldout,
                             settings=settings, seed=cfg.seed, on_epoch=on_epoch,
                             processes=processes)
    return profile, meta, data
