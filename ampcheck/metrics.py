"""Metrics: pure functions on arrays. Each one's docstring says which way is better; a check
states the direction of each metric it reports (:class:`~ampcheck.results.Metric`).

Latents are ``(n, d)`` float arrays, one row per image. Bad input (a wrong shape, too few rows,
NaN or infinite values) raises :class:`~ampcheck.errors.InputError`, a ``ValueError``.

Fourier shell correlation (FSC) convention, used everywhere in ampcheck:

* shells: voxel ``k`` of the centred 3-D DFT (origin at index ``D/2``) belongs to shell
  ``r = round(|k|)`` in Fourier pixels; shells ``0 .. D/2`` are reported (the corners beyond
  Nyquist are ignored); shell ``r`` has spatial frequency ``r / (D·apix)`` 1/Å;
* ``FSC(r) = Re Σ F1·conj(F2) / sqrt(Σ|F1|² · Σ|F2|²)`` over the shell (0 where either volume
  has no power in the shell);
* crossing: the first shell ``r >= 1`` whose FSC falls below the threshold; the resolution is
  ``1 / s`` at the frequency ``s`` where the FSC curve, linearly interpolated between that shell
  and the one before, meets the threshold. A curve that never falls below reaches Nyquist:
  ``2·apix`` is reported;
* area: :func:`auc_fsc` is the mean of shells ``1 .. D/2`` (shell 0, the mean density, is left
  out), i.e. the area under the curve over the normalised frequency ``r / (D/2)`` in ``(0, 1]``
  by the right-endpoint rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
from scipy.spatial.distance import cdist, pdist

from .cryoem.fft import fft3_center
from .errors import InputError
from .results import centred, centred_interval

__all__ = [
    "Interval", "bootstrap",
    "displacement", "retrieval_at_k", "retrieval_chance",
    "linear_cka", "knn_overlap", "procrustes_distance",
    "fsc", "fsc_resolution", "fsc_resolutions", "auc_fsc",
    "r2_from_latents", "cv_predictions", "cluster_ami", "cluster_labels",
]

# ---------------------------------------------------------------------------- validation
def _finite(name: str, a: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} holds NaN or infinite values")
    return a


def _latents(name: str, x: Any, min_rows: int = 2) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise InputError(f"{name} must be a 2-D (n, d) array, got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise InputError(f"{name} needs at least {min_rows} rows, got {a.shape[0]}")
    return _finite(name, a)


def _same_rows(names: str, x: np.ndarray, y: np.ndarray, same_width: bool = False) -> None:
    if len(x) != len(y) or (same_width and x.shape != y.shape):
        what = "shape" if same_width else "number of rows"
        raise InputError(f"{names} must have the same {what}, got {x.shape} and {y.shape}")


def _vector(name: str, y: Any, n: int) -> np.ndarray:
    a = np.asarray(y)
    if a.shape != (n,):
        raise InputError(f"{name} must have shape ({n},) to match the latents, got {a.shape}")
    return a


# ---------------------------------------------------------------------------- invariance
def displacement(mu: np.ndarray, mu_t: np.ndarray, *, max_pairs: int = 20000,
                 seed: int = 0) -> float:
    """How far a transform moves latents, relative to the spread of the latents (lower is better).

    ``mu, mu_t``: ``(n, d)`` latents of images and of their transformed copies (row ``i`` of one
    is row ``i`` of the other), ``n >= 2``. The value is
    ``median_i ||mu_t[i] - mu[i]|| / median_{i != j} ||mu[i] - mu[j]||``: 0 for an invariant
    encoder, about 1 when a transformed image lands as far away as a random other image. The
    denominator runs over all pairs ``i < j`` when there are at most ``max_pairs`` of them, else
    over ``max_pairs`` random pairs ``i != j`` drawn with ``np.random.default_rng(seed)``.
    When every ``mu`` is the same point the denominator is 0: the value is ``inf`` if the
    numerator is positive and ``nan`` if it is 0 too. Invariant to rotations, translations and
    isotropic scaling of the latent space.
    """
    mu, mu_t = _latents("mu", mu), _latents("mu_t", mu_t)
    _same_rows("mu and mu_t", mu, mu_t, same_width=True)
    if max_pairs < 1:
        raise InputError(f"max_pairs must be at least 1, got {max_pairs}")
    n = len(mu)
    num = float(np.median(np.linalg.norm(mu_t - mu, axis=1)))
    if n * (n - 1) // 2 <= max_pairs:
        pair_dist = pdist(mu)
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, size=max_pairs)
        j = (i + rng.integers(1, n, size=max_pairs)) % n  # uniform over j != i
        pair_dist = np.linalg.norm(mu[i] - mu[j], axis=1)
    den = float(np.median(pair_dist))
    if den == 0.0:
        return float("nan") if num == 0.0 else float("inf")
    return num / den


def retrieval_at_k(mu: np.ndarray, mu_t: np.ndarray, k: int = 1) -> float:
    """Fraction of transformed images whose original is among their ``k`` nearest latents
    (higher is better; chance is :func:`retrieval_chance` ``= k / n``).

    ``mu, mu_t``: ``(n, d)`` as in :func:`displacement`. Query ``mu_t[i]`` searches the gallery
    ``{mu[j]}`` by Euclidean distance; it is a hit iff fewer than ``k`` other gallery points are
    at least as close as ``mu[i]``: ``#{j != i : ||mu_t[i]-mu[j]|| <= ||mu_t[i]-mu[i]||} < k``.
    Ties count against the hit (pessimistic), so a collapsed encoder (all latents equal) scores
    0, not 1. ``1 <= k <= n``.
    """
    mu, mu_t = _latents("mu", mu, 1), _latents("mu_t", mu_t, 1)
    _same_rows("mu and mu_t", mu, mu_t, same_width=True)
    n = len(mu)
    if not 1 <= k <= n:
        raise InputError(f"k must be between 1 and n = {n}, got {k}")
    hits = 0
    step = max(1, 2_000_000 // n)  # bounds the distance block to ~16 MB
    for start in range(0, n, step):
        d = cdist(mu_t[start:start + step], mu)  # (block, n)
        rows = np.arange(len(d))
        own = d[rows, start + rows]
        closer = (d <= own[:, None]).sum(axis=1) - 1  # minus j == i itself
        hits += int((closer < k).sum())
    return hits / n


def retrieval_chance(n: int, k: int) -> float:
    """Expected :func:`retrieval_at_k` of an encoder unrelated to the images: ``k / n``."""
    return k / n


# ---------------------------------------------------------------------------- similarity
def _centred(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=0, keepdims=True)


def linear_cka(X: np.ndarray, Y: np.ndarray, *, debiased: bool = True) -> float:
    """Linear centred kernel alignment of two representations of the same images, in [0, 1]
    (higher is better; 1: equal up to an orthogonal map, isotropic scaling and translation).

    ``X``: ``(n, p)``, ``Y``: ``(n, q)``. Linear CKA (Kornblith et al. 2019) is
    ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with ``K = X Xᵀ``, ``L = Y Yᵀ`` of the centred
    features. ``debiased=True`` (``n >= 4``) uses the unbiased HSIC estimator of Song et al.
    (2012), as in Nguyen et al. (2021); its estimate for unrelated representations scatters
    around 0 and can fall slightly below it. The value is clipped to [0, 1]. ``debiased=False``
    (``n >= 2``) is the plain estimator ``||XᵀY||²_F / (||XᵀX||_F ||YᵀY||_F)``, biased upwards
    for small ``n``. A representation without variance (or a debiased self-similarity that is
    not positive, possible only for tiny ``n``) gives 0.0.
    """
    X = _centred(_latents("X", X, 4 if debiased else 2))
    Y = _centred(_latents("Y", Y, 4 if debiased else 2))
    _same_rows("X and Y", X, Y)
    n = len(X)
    xy = np.sum((X.T @ Y) ** 2)
    xx, yy = np.sum((X.T @ X) ** 2), np.sum((Y.T @ Y) ** 2)
    if debiased:
        # Unbiased HSIC up to the common factor 1 / (n (n - 3)), written with the features:
        # for centred features, tr(K̃L̃) + 1ᵀK̃1 1ᵀL̃1 / ((n-1)(n-2)) - 2 / (n-2) 1ᵀK̃L̃1 with
        # K̃ = K - diag(K) reduces to the expression below.
        kx, ky = np.sum(X ** 2, axis=1), np.sum(Y ** 2, axis=1)  # diag(K), diag(L)

        def hsic(t: float, a: np.ndarray, b: np.ndarray) -> float:
            return t - n / (n - 2) * (a @ b) + a.sum() * b.sum() / ((n - 1) * (n - 2))

        xy, xx, yy = hsic(xy, kx, ky), hsic(xx, kx, kx), hsic(yy, ky, ky)
    if xx <= 0 or yy <= 0:
        return 0.0
    return float(np.clip(xy / np.sqrt(xx * yy), 0.0, 1.0))


def knn_overlap(X: np.ndarray, Y: np.ndarray, ks: Sequence[int] = (5, 10, 20)
                ) -> dict[int, float]:
    """Shared nearest neighbours of two representations of the same images, per ``k``, in [0, 1]
    (higher is better).

    ``X``: ``(n, p)``, ``Y``: ``(n, q)``. For each ``k`` in ``ks`` (``1 <= k <= n - 1``): the mean
    over ``i`` of ``|N_k^X(i) ∩ N_k^Y(i)| / k``, where ``N_k(i)`` are the ``k`` Euclidean nearest
    neighbours of row ``i`` other than ``i`` itself (ties broken arbitrarily). 1: the same
    neighbourhoods; chance (unrelated representations) is ``k / (n - 1)``. Returns ``{k: value}``
    (empty for empty ``ks``).
    """
    from sklearn.neighbors import NearestNeighbors

    X, Y = _latents("X", X), _latents("Y", Y)
    _same_rows("X and Y", X, Y)
    n = len(X)
    ks = [int(k) for k in ks]
    if any(not 1 <= k <= n - 1 for k in ks):
        raise InputError(f"every k in ks must be between 1 and n - 1 = {n - 1}, got {ks}")
    if not ks:
        return {}
    kmax = max(ks)
    # kneighbors() without a query excludes each point from its own neighbours
    nx = NearestNeighbors(n_neighbors=kmax).fit(X).kneighbors(return_distance=False)
    ny = NearestNeighbors(n_neighbors=kmax).fit(Y).kneighbors(return_distance=False)
    out = {}
    for k in ks:
        shared = (nx[:, :k, None] == ny[:, None, :k]).sum(axis=(1, 2))  # neighbours are distinct
        out[k] = float(shared.mean()) / k
    return out


def procrustes_distance(X: np.ndarray, Y: np.ndarray) -> float:
    """Orthogonal Procrustes distance between two representations of the same images, in [0, 1]
    (lower is better; 0: equal up to an orthogonal map, isotropic scaling and translation).

    ``X``: ``(n, p)``, ``Y``: ``(n, q)``. Each is centred (column means) and scaled to unit
    Frobenius norm, the narrower zero-padded to the wider; the value is
    ``min_R ||X̂ - Ŷ R||²_F / 2 = 1 - ||X̂ᵀŶ||_*`` over orthogonal ``R`` (``||·||_*``: nuclear
    norm). A representation without variance gives 1.0. ``scipy.spatial.procrustes``, which also
    fits a scale, reports ``disparity = 1 - ||X̂ᵀŶ||_*² = d (2 - d)`` for this value ``d``.
    """
    X, Y = _centred(_latents("X", X)), _centred(_latents("Y", Y))
    _same_rows("X and Y", X, Y)
    nx, ny = np.linalg.norm(X), np.linalg.norm(Y)
    if nx == 0 or ny == 0:
        return 1.0
    # zero-padding adds zero rows / columns to X̂ᵀŶ and leaves its singular values unchanged
    nuclear = scipy.linalg.svd((X / nx).T @ (Y / ny), compute_uv=False).sum()
    return float(np.clip(1.0 - nuclear, 0.0, 1.0))


# ---------------------------------------------------------------------------- FSC
def fsc(vol1: np.ndarray, vol2: np.ndarray) -> np.ndarray:
    """FSC curve ``(D/2 + 1,)`` of two ``(D, D, D)`` volumes, shells ``0 .. D/2``.

    Higher is better (1: identical up to a positive scale; ~0: unrelated).
    """
    vol1, vol2 = np.asarray(vol1, dtype=np.float64), np.asarray(vol2, dtype=np.float64)
    if vol1.shape != vol2.shape or vol1.ndim != 3 or len(set(vol1.shape)) != 1:
        raise InputError(f"FSC needs two cubic volumes of one shape, got {vol1.shape} and "
                         f"{vol2.shape}")
    _finite("vol1", vol1)
    _finite("vol2", vol2)
    D = vol1.shape[0]
    f1, f2 = fft3_center(vol1), fft3_center(vol2)
    ax = np.arange(D) - D // 2
    r = np.rint(np.sqrt(ax[:, None, None] ** 2 + ax[None, :, None] ** 2
                        + ax[None, None, :] ** 2)).astype(np.int64).ravel()
    keep = r <= D // 2
    r = r[keep]
    cross = np.bincount(r, (f1 * np.conj(f2)).real.ravel()[keep], minlength=D // 2 + 1)
    p1 = np.bincount(r, (np.abs(f1) ** 2).ravel()[keep], minlength=D // 2 + 1)
    p2 = np.bincount(r, (np.abs(f2) ** 2).ravel()[keep], minlength=D // 2 + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p1 * p2 > 0, cross / np.sqrt(p1 * p2), 0.0)


def _curve(curve: Any) -> np.ndarray:
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim != 1 or len(c) < 2:
        raise InputError(f"an FSC curve must be 1-D with at least 2 shells, got shape {c.shape}")
    return _finite("curve", c)


def fsc_resolution(curve: np.ndarray, apix: float, threshold: float = 0.5) -> float:
    """Resolution in Å where an FSC curve crosses ``threshold`` (lower is better).

    ``curve`` is :func:`fsc`'s output for volumes of ``D = 2·(len(curve) - 1)`` voxels of
    ``apix`` Å; see the module docstring for the crossing convention.
    """
    curve = _curve(curve)
    if not apix > 0:
        raise InputError(f"apix must be positive, got {apix}")
    D = 2 * (len(curve) - 1)
    freqs = np.arange(len(curve)) / (D * apix)
    below = np.flatnonzero(curve[1:] < threshold)
    if below.size == 0:
        return 2.0 * apix
    i = below[0] + 1  # first shell below the threshold (>= 1)
    f0, f1, c0, c1 = freqs[i - 1], freqs[i], curve[i - 1], curve[i]
    s = f1 if c0 == c1 else f0 + (c0 - threshold) * (f1 - f0) / (c0 - c1)
    return float(np.inf) if s <= 0 else float(1.0 / s)


def fsc_resolutions(curve: np.ndarray, apix: float) -> dict[str, float]:
    """:func:`fsc_resolution` in Å at the two usual thresholds (lower is better):
    ``{"0.5": ..., "0.143": ...}``."""
    return {"0.5": fsc_resolution(curve, apix, 0.5),
            "0.143": fsc_resolution(curve, apix, 0.143)}


def auc_fsc(curve: np.ndarray) -> float:
    """Area under an FSC curve, normalised to 1 (higher is better; 1: identical volumes).

    ``curve``: ``(D/2 + 1,)`` from :func:`fsc`. The value is ``mean(curve[1:])``: the area over
    the normalised frequency ``x = r / (D/2)`` in ``(0, 1]`` by the right-endpoint rule, each
    shell ``r = 1 .. D/2`` weighing ``1 / (D/2)``; shell 0 (the mean density) is left out. It
    lies in [-1, 1]; ~0 for unrelated volumes.
    """
    return float(np.mean(_curve(curve)[1:]))


# ---------------------------------------------------------------------------- truth recovery
_METHODS = ("linear", "knn")


def cv_predictions(mu: np.ndarray, y: np.ndarray, *, method: str = "linear", cv: int = 5,
                   k: int = 10, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions ``(n,)`` of a scalar ``y`` ``(n,)`` from latents ``mu`` ``(n, d)``.

    ``cross_val_predict`` over ``KFold(cv, shuffle=True, random_state=seed)`` of
    ``LinearRegression`` (``method="linear"``) or ``KNeighborsRegressor(k)`` (``"knn"``, with
    ``k`` cut to the smallest training fold). Bootstrap with ``r2_score(y[b], pred[b])``.
    """
    from sklearn.model_selection import KFold, cross_val_predict

    if cv < 2:
        raise InputError(f"cv must be at least 2, got {cv}")
    mu = _latents("mu", mu, cv)
    y = _finite("y", _vector("y", y, len(mu)).astype(np.float64))
    n = len(mu)
    reg = _regressor(method, min(k, n - -(-n // cv)) if k >= 1 else k)  # smallest fold
    folds = KFold(cv, shuffle=True, random_state=seed)
    return cross_val_predict(reg, mu, y, cv=folds)


def fit_predict(mu: np.ndarray, y: np.ndarray, mu_new: np.ndarray, *, method: str = "linear",
                k: int = 10) -> np.ndarray:
    """Predictions ``(m,)`` for latents ``mu_new`` ``(m, d)`` of the regressor of
    :func:`cv_predictions` fitted on all of ``mu`` ``(n, d)``, ``y`` ``(n,)``."""
    mu = _latents("mu", mu, 2)
    y = _finite("y", _vector("y", y, len(mu)).astype(np.float64))
    mu_new = _latents("mu_new", mu_new, 1)
    if mu_new.shape[1] != mu.shape[1]:
        raise InputError(f"mu_new has {mu_new.shape[1]} columns, mu has {mu.shape[1]}")
    return _regressor(method, min(k, len(mu))).fit(mu, y).predict(mu_new)


def _regressor(method: str, k: int):
    from sklearn.linear_model import LinearRegression
    from sklearn.neighbors import KNeighborsRegressor

    if method not in _METHODS:
        raise InputError(f"unknown method {method!r}; expected one of {', '.join(_METHODS)}")
    if method == "linear":
        return LinearRegression()
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    return KNeighborsRegressor(k)


def r2_from_latents(mu: np.ndarray, y: np.ndarray, *, method: str = "linear", cv: int = 5,
                    k: int = 10, seed: int = 0) -> float:
    """Cross-validated R² of a known scalar coordinate ``y`` ``(n,)`` from latents ``mu``
    ``(n, d)`` (higher is better; 1: ``y`` is read off exactly, <= ~0: not at all).

    ``r2_score(y, cv_predictions(...))``; see :func:`cv_predictions`. ``"linear"`` is invariant
    to any invertible linear map of the latents, ``"knn"`` to rotations and isotropic scaling.
    """
    from sklearn.metrics import r2_score

    pred = cv_predictions(mu, y, method=method, cv=cv, k=k, seed=seed)
    return float(r2_score(np.asarray(y, dtype=np.float64), pred))


def cluster_labels(mu: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """K-means cluster assignments ``(n,)`` of latents ``mu`` ``(n, d)``
    (``KMeans(n_clusters, n_init=10, random_state=seed)``).

    On one OpenMP thread: on latents of a few thousand rows more threads only wait for each
    other.
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    mu = _latents("mu", mu, 1)
    if not 1 <= n_clusters <= len(mu):
        raise InputError(f"n_clusters must be between 1 and n = {len(mu)}, got {n_clusters}")
    with threadpool_limits(1, user_api="openmp"):
        return KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(mu)


def cluster_ami(mu: np.ndarray, labels: np.ndarray, *, n_clusters: int | None = None,
                seed: int = 0) -> float:
    """Adjusted mutual information between known classes ``labels`` ``(n,)`` and k-means
    clusters of latents ``mu`` ``(n, d)`` (higher is better; 1: the clusters are the classes,
    ~0: chance).

    ``n_clusters`` defaults to the number of distinct labels; see :func:`cluster_labels`.
    Bootstrap with ``adjusted_mutual_info_score(labels[b], clusters[b])``.
    """
    from sklearn.metrics import adjusted_mutual_info_score

    mu = _latents("mu", mu, 1)
    labels = _vector("labels", labels, len(mu))
    if n_clusters is None:
        n_clusters = len(np.unique(labels))
    clusters = cluster_labels(mu, n_clusters, seed)
    return float(adjusted_mutual_info_score(labels, clusters))


# ---------------------------------------------------------------------------- uncertainty
@dataclass(frozen=True)
class Interval:
    """A statistic with its resampling interval.

    ``value``: the statistic on all the data; ``lo, hi``: the interval, which always holds
    ``value`` (nan when ``value`` or every replicate is not finite); ``samples``: the
    replicates ``(n_boot,)``, re-centred on ``value`` (see :func:`bootstrap`; left out of
    ``==`` and of ``repr``).
    """

    value: float
    lo: float
    hi: float
    samples: np.ndarray = field(compare=False, repr=False)

    def to_dict(self) -> dict[str, float]:
        """``{"value", "lo", "hi"}`` as plain floats. nan and inf stay floats: ``json.dumps``
        writes them as ``NaN`` / ``Infinity`` (not strict JSON; ``allow_nan=False`` refuses)."""
        return {"value": float(self.value), "lo": float(self.lo), "hi": float(self.hi)}


def bootstrap(stat: Callable[[np.ndarray], float], n: int, *, n_boot: int = 1000,
              level: float = 0.95, seed: int = 0) -> Interval:
    """Half-sampling interval of ``stat``, a function of an index array into ``n`` items.

    ``value = stat(np.arange(n))``. Each of ``n_boot`` replicates is ``stat(b)`` on ``n // 2``
    items drawn *without* replacement (``np.random.default_rng(seed)``). For a mean, half the
    items drawn without replacement vary as much as the mean of all ``n`` does (the
    finite-population correction ``1 - m/n`` is ``1/2`` at ``m = n/2``; an odd ``n`` adds a
    factor ``(n+1)/(n-1)``); for other smooth statistics this holds approximately, as for any
    resampling interval. Unlike the with-replacement bootstrap, a replicate never counts an
    item twice, which would bias the statistics that correct for chance agreement (the
    adjusted mutual information). What bias is left (a statistic of half the items) is
    removed by centring the replicates on ``value`` (:func:`~ampcheck.results.centred`);
    ``lo, hi`` are their ``(1 ± level) / 2`` quantiles, so the interval holds ``value``.
    Fewer than 4 items (a replicate of 1) give no interval: ``lo``, ``hi`` and ``samples``
    NaN. NaN replicates are ignored (and kept as NaN in ``samples``).
    """
    if n < 1 or n_boot < 1:
        raise InputError(f"bootstrap needs n >= 1 and n_boot >= 1, got n={n}, n_boot={n_boot}")
    if not 0 < level < 1:
        raise InputError(f"level must lie strictly between 0 and 1, got {level}")
    value = float(stat(np.arange(n)))
    if n < 4:
        return Interval(value, float("nan"), float("nan"), np.full(n_boot, np.nan))
    rng = np.random.default_rng(seed)
    m = n // 2
    raw = np.array([float(stat(np.sort(rng.permutation(n)[:m]))) for _ in range(n_boot)])
    samples = centred(value, raw)
    lo, hi = centred_interval(value, samples, level)
    return Interval(value, lo, hi, samples)
