"""Evil-twin assignments: derangements, permutation twins, matched-noise twins and the pixel
moments they are matched to."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from ampcheck.data import twins as T
from ampcheck.data.twins import NoiseTwins, PermutationTwins, derangement, empirical_moments
from ampcheck.errors import ConfigError, InputError

# ---------------------------------------------------------------------------- derangements


@given(st.integers(0, 60).filter(lambda n: n != 1), st.integers(0, 2**32))
def test_derangement_is_a_permutation_without_fixed_points(n, seed):
    perm = derangement(n, seed)
    assert perm.dtype == np.int64 and perm.shape == (n,)
    assert np.array_equal(np.sort(perm), np.arange(n))
    assert not np.any(perm == np.arange(n))
    assert np.array_equal(perm, derangement(n, seed))  # deterministic


def test_derangement_small_cases_and_seeds():
    assert derangement(0, 0).shape == (0,)
    for seed in range(5):
        assert derangement(2, seed).tolist() == [1, 0]
    assert not np.array_equal(derangement(50, 0), derangement(50, 1))
    # general derangements, not involutions: for n = 3 both derangements are 3-cycles
    for n in (3, 10):
        perm = derangement(n, 0)
        assert not np.array_equal(perm[perm], np.arange(n))


def test_derangement_uniform_over_the_nine_of_four():
    all9 = [p for p in itertools.permutations(range(4)) if all(p[i] != i for i in range(4))]
    assert len(all9) == 9
    draws = [tuple(derangement(4, seed).tolist()) for seed in range(1800)]
    counts = [draws.count(p) for p in all9]
    assert sum(counts) == 1800  # every draw is one of the nine
    assert stats.chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize("n, seed, match", [(1, 0, "single image"), (-1, 0, ">= 0"),
                                             (2.0, 0, "integer"), (3, -1, "non-negative"),
                                             (3, 1.5, "integer"), (True, 0, "integer")])
def test_derangement_rejects(n, seed, match):
    with pytest.raises(ConfigError, match=match):
        derangement(n, seed)


def test_permutation_twins():
    tw = PermutationTwins(20, seed=3)
    perm = tw.permutation
    assert np.array_equal(perm, derangement(20, 3)) and len(tw) == 20
    idx = np.array([[0, 5], [19, 5]])
    assert np.array_equal(tw.twin_index(idx), perm[idx])
    assert tw.twin_index(7) == perm[7] and isinstance(tw.twin_index(7), int)
    t = tw.twin_index(torch.tensor([1, 2, 3]))
    assert isinstance(t, torch.Tensor) and t.tolist() == perm[[1, 2, 3]].tolist()
    assert tw.twin_index([]).shape == (0,)
    with pytest.raises(ValueError):
        perm[0] = perm[1]  # read-only: twins never change after construction
    with pytest.raises(IndexError, match=r"\[0, 20\)"):
        tw.twin_index([0, 20])
    with pytest.raises(ConfigError, match="integers"):
        tw.twin_index(np.array([0.5]))
    with pytest.raises(ConfigError, match="single image"):
        PermutationTwins(1, 0)


def test_permutation_twins_state_dict_round_trip(tmp_path):
    tw = PermutationTwins(30, seed=11)
    path = tmp_path / "twins.pt"
    torch.save(tw.state_dict(), path)
    back = PermutationTwins.from_state_dict(torch.load(path, weights_only=True))
    assert np.array_equal(back.permutation, tw.permutation)
    assert (back.n, back.seed) == (30, 11)
    state = tw.state_dict()
    state["permutation"] = np.arange(30)  # identity: every image its own twin
    with pytest.raises(InputError, match="derangement"):
        PermutationTwins.from_state_dict(state)
    with pytest.raises(InputError, match="missing"):
        PermutationTwins.from_state_dict({"n": 3})


# ---------------------------------------------------------------------------- noise twins


def test_noise_twins_are_fixed_per_index():
    tw = NoiseTwins((8, 8), mean=1.5, std=0.5, seed=7)
    a = tw.twins(np.arange(10))
    assert a.dtype == np.float32 and a.shape == (10, 8, 8)
    b = tw.twins(np.array([9, 3, 0]))
    np.testing.assert_array_equal(b, a[[9, 3, 0]])  # independent of batch composition and order
    np.testing.assert_array_equal(tw.twins(4), a[4])
    np.testing.assert_array_equal(NoiseTwins((8, 8), 1.5, 0.5, seed=7).twins([2, 2]), a[[2, 2]])
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(NoiseTwins((8, 8), 1.5, 0.5, seed=8).twins(0), a[0])
    t = tw.twins_torch(torch.tensor([3, 1]))
    assert t.dtype == torch.float32 and torch.equal(t, torch.from_numpy(a[[3, 1]]))
    assert tw.twins([]).shape == (0, 8, 8)
    assert NoiseTwins(5, 0.0, 1.0, 0).twins([0]).shape == (1, 5, 5)


def test_noise_twins_do_not_change_across_versions_of_this_code():
    # Twins must reproduce after a resume: pin a few values of the Philox-counter stream.
    z = NoiseTwins((2, 2), mean=0.0, std=1.0, seed=0).twins([0, 12345])
    np.testing.assert_allclose(z, GOLDEN, rtol=1e-6)


GOLDEN = np.array([[[1.38853300, -1.19902921], [-0.51905811, -0.58729911]],
                   [[-0.65140891, 1.38916254], [-0.09386142, 0.72628051]]])


def test_noise_twins_match_requested_moments():
    mean, std = -2.0, 3.0
    tw = NoiseTwins((32, 32), mean, std, seed=1)
    z = tw.twins(np.arange(0, 4000, 10)).astype(np.float64)  # N = 400 * 1024 pixels
    n = z.size
    # 5 standard errors: SE(mean) = std / sqrt(N), SE(std) ≈ std / sqrt(2N) for Gaussian data
    assert abs(z.mean() - mean) < 5 * std / math.sqrt(n)
    assert abs(z.std() - std) < 5 * std / math.sqrt(2 * n)
    # different indices are independent: correlation of two twins ~ N(0, 1/pixels)
    flat = (z.reshape(len(z), -1) - mean) / std
    r = flat[:50] @ flat[50:100].T / flat.shape[1]
    assert np.abs(r).max() < 5 / math.sqrt(flat.shape[1])


def test_noise_twins_state_dict_round_trip(tmp_path):
    tw = NoiseTwins((6, 6), mean=0.3, std=2.0, seed=5)
    path = tmp_path / "noise.pt"
    torch.save(tw.state_dict(), path)
    back = NoiseTwins.from_state_dict(torch.load(path, weights_only=True))
    np.testing.assert_array_equal(back.twins(np.arange(7)), tw.twins(np.arange(7)))
    assert (back.shape, back.mean, back.std, back.seed) == ((6, 6), 0.3, 2.0, 5)
    with pytest.raises(InputError, match="format"):
        NoiseTwins.from_state_dict({**tw.state_dict(), "format": "other"})
    with pytest.raises(InputError, match="missing"):
        NoiseTwins.from_state_dict({"shape": (6, 6)})


@pytest.mark.parametrize("kwargs, match", [
    ({"shape": (0, 4)}, "positive"), ({"shape": (4, 4, 4)}, r"\(D, D\)"),
    ({"std": 0.0}, "std"), ({"std": -1.0}, "std"), ({"std": float("nan")}, "std"),
    ({"mean": float("inf")}, "mean"), ({"mean": "a"}, "numbers"), ({"seed": -3}, "seed"),
])
def test_noise_twins_reject(kwargs, match):
    args = {"shape": (4, 4), "mean": 0.0, "std": 1.0, "seed": 0, **kwargs}
    with pytest.raises(ConfigError, match=match):
        NoiseTwins(**args)


def test_noise_twins_reject_bad_indices():
    tw = NoiseTwins((4, 4), 0.0, 1.0, 0)
    with pytest.raises(IndexError, match=">= 0"):
        tw.twins([-1])
    with pytest.raises(ConfigError, match="integers"):
        tw.twins(np.array([1.0]))


# ---------------------------------------------------------------------------- empirical moments


class LazyStack:
    """A stack that is only readable by integer-array indexing, recording chunk sizes."""

    def __init__(self, data):
        self.data, self.reads = data, []

    def __len__(self):
        return len(self.data)

    def __getitem__(self, idx):
        assert isinstance(idx, np.ndarray) and idx.dtype == np.int64
        self.reads.append(len(idx))
        return self.data[idx]


def _dataset(n=300, D=12, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.gamma(2.0, 1.0, size=(n, 1, 1)) * np.hanning(D)[:, None] * np.hanning(D)
    return (signal + rng.normal(4.0, 0.7, size=(n, D, D))).astype(np.float32)


def test_empirical_moments_exact_and_chunked(monkeypatch):
    data = _dataset()
    ref = (data.astype(np.float64).mean(), data.astype(np.float64).std())
    np.testing.assert_allclose(empirical_moments(data), ref, rtol=1e-12)
    np.testing.assert_allclose(empirical_moments(torch.from_numpy(data)), ref, rtol=1e-12)
    monkeypatch.setattr(T, "_CHUNK_PIXELS", 7 * 144 + 5)  # 7 images per chunk
    stack = LazyStack(data)
    np.testing.assert_allclose(empirical_moments(stack), ref, rtol=1e-12)
    assert max(stack.reads) == 7


def test_empirical_moments_sample():
    data = _dataset(n=400)
    m1 = empirical_moments(LazyStack(data), sample=50, seed=3)
    assert m1 == empirical_moments(data, sample=50, seed=3)  # deterministic by seed
    assert m1 != empirical_moments(data, sample=50, seed=4)
    assert empirical_moments(data, sample=10_000) == empirical_moments(data)
    full = empirical_moments(data)
    assert abs(m1[0] - full[0]) < 0.2 and abs(m1[1] - full[1]) < 0.2


def test_matched_noise_reproduces_dataset_moments():
    data = _dataset(n=200)
    mean, std = data.astype(np.float64).mean(), data.astype(np.float64).std()
    tw = NoiseTwins.matched(data, seed=2)
    assert tw.shape == (12, 12)
    np.testing.assert_allclose((tw.mean, tw.std), (mean, std), rtol=1e-12)
    z = tw.twins(np.arange(len(data))).astype(np.float64)
    assert abs(z.mean() - mean) < 5 * std / math.sqrt(z.size)
    assert abs(z.var() - std**2) < 5 * std**2 * math.sqrt(2 / z.size)  # SE of a variance
    sampled = NoiseTwins.matched(LazyStack(data), seed=2, sample=20)
    assert sampled.seed == 2 and sampled.shape == (12, 12)


def test_empirical_moments_reject():
    with pytest.raises(InputError, match="empty"):
        empirical_moments(np.zeros((0, 4, 4)))
    with pytest.raises(InputError, match="non-finite"):
        empirical_moments(np.full((2, 4, 4), np.nan))
    with pytest.raises(ConfigError, match="sample"):
        empirical_moments(np.zeros((2, 4, 4)), sample=0)
    with pytest.raises(ConfigError, match="len"):
        empirical_moments(3.0)
    with pytest.raises(InputError, match="zero pixel variance"):
        NoiseTwins.matched(np.ones((3, 4, 4)), seed=0)
