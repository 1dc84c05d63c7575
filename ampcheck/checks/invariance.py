"""shift_invariance and rotation_invariance (SPEC §4; the paper's §3.4, Figs 10-11).

For each transform ``T`` of the check, on a sample of training images: the encoder's means
``mu(x_i)`` and ``mu(T x_i)`` (each image keeps its own pose and CTF), then

* ``displacement``: ``median_i |mu(T x_i) - mu(x_i)| / median_{i != j} |mu(x_i) - mu(x_j)|``
  (0: invariant; about 1: as far as a random other image) under the check's *first*
  transform, which governs: the paper's probe, a 1-px shift, a 90° rotation (or the first of
  the transforms given as the option ``shift_transforms`` / ``rotation_transforms``);
* ``displacement[T]``: the same under each *other* transform ``T`` (a 5-px shift on MNIST),
  context with its own interval; the governing transform's is ``displacement`` alone, so a
  drift is one metric. A verdict governed by the worst transform would answer another
  question than the paper's;
* ``retrieval@k``: the share of ``T x_i`` whose nearest latents include ``x_i``'s own
  (``k = 1, 10``; chance ``k / n``);
* for cryo-EM models that decode volumes, ``volume_displacement``: the mean ``1 - AUC-FSC``
  between the volumes decoded at ``mu(x_i)`` and ``mu(T x_i)``, over the same between
  ``mu(x_i)`` and another image's ``mu(x_j)`` (0: the same volume; about 1: as different as
  two random images' volumes), on ``settings.n_volumes`` images; the central sections of
  those volumes under the governing transform are kept for the report (``slices[image]``,
  ``slices[moved]``).

A PASS counts only when the latents are informative (see ``thresholds.py``): a collapsed
encoder is perfectly invariant and would otherwise pass. Three guards, each of which turns a
PASS into WARN: the spread of the means over the posterior width (``informative_spread``,
scale-free: a constant encoder, or means that are tiny noise beside their width, sit near 0),
with ground truth its recovery (``informative_recovery``), and without any truth the model's
own decoder: ``latent_use``, the mean loss its decoder adds when an image gets another
image's latent, must be measurably above 0 (flag ``no_fit``). Latents that the decoder
ignores carry nothing the model learned, however spread they are (means that are tiny noise
with tinier widths pass the spread floor).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .. import metrics as M
from ..data.transforms import Transform, parse_transform
from ..data.twins import derangement
from ..display import FigureSpec
from ..errors import ConfigError
from ..results import CheckResult
from ._common import (
    Settings,
    boot,
    central_slices,
    decoder_use,
    displacement_stat,
    encoded,
    floors_missed,
    informativeness,
    least_informative,
    mean_of,
    plain,
    pooled,
    sample,
    truth_of,
    unused,
    verdict_with_guard,
)
from .subject import Subject

SHIFTS = {"cryoem": ("roll:1",), "mnist": ("roll:1", "roll:5")}  # the paper's probes
ROTATIONS = ("rot90:1",)


def _transforms(subject: Subject, kind: str) -> tuple[Transform, ...]:
    given = subject.options.get(f"{kind}_transforms")
    if given is None:
        given = SHIFTS.get(subject.data_kind, SHIFTS["cryoem"]) if kind == "shift" else ROTATIONS
    if isinstance(given, str) or not given:
        raise ConfigError(f"the option {kind}_transforms must be a non-empty list of transforms "
                          f"such as ['roll:1'], got {given!r} (the first one governs)")
    return tuple(parse_transform(t) for t in given)


def _volume_displacement(model, mu: np.ndarray, moved: np.ndarray, n: int, seed: int):
    """``(volume_displacement, slices)`` (see the module docstring) on ``n`` images, with the
    central sections ``(n, 3, D, D)`` of the volumes decoded at ``mu`` (``slices[image]``) and
    at ``moved`` (``slices[moved]``); ``(None, {})`` when the model declares no volumes (its
    ``capabilities``, :mod:`ampcheck.contracts`)."""
    if n < 2 or not model.capabilities.decode_volume:
        return None, {}
    pick = sample(len(mu), n, seed + 7)
    partner = pick[derangement(len(pick), seed)]
    vol = {int(i): model.decode_volume(mu[i]) for i in pick}
    vol_moved = {int(i): model.decode_volume(moved[i]) for i in pick}

    def loss(a, b) -> float:
        return 1.0 - M.auc_fsc(M.fsc(a, b))

    same = np.mean([loss(vol[int(i)], vol_moved[int(i)]) for i in pick])
    other = np.mean([loss(vol[int(i)], vol[int(j)]) for i, j in zip(pick, partner, strict=True)])
    slices = {f"slices[{k}]": np.stack([central_slices(v[int(i)]) for i in pick])
              for k, v in (("image", vol), ("moved", vol_moved))}
    return (float(same / other) if other > 0 else float("nan")), slices


def _invariance(name: str, kind: str, subject: Subject, settings: Settings) -> CheckResult:
    transforms = _transforms(subject, kind)
    threshold = settings.thresholds[name]
    info, uses = [], []
    per_t = {t.name: {"d": [], "r1": [], "r10": [], "vol": []} for t in transforms}
    arrays: dict[str, np.ndarray] = {}
    for seed in subject.seeds:
        model = subject.model(seed)
        idx = sample(len(subject.train), settings.n_eval, seed)
        mu, logvar = encoded(subject, seed, idx)
        moved = {t.name: model.encode(subject.train, idx, transform=t)[0] for t in transforms}
        truth = truth_of(subject.train, idx)
        info.append(informativeness(mu, logvar, truth, seed))
        use = subject.memo(("latent_use", seed, tuple(idx)),  # the same in both checks
                           partial(decoder_use, model, subject.train, idx, mu, seed))
        uses.append(boot(mean_of(use), len(idx), settings, seed))
        if not arrays:  # what the report draws: each image joined to its transformed copy
            arrays = {"mu": mu, **{f"moved[{t}]": m for t, m in moved.items()},
                      **{f"truth[{k}]": v for k, v in truth.items()}}
        for t, m in moved.items():
            per_t[t]["d"].append(boot(displacement_stat(mu, m, seed), len(idx), settings,
                                      seed))
            per_t[t]["r1"].append(M.retrieval_at_k(mu, m, 1))
            per_t[t]["r10"].append(M.retrieval_at_k(mu, m, min(10, len(idx) - 1)))
            vd, slices = _volume_displacement(model, mu, m, settings.n_volumes, seed)
            if vd is not None:
                per_t[t]["vol"].append(vd)
            if slices and t == transforms[0].name and "slices[image]" not in arrays:
                arrays.update(slices)  # the report draws the governing transform's volumes

    governs = transforms[0].name
    metrics = {"displacement": pooled(per_t[governs]["d"], False, settings)}
    for t, v in per_t.items():
        if t != governs:
            metrics[f"displacement[{t}]"] = pooled(v["d"], False, settings)
        metrics[f"retrieval@1[{t}]"] = plain(v["r1"], True)
        metrics[f"retrieval@10[{t}]"] = plain(v["r10"], True)
        if v["vol"]:
            metrics[f"volume_displacement[{t}]"] = plain(v["vol"], False)
    for k in least_informative(info):  # the measures every seed has
        metrics[k] = plain([i[k] for i in info], True)
    metrics["latent_use"] = pooled(uses, True, settings)
    missed = floors_missed(least_informative(info), settings)
    verdict, flags = verdict_with_guard(metrics["displacement"], threshold, bool(missed))
    if unused(metrics["latent_use"]):
        flags.append("no_fit")
        verdict = "WARN" if verdict == "PASS" else verdict
    d = metrics["displacement"].value
    what = "shifted" if kind == "shift" else "rotated"
    if verdict == "FAIL":
        text = (f"{what} images ({governs}) move {d:.2f} of the typical inter-image distance "
                "in latent space: the encoder is not invariant")
    elif "no_fit" in flags:
        text = (f"displacement {d:.2g}, but the decoder makes no measurable use of the latents "
                f"(latent use {metrics['latent_use'].value:.2g}, interval reaching 0) for "
                "invariance to mean anything")
    elif "uninformative" in flags:
        text = (f"displacement {d:.2g}, but the latents carry too little information "
                f"({', '.join(missed)} below floor) for invariance to mean anything")
    elif verdict == "PASS":
        text = f"{what} images ({governs}) stay put in latent space (displacement {d:.2g})"
    else:
        text = f"displacement {d:.2g} is within its uncertainty of the threshold"
    return CheckResult(name, subject.name, verdict, metrics, threshold, text, tuple(flags),
                       subject.seeds, {"transforms": [t.name for t in transforms],
                                       "governing_transform": governs,
                                       "n_images": int(min(len(subject.train),
                                                           settings.n_eval))}, arrays)


def shift_invariance(subject: Subject, settings: Settings) -> CheckResult:
    """Is the encoder invariant to circular shifts of its input? Governed by the 1-px shift;
    on MNIST the 5-px shift is reported beside it."""
    return _invariance("shift_invariance", "shift", subject, settings)


def rotation_invariance(subject: Subject, settings: Settings) -> CheckResult:
    """Is the encoder invariant to 90° rotations of its input?"""
    return _invariance("rotation_invariance", "rotation", subject, settings)


#: What the report draws of an invariance check (the arrays it keeps): each image's latent
#: joined to its transformed copies' (the paper's Figs 10-11), and the volumes decoded at an
#: image's latent and at its copy's.
INVARIANCE_FIGURES = (
    FigureSpec("pairs", ("mu", "moved[*]"), metrics=("displacement",),
               caption="{embedding} ({n} images); a thin line joins each image to its "
                       "transformed copy. Short lines mean an invariant encoder."),
    FigureSpec("slices", ("slices[image]", "slices[moved]"), ("at μ(x)", "at μ(T x)"),
               caption="Central sections of the volumes decoded at each image's latent μ(x) "
                       "and at its transformed copy's μ(T x) (T: the check's governing "
                       "transform): an invariant encoder gives the same volume twice. Each "
                       "volume is scaled to its own 1-99.5 percentile range."),
)
