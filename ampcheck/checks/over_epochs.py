"""The amortization profile over training epochs: each saved epoch's weights, measured once.

:func:`measure_epochs` loads each epoch's weights once (nothing is trained) and measures it
with the single-epoch checks themselves (``check(model)``: the very path ``ampcheck check``
takes for one epoch, so one epoch's numbers are the same either way, at the same seed and
samples), and beside them what only a comparison of epochs or of the two sides needs. Per
epoch, under these names (each a :class:`~ampcheck.results.Metric` as the checks write it):

* ``gap_fraction[train]``, ``gap_fraction[heldout]``: ``amortization_gap``'s;
* ``shift_displacement``, ``rotation_displacement``: the governing ``displacement`` of
  ``shift_invariance`` and ``rotation_invariance``;
* ``<measure>[train]``, ``<measure>[heldout]`` (``r2_linear``, ``ami``): the truth recovery of
  ``heldout_generalisation``, where the data carry ground truth;
* ``recon[train]``, ``recon[heldout]`` and ``loss_ratio``: the mean reconstruction loss at
  the encoder's means on ``n_loss`` images of each side, and held-out over training (one
  resampling of both sides, as ``amortization_gap`` shares its resamples);
* ``latent_movement[train]``, ``latent_movement[heldout]``: the median distance the means of
  the same ``n_eval`` images moved since the previous measured epoch, over the median distance
  between two images' means now (cryoDRGN's ``analyze_convergence`` measure, for both sides;
  absent at the first epoch measured);
* ``volume_auc_fsc[train]``, ``volume_auc_fsc[heldout]``: the mean AUC-FSC of the volumes
  decoded at ``n_volumes`` images' means against the ground-truth map nearest each image's
  conformation (:func:`~ampcheck.checks.fits.volume_agreement`), where the data have maps.

An epoch whose weights cannot be read (a truncated file) is skipped and listed with the
reason; the others are still measured. The recommended epoch is
:func:`ampcheck.epochs.recommend_epoch`'s.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ..budgets import DEFAULT_BUDGET
from ..contracts import data_capabilities
from ..epochs import EpochComparison, compare_epochs, over_epochs_document, recommend_epoch
from ..errors import InputError, first_line
from ..results import CheckResult, Metric
from ._common import Settings, boot, displacement_stat, sample
from .fits import volume_agreement

__all__ = ["EPOCH_CHECKS", "EpochProfile", "check_epochs", "epoch_checks", "measure_epochs",
           "preload"]

logger = logging.getLogger(__name__)

#: The single-epoch checks measured at every epoch (the others retrain, or need no epochs).
EPOCH_CHECKS = ("amortization_gap", "heldout_generalisation", "shift_invariance",
                "rotation_invariance")


@dataclass
class EpochProfile:
    """The measured epochs, in order: ``epochs`` ``[(epoch, metrics, info)]`` (``info``:
    each check's verdict and flags), the epochs ``skipped`` with why, the recommendation and
    its reason, and ``last``: the check results of the last epoch measured (what a report
    shows as its checks)."""

    epochs: list[tuple[int, dict[str, Metric], dict[str, Any]]] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)
    recommended_epoch: int | None = None
    reason: str = ""
    last: list[CheckResult] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)

    def metric(self, name: str, epoch: int) -> Metric:
        """The metric ``name`` at ``epoch``; a KeyError naming what was measured otherwise
        (and why, for an epoch that was skipped)."""
        for e, m, _ in self.epochs:
            if e == epoch:
                if name not in m:
                    raise KeyError(f"{name!r} not measured at epoch {epoch}; measured: "
                                   f"{', '.join(m)}")
                return m[name]
        why = f" (skipped: {self.skipped[epoch]})" if epoch in self.skipped else ""
        raise KeyError(f"epoch {epoch} not measured{why}; measured: "
                       f"{', '.join(str(e) for e, _, _ in self.epochs)}")

    def no_worse(self, name: str, *, than_epoch: int, at_epoch: int | None = None
                 ) -> EpochComparison:
        """Whether metric ``name`` at ``at_epoch`` (default: the last measured) is no worse
        than at ``than_epoch``: worse only with intervals apart, in the metric's direction,
        as the recommended epoch's rule decides it (:func:`ampcheck.epochs.compare_epochs`).
        The answer is true or false and says both values, so that a CI regression check is
        one line: ``assert profile.no_worse("gap_fraction[heldout]", than_epoch=4)``."""
        at = self.epochs[-1][0] if at_epoch is None else int(at_epoch)
        return compare_epochs(name, (at, self.metric(name, at)),
                              (int(than_epoch), self.metric(name, than_epoch)))

    def to_dict(self) -> dict[str, Any]:
        """The ``over_epochs`` block of ``report.json``
        (:func:`ampcheck.epochs.over_epochs_document`)."""
        return over_epochs_document(self.epochs, self.recommended_epoch, self.reason,
                                    skipped=self.skipped, extra={"sizes": self.sizes})


def _from_checks(results: Sequence[CheckResult]) -> tuple[dict[str, Metric], dict[str, Any]]:
    """The per-epoch metrics the checks measured, under the module's names, and each check's
    verdict and flags."""
    out: dict[str, Metric] = {}
    info = {"verdicts": {r.check: r.verdict for r in results},
            "flags": {r.check: list(r.flags) for r in results if r.flags}}
    for r in results:
        if r.skip:
            continue
        m = r.metrics
        if r.check == "amortization_gap":
            out.update({k: m[k] for k in ("gap_fraction[train]", "gap_fraction[heldout]")
                        if k in m})
        elif r.check in ("shift_invariance", "rotation_invariance"):
            out[f"{r.check.split('_')[0]}_displacement"] = m["displacement"]
        elif r.check == "heldout_generalisation":
            kind = r.details.get("measure")
            out.update({k: m[k] for k in (f"{kind}[train]", f"{kind}[heldout]") if k in m})
    return out, info


def _movement(now: np.ndarray, before: np.ndarray, settings: Settings, seed: int) -> Metric:
    """How far the means ``now`` moved from ``before`` (same images, row by row), over the
    spread of ``now`` (:func:`ampcheck.metrics.displacement`), with its interval (resampled
    numerator, fixed denominator, as the invariance checks resample theirs)."""
    iv = boot(displacement_stat(now, before, seed), len(now), settings, seed)
    return Metric(iv.value, False, iv.lo, iv.hi)


def _losses(model, train, heldout, settings: Settings, seed: int) -> dict[str, Metric]:
    """``recon[train]``, ``recon[heldout]`` and ``loss_ratio`` (see the module docstring)."""
    n = min(settings.n_loss, len(train), len(heldout))
    out, per = {}, {}
    for side, data in (("train", train), ("heldout", heldout)):
        idx = sample(len(data), n, seed)
        mu, _ = model.encode(data, idx)
        per[side] = np.asarray(model.recon_loss(data, idx, mu), dtype=float)
        iv = boot(lambda b, x=per[side]: float(x[b].mean()), n, settings, seed)
        out[f"recon[{side}]"] = Metric(iv.value, False, iv.lo, iv.hi)

    def ratio(b: np.ndarray) -> float:
        d = per["train"][b].mean()
        return float(per["heldout"][b].mean() / d) if d > 0 else float("nan")

    iv = boot(ratio, n, settings, seed)
    out["loss_ratio"] = Metric(iv.value, False, iv.lo, iv.hi)
    return out


def measure_epochs(epochs: Sequence[int], load: Callable[[int], Any],
                   check: Callable[[Any], list[CheckResult]], *, data, train, heldout,
                   settings: Settings, seed: int = 0,
                   checkable: Callable[[Any], Any] | None = None,
                   on_epoch: Callable[[int, Mapping[str, Metric]], None] | None = None,
                   processes: int = 1) -> EpochProfile:
    """Measure each of ``epochs`` (see the module docstring) and recommend one.

    Args:
        load: the weights of an epoch as a model the checks call
            (:class:`~ampcheck.contracts.CheckableModel`); an :class:`InputError` from it
            skips that epoch, named with its reason.
        check: the single-epoch checks on a loaded model (a subset of :data:`EPOCH_CHECKS`).
        checkable: what the measures beside the checks call a loaded model through (a
            :class:`~ampcheck.checks.ProtocolModel` for a VAE; default: the model itself, as
            for a ``TrainedModel``).
        data, train, heldout: the whole data set and its training and held-out views (the
            run's own split).
        settings: the evaluation sizes (:class:`~ampcheck.checks.Settings`); seed: the
            samples' and resamples' seed, the one the checks use.
        on_epoch: called with each epoch's metrics once measured (progress).
        processes: epochs measured side by side in forked processes of one torch thread
            each (CPU models only; each epoch is independent, so the numbers are the same).
    """
    global _JOB
    profile = EpochProfile(sizes={"n_eval": settings.n_eval, "n_loss": settings.n_loss,
                                  "n_gap": settings.n_gap, "gap_steps": settings.gap_steps,
                                  "n_volumes": settings.n_volumes, "n_boot": settings.n_boot})
    _JOB = (load, check, checkable, data, train, heldout, settings, seed)
    try:
        n = min(int(processes), len(epochs))
        if n > 1 and "fork" in multiprocessing.get_all_start_methods():
            with multiprocessing.get_context("fork").Pool(n, _one_thread) as pool:
                measured = _collect(pool.imap(_measure_one, epochs), on_epoch)
        else:
            measured = _collect(map(_measure_one, epochs), on_epoch)
    finally:
        _JOB = None
    before, flags_of = None, {}
    for epoch, got in measured:
        if isinstance(got, str):
            profile.skipped[epoch] = got
            logger.warning("ampcheck: epoch %d skipped: %s", epoch, got)
            continue
        metrics, info, results, now = got
        if before is not None:  # how far the same images' means moved since the last epoch
            for k in now:
                metrics[f"latent_movement[{k}]"] = _movement(now[k], before[k], settings, seed)
        before = now
        flags_of[epoch] = info["flags"].get("amortization_gap", [])
        profile.epochs.append((epoch, metrics, info))
        profile.last = results
    if not profile.epochs:
        raise _none_readable(profile.skipped)
    profile.recommended_epoch, profile.reason = recommend_epoch(
        [(e, m, flags_of[e]) for e, m, _ in profile.epochs])
    return profile


#: The measurement in progress (:func:`measure_epochs`), which forked workers inherit.
_JOB: tuple | None = None


def _none_readable(skipped: Mapping[int, str]) -> InputError:
    listed = "; ".join(f"epoch {e}: {r}" for e, r in skipped.items())
    return InputError(f"no epoch could be measured, none could be read ({listed})")


def preload(epochs: Sequence[int], load: Callable[[int], Any]
            ) -> tuple[int, Any, Callable[[int], Any]]:
    """``(epoch, model, load_once)``: the first of ``epochs`` (in the order given) whose
    model ``load`` reads, that model, and a ``load`` for :func:`measure_epochs` that hands
    that model back once, and raises again, without reading it again, the
    :class:`InputError` of each epoch tried before it (so that it is skipped and listed like
    any other). What needs a model before measuring (the views, the data set) takes the
    first readable one; none readable is one InputError line listing each epoch's reason."""
    failed: dict[int, InputError] = {}
    held: dict[int, Any] = {}
    for epoch in epochs:
        try:
            held[epoch] = load(epoch)
            break
        except InputError as err:
            failed[epoch] = err
    if not held:
        raise _none_readable({e: first_line(err) for e, err in sorted(failed.items())})
    (epoch, model), = held.items()

    def load_once(e: int):
        if e in failed:
            raise failed[e]
        return held.pop(e) if e in held else load(e)

    return epoch, model, load_once


def _one_thread() -> None:
    torch.set_num_threads(1)


def _collect(results, on_epoch) -> list:
    out = []
    for epoch, got in results:
        if on_epoch is not None and not isinstance(got, str):
            on_epoch(epoch, got[0])
        out.append((epoch, got))
    return out


def _measure_one(epoch: int):
    """``(epoch, (metrics, info, results, means))`` of one epoch of :data:`_JOB`, or
    ``(epoch, reason)`` when its weights cannot be read."""
    load, check, checkable, data, train, heldout, settings, seed = _JOB
    try:
        model = load(epoch)
    except InputError as err:
        return int(epoch), first_line(err)
    results = check(model)
    model = model if checkable is None else checkable(model)
    metrics, info = _from_checks(results)
    metrics.update(_losses(model, train, heldout, settings, seed))
    views = {"train": train, "heldout": heldout}
    idx = {k: sample(len(v), settings.n_eval, seed) for k, v in views.items()}
    now = {k: model.encode(v, idx[k])[0] for k, v in views.items()}
    if data_capabilities(data).truth_volumes and model.capabilities.decode_volume:
        for k, v in views.items():
            subject = SimpleNamespace(train=v, data=data, capabilities=data_capabilities(data))
            auc, _ = volume_agreement({"m": model}, {"m": now[k]}, subject, idx[k],
                                      settings.n_volumes, seed)
            if auc:
                metrics[f"volume_auc_fsc[{k}]"] = Metric(auc["m"], True)
    return int(epoch), (metrics, info, results, now)


def epoch_checks(checks: Sequence[str] | None, truth: bool) -> list[str]:
    """The single-epoch checks to run at every epoch: ``checks`` (default
    :data:`EPOCH_CHECKS`, ``heldout_generalisation`` only with ground ``truth``); a check
    that retrains, or the MNIST control, is refused (it does not change with the epoch of
    the weights, or would train a model per epoch)."""
    from ..errors import ConfigError

    if checks is None:
        return [c for c in EPOCH_CHECKS if truth or c != "heldout_generalisation"]
    other = [c for c in checks if c not in EPOCH_CHECKS]
    if other:
        raise ConfigError(f"{', '.join(other)} cannot be measured over epochs (it retrains the "
                          f"model, or needs no epoch); over epochs: {', '.join(EPOCH_CHECKS)}")
    return list(checks)


def check_epochs(models, data=None, *, train_indices=None, epochs=None,
                 checks: Sequence[str] | None = None, budget: str | None = None,
                 thresholds: Mapping[str, float] | None = None, seed: int | None = None,
                 name: str | None = None, device: str = "auto",
                 processes: int = 1) -> EpochProfile:
    """The profile over epochs of a model given epoch by epoch (``check_vae`` for several
    epochs: a CI regression test can then assert "the held-out gap at the final epoch is no
    worse than at epoch K" with :meth:`EpochProfile.no_worse`).

    Args:
        models: one of

            * ``{epoch: model}``, each a trained :class:`~ampcheck.contracts.VAE` (or a
              ``TrainedModel``), a callable ``() -> VAE`` that loads it, or the path of an
              ``ampcheck train`` checkpoint (``checkpoint.N.pt``, read on ``data``'s images
              at ``train_indices``, those it trained on);
            * a callable ``epoch -> VAE`` with ``epochs``;
            * a directory of numbered checkpoints (``ampcheck train --checkpoint-every N``,
              or ``ampcheck.train.train(..., out=DIR, checkpoint_every=N)``): with ``data``
              and ``train_indices``, its files are read as the paths above; without them it
              is a run directory of ``ampcheck train``, measured on its own data, split,
              budget and seed, as ``ampcheck check --run RUN --epoch`` measures it
              (:func:`ampcheck.epoch_check.check_run_epochs`).

            Each is loaded once, when measured, in epoch order; one whose loading raises an
            :class:`~ampcheck.errors.InputError` (a truncated file) is skipped and listed in
            ``skipped``, and the others are still measured.
        data, train_indices: the whole data set and the positions in it of the images the
            model trained on (the others are held out; required but for a run directory).
        epochs: which epochs (default: every one given or saved); for a directory also the
            text of ``--epoch`` (``"all"``, ``"2,4,8"``, ``"2:12:2"``).
        checks: a subset of :data:`EPOCH_CHECKS` (default: those that apply).
        budget, seed: whose per-epoch sizes measure each epoch (``Budget.per_epoch``;
            default ``standard``) and the samples' seed (default 0); a run directory's are
            its own.
        device: where checkpoint files are loaded (``auto``: where they trained).
        processes: epochs measured side by side (:func:`measure_epochs`).
    """
    import os
    from pathlib import Path

    from ..checkpoints import epoch_checkpoints
    from ..epoch_check import checkpoint_loader
    from ..errors import ConfigError
    from ..thresholds import resolve_thresholds
    from . import check_vae, settings_for, usable_truth
    from .subject import ProtocolModel, split_by_indices

    if isinstance(models, str | os.PathLike):
        folder, selection = Path(models), _selection(epochs)
        if data is None and train_indices is None:
            if budget is not None or seed is not None:
                raise ConfigError(f"{folder}: a run directory is measured at its own budget "
                                  "and seed (its run.json); give data= and train_indices= "
                                  "to measure its checkpoints otherwise")
            from ..epoch_check import check_run_epochs

            return check_run_epochs(folder, selection, checks=checks, thresholds=thresholds,
                                    device=device, processes=processes)[0]
        if not folder.is_dir():
            raise InputError(f"{folder}: no such directory; expected one that holds numbered "
                             "checkpoints (checkpoint.N.pt)")
        saved = epoch_checkpoints(folder)
        models, epochs = {e: saved[e] for e in selection.select(saved, str(folder))}, None
    if isinstance(models, Mapping):
        table = dict(models)
        if isinstance(epochs, str):  # --epoch's text, against the epochs given
            epochs = _selection(epochs).select(table, "the models given")
        chosen = sorted(table if epochs is None else set(epochs))  # in training order
        missing = [e for e in chosen if e not in table]
        if missing:
            raise ConfigError(f"no model for epoch(s) {', '.join(map(str, missing))}; given: "
                              f"{', '.join(map(str, sorted(table)))}")
        files = {e: m for e, m in table.items() if isinstance(m, str | os.PathLike)}

        def get(epoch: int):
            m = table[epoch]
            if epoch in files:
                return checkpoint_loader(files, views[0], None if device == "auto"
                                         else device)(epoch)
            return m() if callable(m) and not hasattr(m, "encode") else m
    elif isinstance(epochs, str):
        raise ConfigError(f"epochs={epochs!r}: --epoch's text chooses among epochs given or "
                          "saved; with a callable epoch -> model, list the epochs")
    elif callable(models) and epochs is not None:
        chosen, get = sorted(set(epochs)), models
    else:
        raise ConfigError("models must be {epoch: model or checkpoint path}, a callable "
                          "epoch -> model with epochs=[...], or a directory of checkpoints")
    if train_indices is None or data is None or not len(chosen):
        raise ConfigError("check_epochs needs data and train_indices (the others are the "
                          "held-out images it compares with) and at least one epoch")
    views = split_by_indices(data, train_indices)
    if views[1] is None:
        raise ConfigError("train_indices names every image: none is held out")
    seed = 0 if seed is None else int(seed)
    names = epoch_checks(checks, bool(usable_truth(data.truth)))
    settings = settings_for(budget or DEFAULT_BUDGET, resolve_thresholds(thresholds),
                            per_epoch=True)

    def check(model):
        return check_vae(model, data, checks=names, train_indices=train_indices, seeds=[seed],
                         settings=settings, name=name)

    def checkable(model):
        return model if hasattr(model, "recon_closure") else ProtocolModel(model)

    return measure_epochs(chosen, get, check, data=data, train=views[0], heldout=views[1],
                          settings=settings, seed=seed, checkable=checkable,
                          processes=processes)


def _selection(epochs):
    """The :class:`~ampcheck.epochs.EpochSelection` of ``check_epochs``'s ``epochs`` for a
    directory: None (all), the text of ``--epoch``, or a sequence of epochs."""
    from ..epochs import EpochSelection, parse_epochs

    if epochs is None:
        return parse_epochs("all")
    if isinstance(epochs, str):
        return parse_epochs(epochs)
    listed = tuple(int(e) for e in epochs)
    return EpochSelection(",".join(map(str, listed)), listed=listed)
