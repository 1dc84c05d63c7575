"""Metrics: properties (hypothesis, small sizes) and checks against independent formulas."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import scipy.spatial
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import special_ortho_group
from sklearn.cluster import KMeans
from sklearn.linear_model import LinearRegression
from sklearn.metrics import adjusted_mutual_info_score, r2_score
from sklearn.model_selection import KFold, cross_val_predict

from ampcheck import metrics as M

sizes = st.integers(4, 60)
dims = st.integers(1, 6)
seeds = st.integers(0, 2**31 - 1)
# small integer grids: many ties, constant columns and constant arrays come up often
grid = st.integers(-3, 3).map(float)


def gauss(seed: int, n: int, d: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def similarity(seed: int, d: int) -> tuple[np.ndarray, float, np.ndarray]:
    """A random orthogonal matrix (with a reflection half the time), scale and shift."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return Q, float(rng.uniform(0.2, 5.0)), rng.normal(size=d) * 3


# ---------------------------------------------------------------------------- displacement
@settings(deadline=None)
@given(sizes, dims, seeds)
def test_displacement_zero_for_identity_and_invariant_to_similarity(n, d, seed):
    mu, mu_t = gauss(seed, n, d), gauss(seed + 1, n, d)
    assert M.displacement(mu, mu) == 0.0
    Q, c, t = similarity(seed, d)
    before = M.displacement(mu, mu_t)
    after = M.displacement(c * mu @ Q + t, c * mu_t @ Q + t)
    assert after == pytest.approx(before, rel=1e-9)


def test_displacement_about_one_for_a_random_permutation():
    mu = gauss(0, 400, 4)
    perm = np.random.default_rng(1).permutation(400)
    assert 0.7 < M.displacement(mu, mu[perm]) < 1.3


def test_displacement_direct_formula_and_sampled_pairs():
    mu, mu_t = gauss(2, 50, 3), gauss(3, 50, 3)
    num = np.median(np.linalg.norm(mu_t - mu, axis=1))
    den = np.median([np.linalg.norm(mu[i] - mu[j]) for i in range(50) for j in range(i)])
    assert M.displacement(mu, mu_t) == pytest.approx(num / den)
    sampled = M.displacement(mu, mu_t, max_pairs=1000, seed=5)  # 1225 pairs > 1000: sampled
    assert sampled == M.displacement(mu, mu_t, max_pairs=1000, seed=5)
    assert sampled == pytest.approx(num / den, rel=0.1)


def test_displacement_degenerate_denominator():
    same = np.ones((5, 2))
    assert np.isnan(M.displacement(same, same))
    assert M.displacement(same, same + 1.0) == np.inf


# ---------------------------------------------------------------------------- retrieval
def _retrieval_direct(mu, mu_t, k):
    n, hits = len(mu), 0
    for i in range(n):
        own = np.linalg.norm(mu_t[i] - mu[i])
        closer = sum(np.linalg.norm(mu_t[i] - mu[j]) <= own for j in range(n) if j != i)
        hits += closer < k
    return hits / n


@settings(deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(2, 25), dims), elements=grid),
       st.integers(1, 3), seeds)
def test_retrieval_matches_direct_count_with_ties(mu, k, seed):
    k = min(k, len(mu))
    mu_t = mu + np.random.default_rng(seed).integers(-1, 2, size=mu.shape)
    assert M.retrieval_at_k(mu, mu_t, k) == pytest.approx(_retrieval_direct(mu, mu_t, k))


@settings(deadline=None)
@given(sizes, dims, seeds)
def test_retrieval_perfect_for_identity(n, d, seed):
    mu = gauss(seed, n, d)
    assert M.retrieval_at_k(mu, mu, 1) == 1.0


def test_retrieval_near_chance_for_a_random_permutation():
    n = 400
    mu = gauss(0, n, 4)
    moved = mu[np.random.default_rng(1).permutation(n)]
    assert M.retrieval_at_k(mu, moved, 1) <= 5 / n
    assert M.retrieval_at_k(mu, moved, 10) <= 3 * M.retrieval_chance(n, 10)
    assert M.retrieval_chance(n, 10) == 10 / n


def test_retrieval_of_a_collapsed_encoder_is_zero():
    assert M.retrieval_at_k(np.zeros((10, 2)), np.zeros((10, 2)), 1) == 0.0


# ---------------------------------------------------------------------------- CKA
def _centring(n):
    return np.eye(n) - np.ones((n, n)) / n


def _hsic_biased(K, L):
    H = _centring(len(K))
    return np.trace(K @ H @ L @ H) / (len(K) - 1) ** 2


def _hsic_unbiased(K, L):
    """Song et al. (2012), eq. 5, with the Gram matrices' diagonals zeroed."""
    n = len(K)
    K, L = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (one @ K @ L @ one)) / (n * (n - 3))


def _cka_direct(X, Y, hsic):
    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


@settings(deadline=None)
@given(hnp.arrays(np.float64, st.tuples(sizes, dims), elements=grid),
       st.integers(1, 6), seeds, st.booleans())
def test_cka_in_unit_interval_and_silent(X, q, seed, debiased):
    Y = np.random.default_rng(seed).integers(-3, 4, size=(len(X), q)).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = M.linear_cka(X, Y, debiased=debiased)
    assert 0.0 <= v <= 1.0


@settings(deadline=None)
@given(st.integers(6, 60), dims, seeds, st.booleans())
def test_cka_one_under_orthogonal_map_scaling_translation(n, d, seed, debiased):
    X = gauss(seed, n, d)
    Q, c, t = similarity(seed + 1, d)
    assert M.linear_cka(X, c * X @ Q + t, debiased=debiased) == pytest.approx(1.0, abs=1e-6)
    assert M.linear_cka(c * X @ Q + t, X, debiased=debiased) == pytest.approx(1.0, abs=1e-6)


@settings(deadline=None)
@given(st.integers(5, 40), dims, dims, seeds)
def test_cka_equals_hsic_with_centring_matrices(n, p, q, seed):
    X, Y = gauss(seed, n, p), gauss(seed + 1, n, q) + gauss(seed, n, p)[:, :1]
    direct = _cka_direct(X, Y, _hsic_biased)
    assert M.linear_cka(X, Y, debiased=False) == pytest.approx(direct, abs=1e-9)
    unbiased = _cka_direct(X, Y, _hsic_unbiased)  # translation: Song's estimator is invariant
    assert M.linear_cka(X + 3.0, Y, debiased=True) == pytest.approx(
        np.clip(unbiased, 0, 1), abs=1e-9)


def test_cka_near_zero_for_independent_data_and_zero_for_constants():
    X, Y = gauss(0, 500, 5), gauss(1, 500, 5)
    assert M.linear_cka(X, Y) < 0.02
    assert M.linear_cka(X, Y, debiased=False) < 0.1  # the biased estimate sits above 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.linear_cka(X, np.ones((500, 3))) == 0.0
        assert M.linear_cka(np.zeros((500, 2)), X, debiased=False) == 0.0


# ---------------------------------------------------------------------------- Procrustes
@settings(deadline=None)
@given(sizes, dims, seeds)
def test_procrustes_zero_under_similarity_and_matches_scipy(n, d, seed):
    X, Y = gauss(seed, n, d), gauss(seed + 1, n, d)
    Q, c, t = similarity(seed + 2, d)
    assert M.procrustes_distance(X, c * X @ Q + t) == pytest.approx(0.0, abs=1e-9)
    dist = M.procrustes_distance(X, Y)
    assert 0.0 <= dist <= 1.0
    # scipy also fits a scale s = ||X̂ᵀŶ||_*: its disparity is 1 - s² = 1 - (1 - dist)²
    _, _, disparity = scipy.spatial.procrustes(X, Y)
    assert disparity == pytest.approx(1.0 - (1.0 - dist) ** 2, abs=1e-9)


def test_procrustes_pads_the_narrower_side_and_handles_constants():
    X, Y = gauss(0, 30, 4), gauss(1, 30, 2)
    padded = np.hstack([Y, np.zeros((30, 2))])
    assert M.procrustes_distance(X, Y) == pytest.approx(M.procrustes_distance(X, padded))
    _, _, disparity = scipy.spatial.procrustes(X, padded)
    assert disparity == pytest.approx(1.0 - (1.0 - M.procrustes_distance(X, Y)) ** 2)
    assert M.procrustes_distance(X, np.ones((30, 3))) == 1.0


# ---------------------------------------------------------------------------- kNN overlap
def _knn_direct(X, Y, k):
    def neighbours(Z):
        d = scipy.spatial.distance.cdist(Z, Z)
        np.fill_diagonal(d, np.inf)
        return [set(np.argsort(row, kind="stable")[:k]) for row in d]
    return np.mean([len(a & b) / k for a, b in zip(neighbours(X), neighbours(Y), strict=True)])


@settings(deadline=None)
@given(st.integers(6, 60), dims, seeds)
def test_knn_overlap_one_under_orthogonal_map_and_direct(n, d, seed):
    X = gauss(seed, n, d)
    Q, c, t = similarity(seed + 1, d)
    ks = (1, 3, 5)
    assert M.knn_overlap(X, c * X @ Q + t, ks=ks) == {k: pytest.approx(1.0) for k in ks}
    Y = gauss(seed + 2, n, 2)
    got = M.knn_overlap(X, Y, ks=ks)
    assert got == {k: pytest.approx(_knn_direct(X, Y, k)) for k in ks}


def test_knn_overlap_near_chance_for_independent_data():
    n = 300
    got = M.knn_overlap(gauss(0, n, 3), gauss(1, n, 3))
    for k, v in got.items():
        assert v < 3 * k / (n - 1), (k, v)


def test_knn_overlap_rejects_k_beyond_n_minus_one():
    X = gauss(0, 6, 2)
    assert set(M.knn_overlap(X, X, ks=(5,))) == {5}
    assert M.knn_overlap(X, X, ks=()) == {}
    with pytest.raises(ValueError, match="n - 1 = 5"):
        M.knn_overlap(X, X, ks=(6,))


# ---------------------------------------------------------------------------- FSC
def _fsc_direct(v1, v2):
    D = v1.shape[0]
    f1, f2 = np.fft.fftn(v1), np.fft.fftn(v2)
    k = np.fft.fftfreq(D) * D
    radius = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    shell = np.rint(radius)
    out = []
    for r in range(D // 2 + 1):
        a, b = f1[shell == r], f2[shell == r]
        out.append(np.sum(a * np.conj(b)).real
                   / np.sqrt(np.sum(np.abs(a) ** 2) * np.sum(np.abs(b) ** 2)))
    return np.array(out)


def test_fsc_equals_a_direct_shell_loop():
    rng = np.random.default_rng(0)
    v1 = rng.normal(size=(16, 16, 16))
    v2 = v1 + rng.normal(size=v1.shape)
    np.testing.assert_allclose(M.fsc(v1, v2), _fsc_direct(v1, v2), atol=1e-10)


def test_fsc_of_a_volume_with_itself_and_with_growing_noise():
    rng = np.random.default_rng(1)
    vol, noise = rng.normal(size=(16, 16, 16)), rng.normal(size=(16, 16, 16))
    np.testing.assert_allclose(M.fsc(vol, vol), 1.0)
    assert M.auc_fsc(M.fsc(vol, vol)) == pytest.approx(1.0)
    aucs = [M.auc_fsc(M.fsc(vol, vol + s * noise)) for s in (0.1, 1.0, 10.0, 100.0)]
    assert all(a > b for a, b in zip(aucs, aucs[1:], strict=False)), aucs
    assert abs(aucs[-1]) < 0.1


def test_fsc_resolutions_on_a_hand_made_curve():
    curve = np.array([1.0, 0.8, 0.4, 0.1, 0.0])  # D = 8, shell r at r / (8 apix) 1/Å
    res = M.fsc_resolutions(curve, apix=2.0)
    assert set(res) == {"0.5", "0.143"}
    assert res["0.5"] == pytest.approx(16 / (1 + 0.3 / 0.4))
    assert res["0.143"] == pytest.approx(16 / (2 + (0.4 - 0.143) / 0.3))
    assert M.fsc_resolutions(np.ones(5), apix=2.0) == {"0.5": 4.0, "0.143": 4.0}
    assert M.auc_fsc(curve) == pytest.approx(np.mean(curve[1:]))


# ---------------------------------------------------------------------------- truth recovery
def test_r2_linear_on_a_clear_relation_and_on_noise():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(200, 3))
    y = mu @ np.array([1.0, -2.0, 0.5]) + 0.01 * rng.normal(size=200)
    assert M.r2_from_latents(mu, y) > 0.99
    assert M.r2_from_latents(mu, rng.normal(size=200)) <= 0.1
    pred = cross_val_predict(LinearRegression(), mu, y, cv=KFold(5, shuffle=True,
                                                                   random_state=3))
    assert M.r2_from_latents(mu, y, seed=3) == pytest.approx(r2_score(y, pred))
    np.testing.assert_allclose(M.cv_predictions(mu, y, method="linear", seed=3), pred)


def test_r2_knn_on_a_nonlinear_relation():
    rng = np.random.default_rng(1)
    mu = rng.uniform(-3, 3, size=(400, 2))
    y = np.sin(2 * mu[:, 0])
    assert M.r2_from_latents(mu, y, method="knn") > 0.85
    assert M.r2_from_latents(mu, y, method="linear") < 0.3
    # k larger than a training fold is cut down rather than failing
    assert np.isfinite(M.r2_from_latents(mu[:12], y[:12], method="knn", k=50))


def test_r2_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="linear, knn"):
        M.r2_from_latents(gauss(0, 20, 2), np.zeros(20), method="forest")


def test_cluster_ami_matches_sklearn_and_its_extremes():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    mu = rng.normal(size=(120, 2)) * 0.2 + np.array([[0, 0], [10, 0], [0, 10]])[labels]
    km = KMeans(3, n_init=10, random_state=4).fit_predict(mu)
    assert M.cluster_ami(mu, labels, seed=4) == adjusted_mutual_info_score(labels, km)
    np.testing.assert_array_equal(M.cluster_labels(mu, 3, seed=4), km)
    assert M.cluster_ami(mu, labels) == pytest.approx(1.0)
    assert abs(M.cluster_ami(mu, rng.permutation(labels))) < 0.1


# ---------------------------------------------------------------------------- rotations
@settings(deadline=None, max_examples=10)
@given(st.integers(2, 6), seeds)
def test_rotation_of_the_latent_space_changes_nothing(d, seed):
    rng = np.random.default_rng(seed)
    mu, mu_t, other = rng.normal(size=(3, 40, d))
    y = mu[:, 0] - mu[:, -1] ** 2
    R = special_ortho_group.rvs(d, random_state=seed)

    def all_metrics(a, a_t, b):
        return [M.displacement(a, a_t), M.retrieval_at_k(a, a_t, 1),
                M.retrieval_at_k(a, a_t, 5), M.linear_cka(a, b),
                M.linear_cka(a, b, debiased=False), *M.knn_overlap(a, b, ks=(3, 5)).values(),
                M.procrustes_distance(a, b), M.r2_from_latents(a, y, seed=seed)]

    before = all_metrics(mu, mu_t, other)
    after = all_metrics(mu @ R, mu_t @ R, other)
    assert after == pytest.approx(before, abs=1e-8)


# ---------------------------------------------------------------------------- bootstrap
def test_bootstrap_value_interval_and_determinism():
    x = np.random.default_rng(0).normal(loc=2.0, size=200)
    iv = M.bootstrap(lambda b: float(x[b].mean()), len(x), n_boot=300, seed=1)
    assert iv.value == x.mean()
    assert iv.lo < iv.value < iv.hi
    assert iv.samples.shape == (300,)
    again = M.bootstrap(lambda b: float(x[b].mean()), len(x), n_boot=300, seed=1)
    assert again == iv and np.array_equal(again.samples, iv.samples)
    assert M.bootstrap(lambda b: float(x[b].mean()), len(x), n_boot=300, seed=2) != iv
    assert json.loads(json.dumps(iv.to_dict())) == iv.to_dict()
    assert "samples" not in repr(iv)


def test_bootstrap_ignores_nan_replicates():
    x = np.arange(10.0)
    iv = M.bootstrap(lambda b: float("nan") if 9 in b else float(x[b].mean()), 10, n_boot=50)
    assert np.isnan(iv.value) and np.isnan(iv.lo)  # no interval around an undefined value
    iv = M.bootstrap(lambda b: float("nan") if 9 in b and len(b) < 10 else float(x[b].mean()),
                     10, n_boot=50)
    assert iv.value == 4.5 and iv.lo < 4.5 < iv.hi  # from the replicates without item 9
    assert np.isnan(iv.samples).any() and np.isfinite(iv.samples).any()
    iv = M.bootstrap(lambda b: float("nan"), 5, n_boot=10)
    assert np.isnan(iv.lo) and np.isnan(iv.hi)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call", [
    lambda a, b: M.displacement(a, b), lambda a, b: M.retrieval_at_k(a, b),
])
def test_shape_mismatch_is_a_clear_error(call):
    with pytest.raises(ValueError, match=r"same shape, got \(10, 2\) and \(10, 3\)"):
        call(gauss(0, 10, 2), gauss(0, 10, 3))


def test_bad_inputs_raise_value_errors():
    X = gauss(0, 10, 2)
    with pytest.raises(ValueError, match="same number of rows"):
        M.linear_cka(X, X[:9])
    with pytest.raises(ValueError, match="same number of rows"):
        M.procrustes_distance(X, X[:9])
    with pytest.raises(ValueError, match="at least 4 rows"):
        M.linear_cka(X[:3], X[:3])
    with pytest.raises(ValueError, match="NaN"):
        M.displacement(np.where(X > 1, np.nan, X), X)
    with pytest.raises(ValueError, match="2-D"):
        M.knn_overlap(X[:, 0], X[:, 0])
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        M.r2_from_latents(X, np.zeros(9))
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        M.cluster_ami(X, np.zeros(9))
    with pytest.raises(ValueError, match="cubic"):
        M.fsc(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="level"):
        M.bootstrap(lambda b: 0.0, 5, level=1.5)
