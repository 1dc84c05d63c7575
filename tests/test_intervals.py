"""Intervals a user can trust (every metric's interval holds its value) and the invariance
check governed by the paper's probe, not by the worst of its transforms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import adjusted_mutual_info_score, r2_score

from ampcheck import metrics as M
from ampcheck.checks import check_vae
from ampcheck.data.mnist import MnistDataset
from ampcheck.errors import ConfigError
from ampcheck.results import Threshold, decide, interval

STATISTICS = {
    "mean": lambda x, y: (lambda b: float(x[b].mean())),
    "median": lambda x, y: (lambda b: float(np.median(x[b]))),
    "r2": lambda x, y: (lambda b: float(r2_score(y[b], x[b]))),
    "ami": lambda x, y: (lambda b: float(adjusted_mutual_info_score(
        (y[b] > 0).astype(int) + (y[b] > 1), (x[b] > 0).astype(int)))),
}


def _raw(samples, level):
    """The quantiles of the replicates themselves: what the interval is before its bounds
    are made to hold the value (so the tests see whether that ever mattered)."""
    r = np.asarray(samples, float).ravel()
    r = r[np.isfinite(r)]
    return np.quantile(r, [(1 - level) / 2, (1 + level) / 2])


@given(st.sampled_from(sorted(STATISTICS)), st.integers(4, 80), st.integers(0, 2**16),
       st.floats(0.5, 0.99))
def test_every_interval_holds_its_value(name, n, seed, level):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = x * rng.uniform(0, 2) + rng.normal(size=n)
    iv = M.bootstrap(STATISTICS[name](x, y), n, n_boot=60, level=level, seed=seed)
    if np.isfinite(iv.value) and np.isfinite(iv.lo):
        assert iv.lo <= iv.value <= iv.hi, (iv, name)
        lo, hi = _raw(iv.samples, level)  # it holds it by construction, not by clipping
        assert lo <= iv.value + 1e-9 and iv.value - 1e-9 <= hi, (lo, hi, iv, name)


def test_too_few_items_give_no_interval():
    iv = M.bootstrap(lambda b: float(np.mean(b)), 3, n_boot=20)
    assert iv.value == 1.0 and np.isnan(iv.lo) and np.isnan(iv.hi)


@pytest.mark.parametrize("stat", ["median", "ratio"])
def test_half_sampling_intervals_cover_the_truth(stat):
    # coverage against the known population value, over repeated skewed samples of 100
    rng = np.random.default_rng(0)
    truth = {"median": np.log(2), "ratio": 1.0 / 3.0}[stat]  # Exp(1) median; E[u]/E[u+2v]
    hits, sims = 0, 200
    for i in range(sims):
        u, v = rng.exponential(size=100), rng.exponential(size=100)
        f = (lambda b, u=u: float(np.median(u[b]))) if stat == "median" else \
            (lambda b, u=u, v=v: float(u[b].mean() / (u[b] + 2 * v[b]).mean()))
        iv = M.bootstrap(f, 100, n_boot=200, seed=i)
        hits += iv.lo <= truth <= iv.hi
    assert 0.88 <= hits / sims <= 0.995, hits / sims

def test_the_ami_of_unrelated_labels_lies_in_its_interval():
    # The case: clusters unrelated to the classes. Resampling with replacement
    # duplicates images and inflates the AMI of every replicate, so the percentile interval
    # lay wholly above the value (AMI -0.006, interval [0.031, 0.098]).
    rng = np.random.default_rng(3)
    labels, clusters = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    iv = M.bootstrap(lambda b: float(adjusted_mutual_info_score(labels[b], clusters[b])),
                     300, n_boot=200, seed=0)
    assert abs(iv.value) < 0.02
    assert iv.lo <= iv.value <= iv.hi
    assert iv.lo < 0 < iv.hi  # no association, and the interval says so


def test_the_half_sampling_interval_of_a_mean_matches_normal_theory():
    # independent computation: the 95% interval of a mean is +-1.96 sd / sqrt(n)
    x = np.random.default_rng(1).exponential(size=400)
    iv = M.bootstrap(lambda b: float(x[b].mean()), len(x), n_boot=2000, seed=0)
    half_width = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert (iv.hi - iv.lo) / 2 == pytest.approx(half_width, rel=0.15)


@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(0.01, 3), st.floats(-2, 2)),
                min_size=1, max_size=20), st.integers(0, 2**16))
def test_intervals_pooled_over_seeds_hold_every_seeds_value(seeds, rng_seed):
    # up to 20 training seeds that may disagree, each with skewed, off-centre replicates
    rng = np.random.default_rng(rng_seed)
    per_seed = [M.centred(v, v + bias + sd * rng.standard_exponential(50))
                for v, sd, bias in seeds]
    values = [v for v, _, _ in seeds]
    m = interval(per_seed, float(np.mean(values)), False)
    assert all(m.lo <= v <= m.hi for v in values), (m, values)
    lo, hi = _raw(per_seed, 0.95)
    assert lo <= m.value + 1e-9 and m.value - 1e-9 <= hi


def test_seeds_that_all_pass_pool_into_a_pass():
    # three seeds that each pass memorisation <= 0.5 with room, one of them less so: the
    # pooled interval must not be dragged past the threshold by re-centring the mixture
    rng = np.random.default_rng(0)
    per_seed = [M.centred(v, v + 0.01 * rng.standard_normal(200)) for v in (0.10, 0.10, 0.45)]
    m = interval(per_seed, float(np.mean([0.10, 0.10, 0.45])), False)
    assert m.hi < 0.5 and m.lo < 0.11
    assert decide(m, Threshold("memorisation", 0.5, False)) == "PASS"


def test_infinite_replicates_keep_their_end_of_the_interval_open():
    # a ratio over resamples whose denominator can sum to zero: 5% of the replicates are
    # infinite. Dropped, they left an interval that passed; kept, the upper end is infinite
    rng = np.random.default_rng(0)
    raw = 1.0 + 0.05 * rng.standard_normal(400)
    raw[rng.choice(400, 20, replace=False)] = np.inf
    m = interval([M.centred(1.0, raw)], 1.0, False)
    assert m.hi == np.inf and 0.8 < m.lo < 1.0
    assert decide(m, Threshold("miscalibration", 1.5, False)) == "WARN"
    finite = interval([M.centred(1.0, raw[np.isfinite(raw)])], 1.0, False)
    assert decide(finite, Threshold("miscalibration", 1.5, False)) == "PASS"  # the control
    # written to report.json (strict JSON: null) and read back, the end is still infinite
    from ampcheck.results import Metric

    back = Metric.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back.hi == np.inf and back.lo == m.lo and decide(back, Threshold("m", 1.5, False)) \
        == "WARN"
    assert np.isnan(Metric.from_dict(Metric(1.0, False).to_dict()).lo)  # no interval: none
    # fewer infinite replicates than the tail: a finite end
    raw[np.isinf(raw)] = np.nan
    raw[:5] = np.inf
    few = interval([M.centred(1.0, raw)], 1.0, False)
    assert np.isfinite(few.hi) and few.hi > 1.0
    # every replicate infinite: still an infinite end, not a value judged alone
    every = interval([M.centred(1.0, np.full(50, np.inf))], 1.0, False)
    assert every.lo == 1.0 and every.hi == np.inf
    assert decide(every, Threshold("m", 1.5, False)) == "WARN"
    # and the noise-resampling check's scale maps an infinite calibration end to its own
    from ampcheck.checks.resampling import miscalibration

    mis = miscalibration(Metric(1.2, True, 0.9, np.inf))
    assert mis.lo == 0 and mis.hi == np.inf and decide(mis, Threshold("m", 1.0, False)) != "PASS"
    assert miscalibration(Metric(1.2, True, 0.9, 1.4)).hi < 1.0  # the control


def test_an_empty_pool_is_a_metric_without_interval():
    m = interval([], 0.3, True)
    assert m.value == 0.3 and np.isnan(m.lo)


# ---------------------------------------------------------------------------- governance
class _Projection(torch.nn.Module):
    """An encoder of two fixed pixel projections (the top principal directions of the
    digits): a smooth image moves little under a 1-px shift, more under a 5-px one."""

    def __init__(self, images: np.ndarray):
        super().__init__()
        x = images.reshape(len(images), -1).astype(np.float64)
        self.W = torch.from_numpy(np.linalg.svd(x - x.mean(0), full_matrices=False)[2][:2].T
                                  .astype(np.float32).copy())

    def encode(self, x):
        mu = x.flatten(1) @ self.W
        return mu, torch.full_like(mu, -4.0)

    def recon_loss(self, x, z):
        return (x.flatten(1) - z @ self.W.T).square().sum(1)


@pytest.fixture(scope="module")
def digits():
    return MnistDataset.load()


@pytest.mark.mnist
def test_shift_invariance_is_governed_by_its_first_transform(digits):
    vae = _Projection(digits.images(np.arange(500)))
    runs = {order: check_vae(vae, digits, checks=["shift_invariance"],
                             options={"shift_transforms": list(order)}, budget="smoke")[0]
            for order in (("roll:1", "roll:5"), ("roll:5", "roll:1"))}
    one, five = runs[("roll:1", "roll:5")], runs[("roll:5", "roll:1")]
    d1, d5 = one.metrics["displacement"], one.metrics["displacement[roll(0,5)]"]
    assert d1.value < d5.value  # the 5-px shift moves this encoder further ...
    assert one.threshold.metric == "displacement"  # ... but the paper's 1-px probe governs
    assert (five.metrics["displacement"], five.metrics["displacement[roll(0,1)]"]) == (d5, d1)
    assert one.details["governing_transform"] == "roll(0,1)"
    for r in runs.values():  # every metric of the check holds its value in its interval
        for name, m in r.metrics.items():
            if np.isfinite(m.lo):
                assert m.lo <= m.value <= m.hi, (name, m)


@pytest.mark.mnist
@pytest.mark.parametrize("check, transforms", [("shift_invariance", ["roll:1", "roll:5"]),
                                               ("rotation_invariance", ["rot90:1", "rot90:2"])])
def test_invariance_reports_each_transform_once_so_a_drift_once(digits, tmp_path, check,
                                                                 transforms):
    import dataclasses
    import json

    from ampcheck.baselines import Tolerance, compare_baseline, write_baseline
    from ampcheck.results import Metric

    options = {f"{check.split('_')[0]}_transforms": transforms}
    (r,) = check_vae(_Projection(digits.images(np.arange(500))), digits, checks=[check],
                     options=options, budget="smoke")
    governs, other = r.details["transforms"]
    moves = sorted(k for k in r.metrics if k.startswith("displacement"))
    assert moves == ["displacement", f"displacement[{other}]"]  # none for {governs}
    assert r.details["governing_transform"] == governs
    d = r.metrics["displacement"]
    drifted = dataclasses.replace(r, metrics={**r.metrics, "displacement": Metric(
        d.value + 1, d.higher_is_better, d.lo + 1, d.hi + 1)})
    path = tmp_path / "baseline.json"
    write_baseline(path, r, Tolerance(), "smoke", options)
    older = json.loads(path.read_text())  # a baseline that stored it twice, as they once did
    older["metrics"][f"displacement[{governs}]"] = older["metrics"]["displacement"]
    for stored in (None, older):
        if stored is not None:
            path.write_text(json.dumps(stored))
        assert compare_baseline(path, r, Tolerance(), "smoke", options)[0] == "ok"
        status, notes = compare_baseline(path, drifted, Tolerance(), "smoke", options)
        assert status == "drift" and len(notes) == 2, notes  # a heading, one metric
        assert notes[1].startswith("  displacement: "), notes


def test_an_empty_list_of_transforms_is_refused(digits):
    vae = _Projection(digits.images(np.arange(50)))
    with pytest.raises(ConfigError, match="shift_transforms must be a non-empty list"):
        check_vae(vae, digits, checks=["shift_invariance"], options={"shift_transforms": []},
                  budget="smoke")
