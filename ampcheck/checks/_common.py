"""Pieces every check shares: settings per budget, sampling, seeds, informativeness, truth,
and the one wording of what a check needs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import metrics as M
from ..budgets import Evaluation, get_budget
from ..data.twins import derangement
from ..results import Metric, Threshold, decide, interval
from ..thresholds import DEFAULT_THRESHOLDS


@dataclass(frozen=True)
class Settings(Evaluation):
    """What a check runs with: the evaluation sizes of the budget called ``budget``
    (:class:`~ampcheck.budgets.Evaluation`; training sizes are the budget's ``TrainConfig``)
    and the thresholds verdicts are decided by."""

    budget: str = "smoke"
    thresholds: Mapping[str, Threshold] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))


def settings_for(budget: str, thresholds: Mapping[str, Threshold] | None = None, *,
                 per_epoch: bool = False) -> Settings:
    """The :class:`Settings` of the named budget (:mod:`ampcheck.budgets`), with
    ``thresholds`` (default: :data:`~ampcheck.thresholds.DEFAULT_THRESHOLDS`); ``per_epoch``:
    its sizes for each epoch of a profile over epochs (``Budget.per_epoch``)."""
    named = get_budget(budget)
    extra = {} if thresholds is None else {"thresholds": dict(thresholds)}
    sizes = named.per_epoch if per_epoch and named.per_epoch is not None else named.evaluation
    return Settings(**asdict(sizes), budget=named.name, **extra)


# ---------------------------------------------------------------------------- what checks need
#: What a check needs, per subject tag (:mod:`ampcheck.checks.subject`): the need, and how a
#: caller of ``check_vae`` meets it. A ``SKIP`` result and an error say it in these words.
NEEDS: dict[str, tuple[str, str]] = {
    "trainable": ("needs a model that ampcheck trains (its variants are trained at the same "
                  "budget)", "give a preset or a TrainConfig"),
    "heldout": ("needs held-out images", "give train_indices, or a factory or preset"),
    "truth": ("needs ground truth", "use data with z_continuous or z_class"),
    "encoder": ("needs an encoder", "give a model with encode()"),
    "poses": ("needs poses", "give data whose batches carry rot (and trans, ctf)"),
    "clean": ("needs clean images to re-noise", "use a data set that ampcheck generated, "
              "read whole with its manifest.json, or one that gives noise_draw() "
              "(ampcheck.contracts.NoiseResampling)"),
}


def missing_reason(tag: str, *truths: Mapping[str, np.ndarray], how: str | None = None) -> str:
    """Why a check that needs ``tag`` does not apply: ``"needs ground truth: use data with
    z_continuous or z_class"``, with ``how`` in place of the way to meet it (an adapter says
    it in its own arguments); for ``truth``, a constant ground truth among ``truths`` says so
    instead (:func:`truth_problem`)."""
    problem = truth_problem(*truths) if tag == "truth" and truths else None
    need, default = NEEDS[tag]
    return problem or f"{need}: {how or default}"


def sample(n: int, k: int, seed: int = 0) -> np.ndarray:
    """``min(n, k)`` sorted positions out of ``n``, seeded."""
    if k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def encoded(subject, seed: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, logvar)`` of training images ``idx`` by the model of ``seed``, computed once per
    subject (the invariance, leakage and resampling checks share their sample)."""
    return subject.memo(("encode", seed, np.asarray(idx).tobytes()),
                        lambda: subject.model(seed).encode(subject.train, idx))


def boot(stat: Callable[[np.ndarray], float], n: int, settings: Settings, seed: int = 0):
    return M.bootstrap(stat, n, n_boot=settings.n_boot, level=settings.level, seed=seed)


def pooled(per_seed: list, higher_is_better: bool, settings: Settings) -> Metric:
    """One :class:`Metric` from the :class:`~ampcheck.metrics.Interval` of every seed (whose
    replicates are centred on its value): the mean value, and the interval of all seeds'
    replicates pooled (:func:`~ampcheck.results.interval`)."""
    value = float(np.mean([iv.value for iv in per_seed]))
    return interval([iv.samples for iv in per_seed], value, higher_is_better, settings.level)


def plain(values: list[float], higher_is_better: bool) -> Metric:
    """A metric without an interval: the mean over seeds (spread in ``lo, hi`` when several)."""
    v = np.asarray(values, dtype=float)
    if len(v) > 1:
        return Metric(float(v.mean()), higher_is_better, float(v.min()), float(v.max()))
    return Metric(float(v.mean()), higher_is_better)


def mean_ratio(num: np.ndarray, den: np.ndarray) -> Callable[[np.ndarray], float]:
    """The statistic ``mean(num) / mean(den)`` of a resample ``b`` (NaN unless the
    denominator's mean is positive), for :func:`boot`."""
    def stat(b: np.ndarray) -> float:
        d = den[b].mean()
        return float(num[b].mean() / d) if d > 0 else float("nan")
    return stat


def worst_of(values) -> float:
    """The largest value, NaN if any is NaN (Python's ``max`` would depend on the order)."""
    return float(np.max(np.fromiter(values, dtype=float)))


# ---------------------------------------------------------------------------- truth recovery
#: The ground truths that checks measure latents against, in the order they are preferred.
TRUTH_KEYS = ("z_continuous", "z_class")


def _constant(values) -> bool:
    """True when ``values`` (the finite ones) hold fewer than two distinct values."""
    v = np.asarray(values).ravel()
    if np.issubdtype(v.dtype, np.floating):
        v = v[np.isfinite(v)]
    return np.unique(v).size < 2


def usable_truth(*truths: Mapping[str, np.ndarray]) -> list[str]:
    """The keys of :data:`TRUTH_KEYS` present and not constant in every one of ``truths``.

    A constant truth (one value of ``z_continuous``, one class of ``z_class``) carries no
    information: the R² of a constant is undefined (``0 / 0``; scikit-learn reports 1.0 for a
    perfect, i.e. constant, prediction) and so is an AMI against one class, so no recovery
    may be measured against it.
    """
    return [k for k in TRUTH_KEYS if all(k in t and not _constant(t[k]) for t in truths)]


def truth_problem(*truths: Mapping[str, np.ndarray]) -> str | None:
    """Why ``truths`` cannot be measured against (None when some key is usable):
    ``"the ground truth is constant: z_continuous has one value"``, or ``None`` when there is
    no ground truth at all (the caller says what to give then)."""
    if usable_truth(*truths):
        return None
    present = [k for k in TRUTH_KEYS if all(k in t for t in truths)]
    if not present:
        return None
    what = {"z_continuous": "z_continuous has one value", "z_class": "z_class has one class"}
    return f"the ground truth is constant: {', '.join(what[k] for k in present)}"


def truth_recovery(mu: np.ndarray, truth: Mapping[str, np.ndarray], seed: int = 0
                   ) -> tuple[str, float] | None:
    """``(name, value)`` of how well latents recover the ground truth, or None without a
    usable truth (none, or only constant ones: see :func:`usable_truth`).

    The continuous coordinate when known: the better of linear and k-NN cross-validated R²;
    else the classes: AMI of k-means clusters of the latents.
    """
    usable = usable_truth(truth)
    if "z_continuous" in usable:
        y = np.asarray(truth["z_continuous"], dtype=float)
        return "truth_r2", max(M.r2_from_latents(mu, y, method=m, seed=seed)
                               for m in ("linear", "knn"))
    if "z_class" in usable:
        return "truth_ami", M.cluster_ami(mu, np.asarray(truth["z_class"]), seed=seed)
    return None


def spread_to_width(mu: np.ndarray, logvar: np.ndarray, seed: int = 0) -> float:
    """Median distance between two images' means over the median posterior std."""
    n = len(mu)
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, n, size=(2, min(20000, n * (n - 1))))
    keep = i != j
    dist = np.linalg.norm(mu[i[keep]] - mu[j[keep]], axis=1)
    width = np.sqrt(np.exp(logvar).mean(axis=1))
    return float(np.median(dist) / max(np.median(width), 1e-12))


def informativeness(mu: np.ndarray, logvar: np.ndarray, truth: Mapping[str, np.ndarray],
                    seed: int = 0) -> dict[str, float]:
    """Measures of whether latents carry information: ``spread_to_width`` and, with a usable
    ground truth, ``truth_r2`` or ``truth_ami`` (see :func:`truth_recovery`; a constant truth
    says nothing about the latents, so then only the spread judges them)."""
    values = {"spread_to_width": spread_to_width(mu, logvar, seed)}
    rec = truth_recovery(mu, truth, seed)
    if rec is not None:
        values[rec[0]] = rec[1]
    return values


def least_informative(per_seed: list[Mapping[str, float]]) -> dict[str, float]:
    """Each informativeness measure at its worst seed (one collapsed seed must not hide
    behind a good one)."""
    if not per_seed:
        return {}
    return {k: float(min(i[k] for i in per_seed)) for k in per_seed[0]
            if all(k in i for i in per_seed)}  # a measure some seed lacks judges none


def floors_missed(values: Mapping[str, float], settings: Settings) -> list[str]:
    """The informativeness floors (threshold names) that ``values`` fall below."""
    t = settings.thresholds
    floors = {"spread_to_width": "informative_spread", "truth_r2": "informative_recovery",
              "truth_ami": "informative_recovery"}
    return [floors[k] for k, v in values.items() if k in floors and not t[floors[k]].passes(v)]


# ---------------------------------------------------------------------------- latent use
def decoder_use(model, data, idx: np.ndarray, mu: np.ndarray, seed: int = 0) -> np.ndarray:
    """``use_i = L(mu of another image) - L(mu_i)`` per image ``(B,)``: how much the model's
    own decoder loses on image ``idx[i]`` of ``data`` when it gets another image's latent
    (a fixed derangement of the sample) instead of its own ``mu (B, zdim)``.

    The stand-in for "informative" that needs no ground truth: latents that the model's own
    decoder does not use (mean about 0) carry nothing the model learned, whatever their
    spread. Each model is its own null, so it compares models whose decoders trained apart.
    """
    other = mu[derangement(len(idx), seed)]
    return model.recon_loss(data, idx, other) - model.recon_loss(data, idx, mu)


def mean_of(values: np.ndarray) -> Callable[[np.ndarray], float]:
    """The statistic ``mean(values)`` of a resample ``b``, for :func:`boot`."""
    return lambda b: float(values[b].mean())


def unused(use: Metric) -> bool:
    """Whether latents with the mean :func:`decoder_use` ``use`` are of no measurable use to
    their decoder: its interval is not above 0 (the flag ``no_fit``)."""
    return not use.lo > 0


def use_ratio(use: np.ndarray, reference: np.ndarray) -> float:
    """``mean(use) / mean(reference)``, or NaN when the reference's mean is not positive
    (it is then of no use at all: :func:`unused` says so)."""
    r = float(reference.mean())
    return float(use.mean()) / r if r > 0 else float("nan")


def reference_empty(ratios, settings: Settings, ceiling: str) -> bool:
    """Whether a reference's latents carry almost nothing next to the other side's: some
    seed's :func:`use_ratio` above the threshold ``ceiling`` (``informative_table``,
    ``informative_baseline``; a NaN, a reference of no use at all, is left to
    :func:`unused`)."""
    t = settings.thresholds[ceiling]
    return any(np.isfinite(r) and not t.passes(r) for r in ratios)


def verdict_with_guard(metric: Metric, threshold: Threshold, uninformative: bool):
    """The verdict, never PASS when the latents are uninformative (then WARN, flagged)."""
    verdict = decide(metric, threshold)
    flags: list[str] = []
    if uninformative:
        flags.append("uninformative")
        if verdict == "PASS":
            verdict = "WARN"
    return verdict, flags


def percent(x: float) -> str:
    """``x`` as a whole percentage for explanations (never "-0%")."""
    return f"{x:.0%}" if abs(x) >= 0.005 else "0%"


def truth_of(data, positions: np.ndarray) -> dict[str, np.ndarray]:
    truth = data.truth or {}  # the data-set contract: a mapping, empty without truth
    return {k: np.asarray(v)[positions] for k, v in truth.items()}


def central_slices(volume: np.ndarray) -> np.ndarray:
    """The three central sections ``(3, D, D)`` of a volume ``[z, y, x]``: z, y, x = D/2."""
    c = volume.shape[0] // 2
    return np.stack([volume[c], volume[:, c], volume[:, :, c]]).astype(np.float32)


def displacement_stat(mu: np.ndarray, moved: np.ndarray, seed: int):
    """The displacement of ``moved`` from ``mu`` (the same images, row by row) as a statistic of
    a resample of images, for the bootstrap (the invariance checks; latent movement between
    epochs).

    The point value is :func:`ampcheck.metrics.displacement`. A resample changes its numerator
    (the median move of the resampled images); the denominator, a median over up to 20,000
    pairs of images, is held fixed (its own spread is a percent or so), which keeps the
    bootstrap cheap.
    """
    value = M.displacement(mu, moved, seed=seed)
    moves = np.linalg.norm(moved - mu, axis=1)
    centre = float(np.median(moves))

    def stat(b: np.ndarray) -> float:
        if centre == 0 or not np.isfinite(value):
            return value
        return value * float(np.median(moves[b])) / centre

    return stat
