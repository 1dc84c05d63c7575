"""Transforms and twins: group laws (hypothesis), Fourier identities, derangements, noise twins."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from ampcheck.cryoem.fft import fft2_center
from ampcheck.data import transforms as T
from ampcheck.data.transforms import (
    DEFAULT_TRANSFORMS,
    NoiseTwins,
    PermutationTwins,
    Transform,
    derangement,
    empirical_moments,
    parse_transform,
    roll,
    rot90,
)
from ampcheck.errors import AmpcheckError, ConfigError, InputError

CENTERS = ("fourier", "geometric")
shifts = st.integers(-20, 20)
turns = st.integers(-9, 9)


@st.composite
def images(draw, min_d=1, max_d=9):
    """(B, D, D) float64 images as numpy, any D (odd and even), 0-2 leading batch dimensions."""
    D = draw(st.integers(min_d, max_d))
    batch = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).normal(size=(*batch, D, D))


def both(x: np.ndarray):
    """The same images as a numpy array and as a torch tensor."""
    return [x, torch.from_numpy(x.copy())]


def same(a, b) -> bool:
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return np.array_equal(a, b)


def rotate_vec(dy: int, dx: int, k: int) -> tuple[int, int]:
    """R^k (dy, dx) with R the 90° counter-clockwise rotation in (row, column) coordinates:
    R(dy, dx) = (-dx, dy) — "right" (0, 1) becomes "up" (-1, 0)."""
    for _ in range(k % 4):
        dy, dx = -dx, dy
    return dy, dx


# ---------------------------------------------------------------------------- group laws


@given(images(), st.sampled_from(CENTERS))
def test_rot90_four_times_is_identity(x, center):
    for a in both(x):
        out = a
        for _ in range(4):
            out = rot90(out, 1, center=center)
        assert same(out, a)
        assert same(rot90(a, 4, center=center), a)
        assert same(rot90(a, 0, center=center), a)


@given(images(), turns, turns, st.sampled_from(CENTERS))
def test_rot90_composes(x, k, j, center):
    for a in both(x):
        assert same(rot90(rot90(a, j, center), k, center), rot90(a, k + j, center))
        assert same(rot90(rot90(a, k, center), -k, center), a)  # inverse


@given(images(), shifts, shifts, shifts, shifts)
def test_roll_laws(x, dy1, dx1, dy2, dx2):
    D = x.shape[-1]
    for a in both(x):
        assert same(roll(a, D, 0), a)
        assert same(roll(a, 0, D), a)
        assert same(roll(a, -3 * D, 2 * D), a)
        assert same(roll(roll(a, dy1, dx1), dy2, dx2), roll(a, dy1 + dy2, dx1 + dx2))
        assert same(roll(roll(a, dy1, dx1), dy2, dx2), roll(roll(a, dy2, dx2), dy1, dx1))
        assert same(roll(roll(a, dy1, dx1), -dy1, -dx1), a)
        assert same(roll(roll(a, dy=dy1), dx=dx1), roll(a, dy1, dx1))


@given(images(), shifts, shifts, turns, st.sampled_from(CENTERS))
def test_rotation_conjugates_roll_to_rotated_roll(x, dy, dx, k, center):
    """rot90_k ∘ roll(v) = roll(R^k v) ∘ rot90_k with R(dy, dx) = (-dx, dy), exactly, for BOTH
    centres: each rotation is an affine bijection of Z_D^2 with linear part R^k, and conjugating a
    translation by an affine map only sees the linear part."""
    ry, rx = rotate_vec(dy, dx, k)
    for a in both(x):
        assert same(rot90(roll(a, dy, dx), k, center), roll(rot90(a, k, center), ry, rx))


@given(images(), turns)
def test_fourier_and_geometric_centres_differ_by_a_roll(x, k):
    """Odd D: the same rotation. Even D: geometric = roll(fourier, -o_k), with o_k the move of the
    Fourier centre D//2 under the geometric rotation about (D-1)/2."""
    D = x.shape[-1]
    if D % 2:
        offset = (0, 0)
    else:
        offset = {0: (0, 0), 1: (1, 0), 2: (1, 1), 3: (0, 1)}[k % 4]
    for a in both(x):
        fourier, geometric = rot90(a, k, "fourier"), rot90(a, k, "geometric")
        assert same(geometric, roll(fourier, -offset[0], -offset[1]))


@given(images(), turns)
def test_geometric_is_plain_rot90(x, k):
    assert np.array_equal(rot90(x, k, "geometric"), np.rot90(x, k, axes=(-2, -1)))
    t = torch.from_numpy(x.copy())
    assert torch.equal(rot90(t, k, "geometric"), torch.rot90(t, k, dims=(-2, -1)))


@given(images(), shifts, shifts, turns, st.sampled_from(CENTERS))
def test_numpy_and_torch_agree(x, dy, dx, k, center):
    t = torch.from_numpy(x.copy())
    np.testing.assert_array_equal(roll(x, dy, dx), roll(t, dy, dx).numpy())
    np.testing.assert_array_equal(rot90(x, k, center), rot90(t, k, center).numpy())


def test_results_are_new_arrays_of_input_type_dtype_and_device():
    x = np.arange(16, dtype=np.float32).reshape(4, 4)
    for out in (rot90(x, 0), rot90(x, 1, "geometric"), roll(x, 0, 0)):
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        assert not np.shares_memory(out, x)
    t = torch.arange(16, dtype=torch.float16).reshape(1, 4, 4)
    for out in (rot90(t, 0), rot90(t, 3), roll(t, 1, 2)):
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float16
        assert out.device == t.device and out.data_ptr() != t.data_ptr()


def test_directions_on_a_small_example():
    x = np.zeros((4, 4))
    x[2, 3] = 1.0  # one pixel right of the Fourier centre (2, 2)
    assert roll(x, dx=1)[2, 0] == 1.0  # rightmost column rolls over to the leftmost
    assert roll(x, dy=1)[3, 3] == 1.0  # down
    assert rot90(x)[1, 2] == 1.0  # counter-clockwise about (2, 2): right -> up
    assert rot90(x, center="geometric")[0, 2] == 1.0  # np.rot90: x[j, D-1-i]


# ---------------------------------------------------------------------------- Fourier identities


def dft_matrix(D: int) -> np.ndarray:
    """W[k, n] = exp(-2πi (k - D//2)(n - D//2) / D): the centred DFT, written out independently."""
    c = D // 2
    kk = np.arange(D)[:, None] - c
    nn = np.arange(D)[None, :] - c
    return np.exp(-2j * np.pi * kk * nn / D)


@given(images(max_d=8))
def test_fft2_center_convention(x):
    W = dft_matrix(x.shape[-1])
    np.testing.assert_allclose(fft2_center(x), W @ x @ W.T, atol=1e-10)


@given(images(), turns)
def test_fourier_rotation_commutes_with_centred_dft(x, k):
    D, c = x.shape[-1], x.shape[-1] // 2
    for a in both(x):
        lhs = fft2_center(rot90(a, k))
        rhs = rot90(fft2_center(a), k)  # rotation of the centred DFT about index D//2
        if isinstance(a, torch.Tensor):
            lhs, rhs = lhs.numpy(), rhs.numpy()
        np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(rot90(a, k)[..., c, c], a[..., c, c])  # centre fixed
    # explicit index formula for k = 1: out[i, j] = x[j, (2c - i) % D]
    i, j = np.meshgrid(np.arange(D), np.arange(D), indexing="ij")
    np.testing.assert_array_equal(rot90(x, 1), x[..., j, (2 * c - i) % D])


@given(images(min_d=2, max_d=8), turns)
def test_geometric_rotation_of_centred_dft_has_a_linear_phase(x, k):
    """For even D the geometric rotation is the Fourier one rolled by -o_k, so its centred DFT is
    the rotated DFT times exp(+2πi κ·o_k / D); for odd D there is no phase."""
    D = x.shape[-1]
    o = (0, 0) if D % 2 else {0: (0, 0), 1: (1, 0), 2: (1, 1), 3: (0, 1)}[k % 4]
    kappa = np.arange(D) - D // 2
    phase = np.exp(2j * np.pi * (kappa[:, None] * o[0] + kappa[None, :] * o[1]) / D)
    np.testing.assert_allclose(fft2_center(rot90(x, k, "geometric")),
                               rot90(fft2_center(x), k) * phase, rtol=0, atol=1e-10)


@given(images(), shifts, shifts)
def test_roll_multiplies_centred_dft_by_phase(x, dy, dx):
    D = x.shape[-1]
    kappa = np.arange(D) - D // 2  # centred frequency index of each row / column
    phase = np.exp(-2j * np.pi * (kappa[:, None] * dy + kappa[None, :] * dx) / D)
    for a in both(x):
        got = fft2_center(roll(a, dy, dx))
        got = got.numpy() if isinstance(got, torch.Tensor) else got
        np.testing.assert_allclose(got, fft2_center(x) * phase, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------- named transforms


def test_parse_transform_and_names():
    assert parse_transform("roll:1") == Transform("roll", (0, 1))
    assert parse_transform("roll:0,1") == Transform("roll", (0, 1))
    assert parse_transform(" roll: -2 , 3 ") == Transform("roll", (-2, 3))
    assert parse_transform("rot90:1") == Transform("rot90", (1,))
    assert parse_transform("rot90:-1").name == "rot90(-1)"
    assert parse_transform("roll:5").name == "roll(0,5)"
    for t in DEFAULT_TRANSFORMS:
        assert parse_transform(t.name) == t and parse_transform(t) is t and str(t) == t.name
    assert [t.name for t in DEFAULT_TRANSFORMS] == ["roll(0,1)", "rot90(1)"]
    assert hash(Transform("roll", [0, 1])) == hash(Transform("roll", (0, 1)))


@given(images(), shifts, shifts, turns)
def test_transform_applies_and_inverts(x, dy, dx, k):
    shift, turn = Transform("roll", (dy, dx)), Transform("rot90", (k,))
    assert np.array_equal(shift(x), roll(x, dy, dx))
    assert np.array_equal(turn(x), rot90(x, k))
    for t in (shift, turn):
        assert np.array_equal(t.inverse()(t(x)), x)


@pytest.mark.parametrize("spec", ["", "roll", "roll:", "roll:1.5", "roll:1,2,3", "rot90:1,2",
                                  "shift:1", "rot90:x", "roll(1", None, 3])
def test_parse_transform_rejects(spec):
    with pytest.raises(ConfigError, match="transform"):
        parse_transform(spec)


def test_transform_rejects_bad_fields():
    with pytest.raises(ConfigError, match="kind"):
        Transform("flip", (1,))
    with pytest.raises(ConfigError, match=r"\(dy, dx\)"):
        Transform("roll", (1,))
    with pytest.raises(ConfigError, match="integer"):
        Transform("rot90", (1.0,))


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


# ---------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("call, match", [
    (lambda: rot90(np.zeros((3, 4))), "square"),
    (lambda: rot90(np.zeros((4, 4)), center="middle"), "center"),
    (lambda: rot90(np.zeros((4, 4)), k=1.0), "integer"),
    (lambda: rot90(np.zeros(4)), r"\(\.\.\., D, D\)"),
    (lambda: rot90([[0.0]]), "numpy array or torch tensor"),
    (lambda: roll(np.zeros((4, 4)), dx=0.5), "integer"),
    (lambda: roll(torch.zeros(4), 1), r"\(\.\.\., D, D\)"),
])
def test_transforms_reject_bad_arguments(call, match):
    with pytest.raises(ConfigError, match=match) as info:
        call()
    assert isinstance(info.value, AmpcheckError) and isinstance(info.value, ValueError)
