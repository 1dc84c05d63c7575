"""noise_resampling: the same clean particle under fresh noise. Is the posterior honest?

On :data:`N_PARTICLES` training images, the encoder sees each clean particle (same pose, CTF
and conformation) under :data:`N_DRAWS` independent noise draws at the data set's own noise
level (:class:`~ampcheck.contracts.NoiseResampling`), giving ``mu[k, i]`` and
``sigma²[k, i]`` for draw ``k`` of particle ``i``. Two measures, each with a half-sampling
bootstrap interval over particles:

* ``displacement``: ``median_i mean_{k<l} |mu[k,i] - mu[l,i]| / median_{i!=j,k}
  |mu[k,i] - mu[k,j]|``, how far a particle moves between noise draws over how far apart two
  particles are (as the invariance checks measure a transform): 0 when the latent ignores the
  noise, about 1 when a new noise draw moves a particle as far as another particle is;
* ``calibration``: ``sum_i sum_dims var_k(mu[k,i]) / sum_i sum_dims mean_k(sigma² - sigma⁴)``,
  the spread of the posterior mean across draws over what the posterior itself predicts for
  it. For the exact posterior of a linear-Gaussian model with the standard-normal prior of a
  VAE, the noise moves the mean with covariance ``Sigma - Sigma²`` (``Sigma`` the posterior
  covariance; ``Sigma J Sigma`` with ``Sigma^-1 = I + J``), so the ratio is exactly 1 where
  the encoder's dimensions are ``Sigma``'s eigenvectors (a diagonal ``Sigma``, as a VAE's
  factorised posterior assumes; a mean-field fit of a correlated ``Sigma`` reads below 1);
  to first order (the Laplace approximation) it is 1 for any model with that prior. When the
  data dominate the prior (``sigma² << 1``) it is the plain ratio of the spread of ``mu``
  across draws to ``sigma²``. Above 1 the posterior is overconfident (narrower than the
  noise makes the mean move), below 1 it claims more uncertainty than the noise causes
  (a tempered, beta-weighted or mis-scaled likelihood). Dimensions the posterior does not use
  (``sigma² ≈ 1``) weigh nothing on either side; ``sigma² - sigma⁴`` is taken as 0 where
  ``sigma² > 1`` (a width beyond the prior's predicts no movement).

``miscalibration = |log2 calibration|`` governs (two-sided: a factor of 2 either way is 1).
A PASS counts only when the latents are informative (the invariance checks' floors, on their
sample of training images): a collapsed encoder (constant ``mu``, ``sigma = 1``) has no
calibration at all.
"""

from __future__ import annotations

import math

import numpy as np

from ..display import FigureSpec
from ..results import CheckResult, Metric
from ._common import (
    Settings,
    boot,
    encoded,
    floors_missed,
    informativeness,
    least_informative,
    plain,
    pooled,
    sample,
    truth_of,
    verdict_with_guard,
)
from .subject import Subject

N_PARTICLES = 64
N_DRAWS = 8


def draw_spreads(mu: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per particle ``(P,)``: the variance of the means across draws, summed over dimensions
    (unbiased, ``ddof=1``), and the mean over draws of ``sigma² - sigma⁴`` summed likewise,
    from ``mu``, ``logvar`` ``(K draws, P particles, d)``."""
    var = np.exp(logvar.astype(np.float64))
    return (mu.astype(np.float64).var(axis=0, ddof=1).sum(axis=1),
            np.clip(var - var**2, 0, None).mean(axis=0).sum(axis=1))


def _displacement(mu: np.ndarray):
    """The displacement between draws as a statistic of a resample of particles (the
    denominator, a median over every pair of particles in every draw, held fixed)."""
    K, P, _ = mu.shape
    k, l_ = np.triu_indices(K, 1)
    within = np.linalg.norm(mu[k] - mu[l_], axis=2).mean(axis=0)  # (P,)
    i, j = np.triu_indices(P, 1)
    between = float(np.median(np.linalg.norm(mu[:, i] - mu[:, j], axis=2)))

    def stat(b: np.ndarray) -> float:
        return float(np.median(within[b]) / between) if between > 0 else float("nan")
    return stat


def _ratio(num: np.ndarray, den: np.ndarray):
    """``sum(num) / sum(den)`` of a resample ``b``: infinite where the posterior predicts no
    movement (``den`` 0: a width of at least the prior's) and the means move all the same,
    NaN where neither moves (a collapsed encoder)."""
    def stat(b: np.ndarray) -> float:
        n, d = float(num[b].sum()), float(den[b].sum())
        if d > 0:
            return n / d
        return float("inf") if n > 0 else float("nan")
    return stat


def miscalibration(calibration: Metric) -> Metric:
    """``|log2 calibration|`` with the interval that the calibration's maps to (from 0 where
    it holds 1)."""
    def log(x: float) -> float:
        return abs(math.log2(x)) if x > 0 else math.inf

    value = log(calibration.value) if math.isfinite(calibration.value) or \
        calibration.value == math.inf else math.nan
    lo_c, hi_c = calibration.lo, calibration.hi
    if not math.isfinite(value) or math.isnan(lo_c) or math.isnan(hi_c):
        return Metric(value, False)  # no interval (an infinite end maps to one below)
    ends = sorted((log(lo_c), log(hi_c)))
    return Metric(value, False, 0.0 if lo_c <= 1 <= hi_c else ends[0], ends[1])


def noise_resampling(subject: Subject, settings: Settings) -> CheckResult:
    """Does the encoder's posterior say truly how far the noise moves its mean?"""
    threshold = settings.thresholds["noise_resampling"]
    disp, calib, info, arrays = [], [], [], {}
    for seed in subject.seeds:
        model = subject.model(seed)
        idx = sample(len(subject.train), N_PARTICLES, seed)
        out = [model.encode(subject.train.noise_draw(1000 * seed + k), idx)
               for k in range(N_DRAWS)]
        mu = np.stack([m for m, _ in out])
        logvar = np.stack([lv for _, lv in out])
        truth = truth_of(subject.train, idx)
        # informative latents: judged on the checks' larger sample (a few dozen particles
        # recover a truth too noisily), the invariance checks' encodings
        wide = sample(len(subject.train), settings.n_eval, seed)
        info.append(informativeness(*encoded(subject, seed, wide),
                                    truth_of(subject.train, wide), seed))
        num, den = draw_spreads(mu, logvar)
        n = len(idx)
        disp.append(boot(_displacement(mu), n, settings, seed))
        calib.append(boot(_ratio(num, den), n, settings, seed))
        if not arrays:  # what the report draws: each particle's draws joined
            arrays = {"draws": mu.transpose(1, 0, 2).astype(np.float32),
                      **{f"truth[{k}]": v for k, v in truth.items()}}
    calibration = pooled(calib, True, settings)
    metrics = {"miscalibration": miscalibration(calibration), "calibration": calibration,
               "displacement": pooled(disp, False, settings)}
    for k in least_informative(info):
        metrics[k] = plain([i[k] for i in info], True)
    missed = floors_missed(least_informative(info), settings)
    verdict, flags = verdict_with_guard(metrics["miscalibration"], threshold, bool(missed))
    c, d = metrics["calibration"].value, metrics["displacement"].value
    moves = f"a new noise draw moves a particle {d:.2f} of the typical inter-particle distance"
    if np.isnan(c):
        if "uninformative" not in flags:
            flags.append("uninformative")
        verdict = "WARN"
        text = ("the posterior means do not move with the noise and the posterior width is "
                "the prior's: there is no posterior to calibrate")
    elif "uninformative" in flags:
        text = (f"calibration {c:.2g}, but the latents carry too little information "
                f"({', '.join(missed)} below floor) for it to mean anything; {moves}")
    elif verdict == "FAIL":
        side = ("not a posterior: its width is at least the prior's, yet its mean moves with "
                "the noise" if c == math.inf
                else "overconfident: its width is smaller than the noise moves its mean" if c > 1
                else "underconfident: it claims more uncertainty than the noise causes"
                if c > 0 else "underconfident: its mean ignores the noise, its width does not")
        text = f"the posterior is {side} (calibration {c:.2g}); {moves}"
    elif verdict == "PASS":
        text = f"the posterior's width matches how the noise moves its mean ({c:.2g}); {moves}"
    else:
        text = f"calibration {c:.2g} is within its uncertainty of the threshold; {moves}"
    return CheckResult("noise_resampling", subject.name, verdict, metrics, threshold, text,
                       tuple(flags), subject.seeds,
                       {"n_particles": int(len(idx)), "n_draws": N_DRAWS}, arrays)


#: What the report draws of noise_resampling: each particle's noise draws joined.
RESAMPLING_FIGURES = (
    FigureSpec("draws", ("draws",), metrics=("displacement", "calibration"),
               caption="{embedding}: {n} particles, each under {k} noise draws (crosses) "
                       "joined to their mean (circle). Short spokes: the latent ignores the "
                       "noise; displacement {displacement}, calibration {calibration}."),
)
