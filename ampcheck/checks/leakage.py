"""pose_leakage: how much of the latent space the nuisance variables already explain.

A cryo-EM decoder is given each image's pose and CTF; the latent should carry what they do
not, the conformation. On a sample of training images (the invariance checks' sample), the
encoder's means ``mu (n, d)`` are predicted from each nuisance variable's features
(:mod:`ampcheck.cryoem.nuisance`: the in-plane angle on the circle, the viewing direction on
the sphere, the shifts, the defocus) and from all of them jointly, out of fold (5-fold
cross-validation, linear (a light ridge on standardised features) and 10-nearest-neighbour
regression, as ``heldout_generalisation`` predicts the truth; at least :data:`MIN_IMAGES`
images). With per-image squared errors ``e_i = |mu_i - pred_i|²`` and totals
``s_i = |mu_i - mean(mu)|²``, one method's

    leakage = (mean_i e_null,i - mean_i e_i) / mean_i s_i

is the share of the latents' variance that the variable predicts beyond chance: ``e_null``
is the mean error over :data:`N_PERMUTATIONS` fits on features permuted across images (the
permutation null), so chance is 0 and 1 is latents that are a function of the pose. A
variable's leakage is the larger of its linear and k-NN values; ``leakage`` (all variables
jointly) governs. Intervals: half-sampling bootstrap over images of the per-image errors.

**Truth.** A data set whose states prefer some views has a genuine conformation-pose
correlation, and latents that recover the conformation inherit it. Where a usable ground
truth exists, the latents are first freed of what the truth explains (out-of-fold 10-NN
regression of ``mu`` on the truth), and the residuals are predicted from the nuisance
variables (the share still relative to the latents' whole variance); the unconditioned value
is kept as ``leakage[raw]``. Without truth the check measures the raw value: on real data it
cannot tell leakage from a true preference of states for views, and says so.

A PASS counts only when the latents are informative (the invariance checks' floors): a
collapsed encoder predicts nothing and leaks nothing.
"""

from __future__ import annotations

import numpy as np

from ..cryoem.nuisance import VARIABLES, Features, nuisance_features
from ..display import FigureSpec
from ..results import CheckResult
from ._common import (
    Settings,
    boot,
    encoded,
    floors_missed,
    informativeness,
    least_informative,
    percent,
    plain,
    pooled,
    sample,
    truth_of,
    usable_truth,
    verdict_with_guard,
)
from .subject import Subject

N_PERMUTATIONS = 5
RIDGE = 1.0
MIN_IMAGES = 100  # fewer, and two dozen features over five folds fit mostly noise
K_NEIGHBOURS = 10
FOLDS = 5
METHODS = ("linear", "knn")


def folds(n: int, seed: int) -> list[np.ndarray]:
    """:data:`FOLDS` disjoint test folds covering ``range(n)``, seeded."""
    return np.array_split(np.random.default_rng([seed, 17]).permutation(n), FOLDS)


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m, s = train.mean(axis=0), train.std(axis=0)
    s = np.where(s > 0, s, 1.0)
    return (train - m) / s, (test - m) / s


def oof(x: np.ndarray, y: np.ndarray, method: str, seed: int) -> np.ndarray:
    """Out-of-fold predictions ``(n, d)`` of ``y (n, d)`` from features ``x (n, k)``, over
    :func:`folds`: ``linear`` a ridge regression (``alpha = 1``) on features standardised on
    the training folds, ``knn`` the mean of the :data:`K_NEIGHBOURS` nearest training images in
    those features (what scikit-learn's ``Ridge`` and ``KNeighborsRegressor`` give, without
    their per-fit overhead: a check makes some 150 fits)."""
    n = len(y)
    pred = np.empty_like(y, dtype=np.float64)
    for test in folds(n, seed):
        train = np.setdiff1d(np.arange(n), test)
        xa, xb = _standardise(x[train].astype(np.float64), x[test].astype(np.float64))
        ya = y[train].astype(np.float64)
        if method == "linear":
            ym = ya.mean(axis=0)
            beta = np.linalg.solve(xa.T @ xa + RIDGE * np.eye(xa.shape[1]), xa.T @ (ya - ym))
            pred[test] = xb @ beta + ym
        else:
            k = min(K_NEIGHBOURS, len(train))
            dist = ((xb[:, None, :] - xa[None, :, :]) ** 2).sum(axis=2)
            near = np.argpartition(dist, k - 1, axis=1)[:, :k]
            pred[test] = ya[near].mean(axis=1)
    return pred


def _errors(x: np.ndarray, y: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, ...]:
    """Per-image squared errors ``(n,)`` of the fit on ``x`` and the mean over the
    permutation null's fits."""
    e = ((y - oof(x, y, method, seed)) ** 2).sum(axis=1)
    rng = np.random.default_rng([seed, 99])
    null = np.mean([((y - oof(x[rng.permutation(len(x))], y, method, seed)) ** 2).sum(axis=1)
                    for _ in range(N_PERMUTATIONS)], axis=0)
    return e, null


def residual_latents(mu: np.ndarray, truth: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """``mu`` minus its out-of-fold 10-NN prediction from the usable truth (``z_continuous``
    and the ``z_class`` as one-hot columns): what the truth does not explain."""
    cols = []
    for key in usable_truth(truth):
        v = np.asarray(truth[key], dtype=float)
        cols.append(v[:, None] if key == "z_continuous"
                    else (v[:, None] == np.unique(v)[None, :]).astype(float))
    return mu - oof(np.concatenate(cols, axis=1), mu, "knn", seed)


def leakage_stats(y: np.ndarray, total: np.ndarray, feats: dict[str, Features], seed: int):
    """``{name: stat}``: each feature set's leakage as a statistic of a resample ``b`` of the
    images (the larger of the methods'), for :func:`~ampcheck.checks._common.boot`.
    ``y``: what is predicted (the latents, or their residuals); ``total (n,)``: the latents'
    per-image squared distance to their mean."""
    out = {}
    for name, f in feats.items():
        per = [_errors(f.linear if m == "linear" else f.knn, y, m, seed) for m in METHODS]

        def stat(b: np.ndarray, per=per) -> float:
            s = total[b].sum()
            if not s > 0:
                return float("nan")
            return float(max((null[b].sum() - e[b].sum()) / s for e, null in per))
        out[name] = stat
    return out


def pose_leakage(subject: Subject, settings: Settings) -> CheckResult:
    """Can the nuisance variables the decoder is given predict the latents?"""
    threshold = settings.thresholds["pose_leakage"]
    per_var: dict[str, list] = {}
    raw, info, arrays, reasons = [], [], {}, {}
    conditioned = False
    for seed in subject.seeds:
        idx = sample(len(subject.train), settings.n_eval, seed)
        if len(idx) < MIN_IMAGES:
            return CheckResult.skipped("pose_leakage", subject.name, f"needs at least "
                                       f"{MIN_IMAGES} training images to cross-validate a "
                                       f"prediction from the pose; there are {len(idx)}",
                                       subject.seeds)
        batch = subject.train.get_batch(idx)
        meta = {k: np.asarray(batch[k], dtype=np.float64) for k in ("rot", "trans", "ctf")
                if k in batch}
        found = nuisance_features(meta.get("rot"), meta.get("trans"), meta.get("ctf"))
        feats = {k: v for k, v in found.items() if isinstance(v, Features)}
        reasons = {k: v for k, v in found.items() if isinstance(v, str)}
        if not feats:
            return CheckResult.skipped("pose_leakage", subject.name, "no nuisance variable to "
                                       "predict the latents from: " + "; ".join(
                                           f"{k}: {v}" for k, v in reasons.items()),
                                       subject.seeds)
        if len(feats) > 1:
            feats["all"] = Features(np.concatenate([f.linear for f in feats.values()], axis=1),
                                    np.concatenate([f.knn for f in feats.values()], axis=1))
        mu, logvar = encoded(subject, seed, idx)
        truth = truth_of(subject.train, idx)
        info.append(informativeness(mu, logvar, truth, seed))
        total = ((mu - mu.mean(axis=0)) ** 2).sum(axis=1)
        conditioned = bool(usable_truth(truth))
        y = residual_latents(mu, truth, seed) if conditioned else mu
        for name, stat in leakage_stats(y, total, feats, seed).items():
            per_var.setdefault(name, []).append(boot(stat, len(idx), settings, seed))
        if conditioned:
            stat = leakage_stats(mu, total, {"all": feats["all"]} if "all" in feats
                                 else feats, seed)
            raw.append(boot(next(iter(stat.values())), len(idx), settings, seed))
        if not arrays:  # what the report draws: the latents coloured by each variable
            arrays = {"mu": mu, **{f"truth[{k}]": v for k, v in truth.items()}}
            colours = {"in_plane": lambda f: np.degrees(np.arctan2(f.knn[:, 1], f.knn[:, 0])),
                       "view": lambda f: np.degrees(np.arccos(np.clip(f.knn[:, 2], -1, 1))),
                       "shift": lambda f: np.linalg.norm(f.knn, axis=1),
                       "defocus": lambda f: f.knn[:, 0]}
            arrays.update({f"nuisance[{k}]": colours[k](f).astype(np.float32)
                           for k, f in feats.items() if k in colours})

    governing = "all" if "all" in per_var else next(iter(per_var))
    metrics = {"leakage": pooled(per_var[governing], False, settings)}
    for name in VARIABLES:
        if name in per_var:
            metrics[f"leakage[{name}]"] = pooled(per_var[name], False, settings)
    if raw:
        metrics["leakage[raw]"] = pooled(raw, False, settings)
    for k in least_informative(info):
        metrics[k] = plain([i[k] for i in info], True)
    missed = floors_missed(least_informative(info), settings)
    verdict, flags = verdict_with_guard(metrics["leakage"], threshold, bool(missed))
    lk = metrics["leakage"].value
    worst = max((n for n in VARIABLES if f"leakage[{n}]" in metrics),
                key=lambda n: metrics[f"leakage[{n}]"].value)
    given = "beyond what the truth explains" if conditioned else "(no truth to condition on)"
    if not np.isfinite(lk):
        if "uninformative" not in flags:
            flags.append("uninformative")
        text = "the latents do not vary: there is nothing to predict"
    elif verdict == "FAIL":
        text = (f"the pose and CTF predict {percent(lk)} of the latent variance {given}; most "
                f"from {worst} ({percent(metrics[f'leakage[{worst}]'].value)})")
    elif "uninformative" in flags:
        text = (f"leakage {lk:.2g}, but the latents carry too little information "
                f"({', '.join(missed)} below floor) for its absence to mean anything")
    elif verdict == "PASS":
        text = f"the pose and CTF predict {percent(lk)} of the latent variance {given}"
    else:
        text = f"leakage {lk:.2g} is within its uncertainty of the threshold"
    if not conditioned and verdict != "SKIP":
        text += ("; without ground truth a true preference of states for views would read "
                 "as leakage")
    return CheckResult("pose_leakage", subject.name, verdict, metrics, threshold, text,
                       tuple(flags), subject.seeds,
                       {"n_images": int(len(idx)), "conditioned_on_truth": conditioned,
                        "variables": [k for k in per_var if k != "all"],
                        "not_measured": reasons, "permutations": N_PERMUTATIONS,
                        "methods": list(METHODS)}, arrays)


#: What the report draws of pose_leakage: the latents coloured by each nuisance variable.
LEAKAGE_FIGURES = (
    FigureSpec("coloured", ("mu", "nuisance[*]"), metrics=("leakage",),
               caption="{embedding} ({n} images), coloured by each nuisance variable (in-plane "
                       "angle and tilt of the viewing direction in degrees, shift in pixels, "
                       "defocus in µm). Colours that sort along the map mean the latents "
                       "carry the pose."),
)
