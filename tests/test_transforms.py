"""Group actions on images: group laws (hypothesis), Fourier identities, named transforms.

The evil-twin assignments are tested in ``test_twins.py``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ampcheck.cryoem.fft import fft2_center
from ampcheck.data.transforms import (
    DEFAULT_TRANSFORMS,
    Transform,
    parse_transform,
    roll,
    rot90,
)
from ampcheck.errors import AmpcheckError, ConfigError

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
