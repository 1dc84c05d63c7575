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

from ..contracts import data_capabilities
from ..epochs import over_epochs_document, recommend_epoch
from ..errors import InputError, first_line
from ..results import CheckResult, Metric
from ._common import Settings, boot, displacement_stat, sample
from .fits import volume_agreement

__all__ = ["EPOCH_CHECKS", "EpochProfile", "check_epochs", "epoch_checks", "measure_epochs"]

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
        """The metric ``name`` at ``epoch``; a KeyError naming what was measured otherwise."""
        for e, m, _ in self.epochs:
            if e == epoch:
                if name not in m:
                    raise KeyError(f"{name!r} not measured at epoch {epoch}; measured: "
                                   f"{', '.join(m)}")
                return m[name]
        raise KeyError(f"epoch {epoch} not measured; measured: "
                       f"{', '.join(str(e) for e, _, _ in self.epochs)}")

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
        listed = "; ".join(f"epoch {e}: {r}" for e, r in profile.skipped.items())
        raise InputError(f"no epoch could be measured ({listed})")
    profile.recommended_epoch, profile.reason = recommend_epoch(
        [(e, m, flags_of[e]) for e, m, _ in profile.epochs])
    return profile


#: The measurement in progress (:func:`measure_epochs`), which forked workers inherit.
_JOB: tuple | None = None


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


def check_epochs(models, data, *, train_indices, epochs: Sequence[int] | None = None,
                 checks: Sequence[str] | None = None, budget: str = "standard",
                 thresholds: Mapping[str, float] | None = None, seed: int = 0,
                 name: str | None = None, processes: int = 1) -> EpochProfile:
    """The profile over epochs of a model given epoch by epoch (``check_vae`` for several
    epochs: a CI regression test can then assert "the held-out gap at the final epoch is no
    worse than at epoch K" with :meth:`EpochProfile.metric`).

    Args:
        models: ``{epoch: model}``, each a trained :class:`~ampcheck.contracts.VAE` (or a
            ``TrainedModel``, or a callable ``() -> VAE`` that loads it when measured), or a
            callable ``epoch -> VAE`` with ``epochs``.
        data, train_indices: the whole data set and the positions in it of the images the
            model trained on (the others are held out; required).
        checks: a subset of :data:`EPOCH_CHECKS` (default: those that apply).
        budget: whose per-epoch sizes measure each epoch (``Budget.per_epoch``).
    """
    from ..errors import ConfigError
    from ..thresholds import resolve_thresholds
    from . import check_vae, settings_for, usable_truth
    from .subject import ProtocolModel, subject_from

    if isinstance(models, Mapping):
        table = dict(models)
        chosen = sorted(table if epochs is None else set(epochs))  # in training order
        missing = [e for e in chosen if e not in table]
        if missing:
            raise ConfigError(f"no model for epoch(s) {', '.join(map(str, missing))}; given: "
                              f"{', '.join(map(str, sorted(table)))}")

        def get(epoch: int):
            m = table[epoch]
            return m() if callable(m) and not hasattr(m, "encode") else m
    elif callable(models) and epochs is not None:
        chosen, get = sorted(set(epochs)), models
    else:
        raise ConfigError("models must be {epoch: model} or a callable epoch -> model with "
                          "epochs=[...]")
    if train_indices is None or not len(chosen):
        raise ConfigError("check_epochs needs train_indices (the others are the held-out "
                          "images it compares with) and at least one epoch")
    names = epoch_checks(checks, bool(usable_truth(data.truth)))
    settings = settings_for(budget, resolve_thresholds(thresholds), per_epoch=True)
    first = get(chosen[0])
    views = subject_from(first, data, train_indices=train_indices, seeds=[seed])
    if views.heldout is None:
        raise ConfigError("train_indices names every image: none is held out")
    cached = {chosen[0]: first}

    def load(epoch: int):
        return cached.pop(epoch) if epoch in cached else get(epoch)

    def check(model):
        return check_vae(model, data, checks=names, train_indices=train_indices, seeds=[seed],
                         settings=settings, name=name)

    def checkable(model):
        return model if hasattr(model, "recon_closure") else ProtocolModel(model)

    return measure_epochs(chosen, load, check, data=data, train=views.train,
                          heldout=views.heldout, settings=settings, seed=seed,
                          checkable=checkable, processes=processes)
