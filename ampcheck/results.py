"""What a check returns (SPEC §4): metrics with direction and interval, a threshold, a verdict.

Torch-free, so that reading a report or a threshold does not import the training loop.

Each metric's interval comes from resampling its images (half of them, without replacement:
:func:`ampcheck.metrics.bootstrap`) and is centred on the metric's value, so ``lo <= value <=
hi`` always. The verdict of the governing metric against its threshold uses that interval:

* PASS when the whole interval (and the value) lies on the good side of the threshold;
* FAIL when the whole interval (and the value) lies on the bad side;
* WARN otherwise: the value is within its own uncertainty of the threshold.

Over several training seeds the interval pools the replicates of every seed (each centred on
its own seed's value), so it widens when the seeds disagree (the paper saw runs differ).

A PASS that rests on uninformative latents (collapsed, or carrying no more about the truth than
chance) is never reported: it becomes WARN with the flag ``uninformative``.

A check that does not apply to a model (it needs ground truth the data lack, a model ampcheck
can train, held-out images) is reported as ``SKIP``: no metrics, no threshold, and the reason
as its explanation (:meth:`CheckResult.skipped`), so that a profile lists every check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Verdict = Literal["PASS", "WARN", "FAIL", "SKIP"]
VERDICTS: tuple[Verdict, ...] = ("PASS", "WARN", "FAIL", "SKIP")  # SKIP: it did not run


def _num(x: Any) -> float | None:
    """A JSON-friendly float: ``None`` for NaN and infinities (strict JSON has neither)."""
    x = float(x)
    return x if math.isfinite(x) else None


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays as plain values, NaN and infinities as ``None``."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [jsonable(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _num(obj)
    return obj


@dataclass(frozen=True)
class Metric:
    """One measured number, which way is better, and its bootstrap interval (``lo, hi``)."""

    value: float
    higher_is_better: bool
    lo: float = float("nan")
    hi: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"value": _num(self.value), "higher_is_better": self.higher_is_better,
                "lo": _num(self.lo), "hi": _num(self.hi)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Metric:
        """The metric of :meth:`to_dict`. Strict JSON writes an infinite end as ``null``; an
        interval has both ends or neither, so a lone ``null`` beside a number is infinite."""
        def f(x):
            return float("nan") if x is None else float(x)

        lo, hi = f(d.get("lo")), f(d.get("hi"))
        if math.isnan(lo) != math.isnan(hi):
            lo, hi = (-math.inf if math.isnan(lo) else lo), (math.inf if math.isnan(hi) else hi)
        return cls(f(d["value"]), bool(d["higher_is_better"]), lo, hi)

    def __str__(self) -> str:
        if math.isnan(self.lo):
            return f"{self.value:.4g}"
        return f"{self.value:.4g} [{self.lo:.4g}, {self.hi:.4g}]"


@dataclass(frozen=True)
class Threshold:
    """The bound on one metric that decides a check, and why it sits where it does."""

    metric: str
    value: float
    higher_is_better: bool
    rationale: str = ""

    def passes(self, x: float) -> bool:
        return x >= self.value if self.higher_is_better else x <= self.value

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value,
                "higher_is_better": self.higher_is_better, "rationale": self.rationale}


def centred(value: float, replicates: np.ndarray) -> np.ndarray:
    """``replicates`` moved so that the median of the finite ones is ``value`` (same shape;
    NaN stays NaN and an infinite replicate infinite, and all are NaN when ``value`` is not
    finite): the resampling's bias is removed and its spread kept."""
    r = np.asarray(replicates, dtype=float).ravel()
    ok = np.isfinite(r)
    if not np.isfinite(value):
        return np.full(r.shape, np.nan)
    if not ok.any():  # nothing to centre: infinite replicates stay as they are
        return np.where(np.isinf(r), r, np.nan)
    return np.where(ok, r - np.median(r[ok]) + value, r)


def centred_interval(value: float, replicates: np.ndarray, level: float = 0.95
                     ) -> tuple[float, float]:
    """``(lo, hi)``: the ``(1 ± level) / 2`` quantiles of the :func:`centred` replicates,
    which hold ``value`` (their median); ``(nan, nan)`` when none is left."""
    return _quantiles(centred(value, replicates), value, level)


def _quantiles(replicates: np.ndarray, value: float, level: float) -> tuple[float, float]:
    """The ``(1 ± level) / 2`` quantiles of the replicates that are not NaN. An infinite
    replicate is a resample's own answer (a ratio over a resample with a zero denominator):
    it stays among them, and an end whose quantile reaches it is infinite."""
    r = np.asarray(replicates, dtype=float).ravel()
    r = r[~np.isnan(r)]
    if r.size == 0 or not np.isfinite(value):
        return float("nan"), float("nan")
    q = [(1 - level) / 2, (1 + level) / 2]
    if np.isfinite(r).all():
        lo, hi = np.quantile(r, q)
    else:  # numpy's linear rule between two order statistics, an infinite one kept as it is
        s = np.sort(r)
        lo, hi = (_order_statistic(s, p * (len(s) - 1)) for p in q)
    # Centred replicates have value as their median; the bounds below only move a quantile
    # that rounding put just inside it.
    return float(min(lo, value)), float(max(hi, value))


def _order_statistic(s: np.ndarray, at: float) -> float:
    """The value at fractional position ``at`` of the sorted ``s``: linear between its two
    neighbours, or the infinite one of them where one is infinite (numpy would give NaN)."""
    i, j = math.floor(at), math.ceil(at)
    if i == j or not np.isfinite(s[i]):
        return float(s[i])
    if not np.isfinite(s[j]):
        return float(s[j])
    return float(s[i] + (at - i) * (s[j] - s[i]))


def interval(samples: Sequence[np.ndarray] | np.ndarray, value: float, higher_is_better: bool,
             level: float = 0.95) -> Metric:
    """A :class:`Metric` from replicates already centred on their seed's value
    (:func:`centred`; one array per seed, pooled).

    Over several seeds ``value`` is their mean and the interval is the quantiles of all
    seeds' replicates together: it widens when the seeds disagree, and holds every seed's
    value (the median of its centred replicates) and so their mean. No finite replicate: a
    metric without an interval."""
    arrays = [np.ravel(s) for s in samples] if isinstance(samples, list | tuple) \
        else [np.ravel(samples)]
    pooled = np.concatenate(arrays) if arrays else np.empty(0)
    lo, hi = _quantiles(pooled, float(value), level)
    # each seed's value is the median of its centred replicates: held even where a quantile
    # of the mixture falls just inside it (a 20th seed at 95%, or ties)
    seeds = [float(np.median(a[np.isfinite(a)])) for a in arrays if np.isfinite(a).any()]
    if seeds and not math.isnan(lo):
        lo, hi = min(lo, *seeds), max(hi, *seeds)
    return Metric(float(value), higher_is_better, lo, hi)


def decide(metric: Metric, threshold: Threshold) -> Verdict:
    """PASS / WARN / FAIL of ``metric`` against ``threshold`` (see the module docstring)."""
    if not math.isfinite(metric.value):
        return "FAIL" if math.isinf(metric.value) else "WARN"
    lo, hi = metric.lo, metric.hi
    if math.isnan(lo) or math.isnan(hi):
        lo = hi = metric.value
    worst, best = (lo, hi) if threshold.higher_is_better else (hi, lo)
    ok = threshold.passes(metric.value)  # the value itself must agree with its interval
    if threshold.passes(worst) and ok:
        return "PASS"
    if not threshold.passes(best) and not ok:
        return "FAIL"
    return "WARN"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one model (JSON-serialisable through :meth:`to_dict`).

    ``flags`` name conditions that qualify the verdict (``uninformative``: the latents carry
    too little for an invariance to mean anything). ``details`` holds anything else a report
    may show (per-transform numbers, per-seed values), as plain JSON values. ``arrays`` holds
    what the report plots (the first seed's latents, decoded volume slices), name -> array;
    it is not part of the JSON (``ampcheck.report`` writes it beside it, as ``.npz``).

    A ``SKIP`` (:meth:`skipped`) has no metrics and no threshold (``None``); its
    ``explanation`` says why the check did not run.
    """

    check: str
    model: str
    verdict: Verdict
    metrics: dict[str, Metric]
    threshold: Threshold | None
    explanation: str
    flags: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    details: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.verdict == "SKIP":
            if self.threshold is not None or self.metrics:
                raise ValueError("a SKIP result has no metrics and no threshold")
            if not self.explanation:
                raise ValueError("a SKIP result needs its reason as the explanation")
            return
        if self.threshold is None:
            raise ValueError(f"a {self.verdict} result needs the threshold that decided it")
        if self.threshold.metric not in self.metrics:
            raise ValueError(f"the threshold governs {self.threshold.metric!r}, which is not "
                             f"among the metrics {sorted(self.metrics)}")

    @classmethod
    def skipped(cls, check: str, model: str, reason: str, seeds: tuple[int, ...] = (0,),
                details: dict[str, Any] | None = None) -> CheckResult:
        """The ``SKIP`` result of ``check`` on ``model``: it does not apply, for ``reason``."""
        return cls(check, model, "SKIP", {}, None, reason, (), tuple(seeds), dict(details or {}))

    @property
    def skip(self) -> bool:
        """True when the check did not run (verdict ``SKIP``)."""
        return self.verdict == "SKIP"

    @property
    def governing(self) -> Metric:
        """The metric the threshold applies to (a ``SKIP`` has none: ``ValueError``)."""
        if self.threshold is None:
            raise ValueError(f"{self.check} on {self.model} was skipped: it has no governing "
                             f"metric ({self.explanation})")
        return self.metrics[self.threshold.metric]

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "model": self.model, "verdict": self.verdict,
                "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
                "threshold": None if self.threshold is None else self.threshold.to_dict(),
                "explanation": self.explanation,
                "flags": list(self.flags), "seeds": list(self.seeds),
                "details": jsonable(self.details)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckResult:
        t = d.get("threshold")
        threshold = None if t is None else Threshold(
            t["metric"], float(t["value"]), bool(t["higher_is_better"]), t.get("rationale", ""))
        return cls(check=d["check"], model=d["model"], verdict=d["verdict"],
                   metrics={k: Metric.from_dict(m) for k, m in (d.get("metrics") or {}).items()},
                   threshold=threshold,
                   explanation=d["explanation"], flags=tuple(d.get("flags", ())),
                   seeds=tuple(d.get("seeds", (0,))), details=dict(d.get("details", {})))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def summary(self) -> str:
        """One line: ``check  VERDICT  metric = value [lo, hi] (threshold)  flags``, or
        ``check  SKIP  reason``."""
        t = self.threshold
        if t is None:
            return f"{self.check:<24} {self.verdict:<4}  {self.explanation}"
        flags = f"  [{', '.join(self.flags)}]" if self.flags else ""
        return (f"{self.check:<24} {self.verdict:<4}  {t.metric} = {self.governing} "
                f"(pass: {bound_text(t)}){flags}")


def bound_text(threshold: Threshold | Mapping[str, Any], *, symbols: bool = False,
               number: Callable[[Any], str] = "{:g}".format) -> str:
    """Which side of ``threshold`` passes, as text: ``<= 0.2``, ``>= 0.8`` (``symbols``:
    ``≤ 0.2``, ``≥ 0.8``, as the HTML page writes it), the value by ``number``. The one
    formatter of a bound, for the CLI's summary, the pytest plugin's and the report page;
    ``threshold`` is a :class:`Threshold` or its ``to_dict()`` (the page's may lack keys)."""
    t = threshold.to_dict() if isinstance(threshold, Threshold) else threshold
    higher = t.get("higher_is_better")
    op = ("≥" if higher else "≤") if symbols else (">=" if higher else "<=")
    return f"{op} {number(t.get('value'))}"


def result_keys(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """A unique key for each ``(check, model)`` of a report, in order: the check's name for
    its first result, ``check[model]`` for another model's (the main job checks the
    cryoDRGN-style VAE and, on some checks, the invariant encoder as their positive control).
    """
    seen: set[str] = set()
    keys = []
    for check, model in pairs:
        key = check if check not in seen else f"{check}[{model}]"
        seen.add(check)
        keys.append(key)
    return keys
