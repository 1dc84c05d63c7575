"""Physics of the synthetic cryo-EM generator, each law checked against an INDEPENDENT computation.

Nothing here checks a module against itself: the references are textbook formulas written out in
the test (relativistic wavelength from CODATA constants, explicit DFT sums, Rodrigues' formula,
RELION's own Euler matrix), numerical integration of a rasterised volume, or plain numpy FFTs with
the shifts spelled out. Every tolerance says where it comes from.

Units and conventions (SPEC §1, module docstrings): images ``[y, x]`` (x along columns), volumes
``[z, y, x]``, pixel ``j`` at ``(j - D/2)·apix`` Å, frequencies in 1/Å, poses act as ``r -> R @ r``
in real space and sample the volume's transform at ``(kx, ky, 0) @ R``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.constants as sc
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage, stats

from ampcheck.cryoem.ctf import compute_ctf, ctf_from_table, electron_wavelength
from ampcheck.cryoem.fft import (
    fft2_center,
    fft3_center,
    ht2_center,
    ht3_center,
    ifft2_center,
    ifft3_center,
    iht2_center,
    iht3_center,
    symmetrize_ht,
)
from ampcheck.cryoem.lattice import Lattice, radial_window, rfft_frequencies
from ampcheck.cryoem.rotations import (
    R_from_relion,
    R_to_relion,
    inplane_rotation,
    random_rotations,
    rotation_about_axis,
)
from ampcheck.cryoem.volumes import BlobVolume, blob_fourier_transform, project_blobs_fourier

# Volume tests: D = 40 px at 3 Å/px (half box 60 Å); blob widths 6-7.5 Å = 2-2.5 px, centres within
# 12 Å of the box centre. Then (i) the Gaussian spectrum at Nyquist is exp(-π²σ_px²/2) < 3e-9 of
# its peak (band-limit/aliasing error), (ii) every blob is >= 48 Å = 6.4σ from the box edge, so its
# tail there is exp(-20) ~ 2e-9 (periodic wrap / truncation error), (iii) sums over the voxel grid
# equal integrals up to exp(-2π²σ_px²) ~ 1e-34 (Poisson summation).
D_VOL, APIX = 40, 3.0


def make_blobs(rng: np.random.Generator, k: int = 6, r_max: float = 12.0,
               sig: tuple[float, float] = (6.0, 7.5)) -> BlobVolume:
    """K blobs uniform in a ball of radius r_max Å; two share a width (exercises width grouping)."""
    d = rng.normal(size=(k, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    centers = d * (r_max * rng.uniform(0, 1, k) ** (1 / 3))[:, None]
    sigmas = rng.uniform(*sig, k)
    sigmas[1] = sigmas[0]
    return BlobVolume(centers, sigmas, rng.uniform(0.5, 1.5, k))


def rel_max_err(a, b) -> float:
    """max |a - b| / max |b|: the error relative to the signal's scale."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


def dft_of_image(img: np.ndarray, apix: float) -> np.ndarray:
    """Continuous-FT approximation apix²·Σ_j p(x_j) e^{-2πik·x_j}, x_j = (j - D/2)·apix, on the
    unshifted np.fft grid: ifftshift moves the origin (index D/2) to index 0."""
    return apix**2 * np.fft.fft2(np.fft.ifftshift(img, axes=(-2, -1)))


def centred_dft_matrix(D: int) -> np.ndarray:
    """E[u, j] = exp(-2πi (u - D/2)(j - D/2) / D): the centred DFT written as an explicit sum."""
    m = np.arange(D) - D // 2
    return np.exp(-2j * np.pi * np.outer(m, m) / D)


# --------------------------------------------------------------------------------------------
# 1. Electron wavelength
# --------------------------------------------------------------------------------------------

def wavelength_codata(kv: float) -> float:
    """λ = h / sqrt(2 m e V (1 + eV / (2 m c²))), in Å, from CODATA constants (scipy.constants)."""
    V = kv * 1e3
    p = math.sqrt(2 * sc.m_e * sc.e * V * (1 + sc.e * V / (2 * sc.m_e * sc.c**2)))
    return sc.h / p * 1e10


def test_wavelength_300kv():
    # Textbook value 0.01969 Å; the brief's 0.0197 is quoted to 4 decimals, hence atol 1e-4.
    assert abs(electron_wavelength(300.0) - 0.0197) < 1e-4


@pytest.mark.parametrize("kv", [100.0, 200.0, 300.0])
def test_wavelength_matches_relativistic_formula(kv):
    # cryoDRGN's rounded constants (12.2639, 0.97845e-6) differ from CODATA by ~3e-5 relative;
    # 1e-4 relative allows that rounding and nothing else.
    ref = wavelength_codata(kv)
    assert abs(electron_wavelength(kv) - ref) / ref < 1e-4


# --------------------------------------------------------------------------------------------
# 2. CTF
# --------------------------------------------------------------------------------------------

def freqs_along(angle_deg: float, s: np.ndarray) -> np.ndarray:
    """(N, 2) frequencies (sx, sy) of magnitude s along direction angle_deg from the x axis."""
    a = np.deg2rad(angle_deg)
    return np.stack([s * np.cos(a), s * np.sin(a)], axis=-1)


def test_ctf_zeros_and_sign_alternation():
    # cs = w = phase = 0, no astigmatism: ctf = sin(-π df λ s²), zeros at s_n = sqrt(n / (df λ)).
    # λ is the module's (checked against CODATA above); with the module's λ the zeros are exact
    # up to rounding of γ ~ 5π·1e-16, hence 1e-9.
    df, kv = 20000.0, 300.0
    lam = electron_wavelength(kv)
    n = np.arange(1, 6)
    s_zero = np.sqrt(n / (df * lam))
    s_mid = np.sqrt((np.arange(0, 6) + 0.5) / (df * lam))  # between consecutive zeros
    for angle in (0.0, 37.0, 200.0):
        z = compute_ctf(freqs_along(angle, s_zero), df, df, 0.0, kv, 0.0, 0.0)
        assert np.abs(z).max() < 1e-9
        m = compute_ctf(freqs_along(angle, s_mid), df, df, 0.0, kv, 0.0, 0.0)
        # At the midpoints γ = -π(n + ½): ctf = sin(γ) = ±1, starting at -1 (n = 0) and alternating.
        expected = -((-1.0) ** np.arange(0, 6))
        np.testing.assert_allclose(m, expected, atol=1e-9)


def test_ctf_amplitude_contrast_at_origin():
    # γ(0) = 0 so ctf(0) = sqrt(1 - w²)·0 - w·1 = -w exactly (rounding only).
    c = compute_ctf(np.zeros((1, 2)), 15000.0, 15000.0, 0.0, 300.0, 2.7, 0.1)
    assert abs(float(c[0]) + 0.1) < 1e-15


@pytest.mark.parametrize("dfang", [0.0, 30.0, 113.0])
def test_ctf_astigmatism_axes(dfang):
    # Along dfang the defocus is dfu, perpendicular to it dfv (cs = w = 0): the zeros sit at
    # sqrt(n / (dfu λ)) and sqrt(n / (dfv λ)) respectively. 1e-9 as for the zeros above.
    dfu, dfv, kv = 15000.0, 25000.0, 300.0
    lam = electron_wavelength(kv)
    n = np.arange(1, 6)
    for axis_angle, df in ((dfang, dfu), (dfang + 90.0, dfv)):
        c = compute_ctf(freqs_along(axis_angle, np.sqrt(n / (df * lam))), dfu, dfv, dfang, kv,
                        0.0, 0.0)
        assert np.abs(c).max() < 1e-9
        # and the other axis' zeros are NOT zeros here (guards against swapped axes)
        other = dfv if df == dfu else dfu
        c_other = compute_ctf(freqs_along(axis_angle, np.sqrt(n / (other * lam))), dfu, dfv,
                              dfang, kv, 0.0, 0.0)
        assert np.abs(c_other).max() > 0.1


def test_ctf_phase_shift_and_bfactor():
    # γ written out by hand; phase shift 90°, w = 0: ctf = sin(γ0 - π/2). Rounding only: 1e-12.
    rng = np.random.default_rng(1)
    f = rng.uniform(-0.15, 0.15, size=(500, 2))
    s2 = (f**2).sum(-1)
    df, kv, cs = 18000.0, 300.0, 2.7
    lam = wavelength_codata(kv)  # the CODATA λ: γ differs by |Δλ/λ|·|γ| < 3e-5·60
    gamma0 = 2 * np.pi * (-0.5 * df * lam * s2 + 0.25 * cs * 1e7 * lam**3 * s2**2)
    c = compute_ctf(f, df, df, 0.0, kv, cs, 0.0, 90.0)
    np.testing.assert_allclose(c, np.sin(gamma0 - np.pi / 2), atol=3e-3)
    # same check against γ built with the module's λ, to rounding
    lam_m = electron_wavelength(kv)
    gamma0 = 2 * np.pi * (-0.5 * df * lam_m * s2 + 0.25 * cs * 1e7 * lam_m**3 * s2**2)
    np.testing.assert_allclose(c, np.sin(gamma0 - np.pi / 2), atol=1e-12)
    # B-factor envelope multiplies by exp(-B s²/4) everywhere (rounding only: 1e-12 relative)
    B = 80.0
    plain = compute_ctf(f, df, df, 0.0, kv, cs, 0.1)
    damped = compute_ctf(f, df, df, 0.0, kv, cs, 0.1, 0.0, B)
    np.testing.assert_allclose(damped, plain * np.exp(-B * s2 / 4), rtol=1e-12, atol=1e-15)


def test_ctf_numpy_and_torch_agree():
    rng = np.random.default_rng(2)
    apix = 3.0
    f = rng.uniform(-0.5, 0.5, size=(2, 400, 2)) / apix  # up to Nyquist at 3 Å/px
    params = np.array([[16000.0, 14000.0, 20.0, 300.0, 2.7, 0.1, 10.0],
                       [25000.0, 24000.0, 150.0, 300.0, 2.7, 0.07, 0.0]])
    cols = [params[:, i : i + 1] for i in range(7)]
    ref = compute_ctf(f, *cols)
    # float64 torch: the same arithmetic in another library, rounding only -> 1e-12
    t64 = compute_ctf(torch.from_numpy(f), *[torch.from_numpy(c) for c in cols])
    np.testing.assert_allclose(t64.numpy(), ref, atol=1e-12)
    # float32 torch: γ reaches ~110 rad at the corner (df 2.5 µm, 0.167/Å·√2); float32 spacing
    # near 110 is 7.6e-6, so |Δctf| <= |Δγ| ~ 1e-5 there. Below 0.06/Å (|γ| < 15 rad) it is ~1e-6.
    # Measured: 1.1e-5 overall, 7.6e-7 below 0.06/Å. (1e-6 everywhere is not attainable in
    # float32 at realistic defocus: the phase itself is only known to ~1e-5 rad.)
    t32 = compute_ctf(torch.from_numpy(f).float(), *[torch.from_numpy(c).float() for c in cols])
    assert t32.dtype == torch.float32
    np.testing.assert_allclose(t32.numpy(), ref, atol=2e-5)
    low = np.sqrt((f**2).sum(-1)) < 0.06
    assert np.abs(t32.numpy() - ref)[low].max() < 2e-6


def test_ctf_from_table_matches_columns():
    # ctf_from_table reads [D, apix, dfu, dfv, dfang, volt, cs, w, phase_shift] (SPEC §1)
    rng = np.random.default_rng(3)
    f = rng.uniform(-0.1, 0.1, size=(50, 2))
    table = np.array([[64, 3.0, 16000.0, 14000.0, 20.0, 300.0, 2.7, 0.1, 10.0],
                      [64, 3.0, 25000.0, 24000.0, 150.0, 200.0, 2.0, 0.07, 0.0]])
    out = ctf_from_table(f, table)
    for b in range(2):
        np.testing.assert_allclose(out[b], compute_ctf(f, *table[b, 2:]), atol=1e-14)


@pytest.mark.extras
def test_ctf_matches_cryodrgn():
    cryodrgn_ctf = pytest.importorskip(
        "cryodrgn.ctf",
        reason="cryodrgn is not installed in this environment (pip install -e '.[cryodrgn]')")
    rng = np.random.default_rng(4)
    f = rng.uniform(-0.5, 0.5, size=(1000, 2)) / 2.5
    for _ in range(5):
        p = [rng.uniform(5000, 30000), rng.uniform(5000, 30000), rng.uniform(-180, 180),
             rng.choice([100.0, 200.0, 300.0]), rng.uniform(0, 3), rng.uniform(0, 0.2),
             rng.uniform(0, 90)]
        ours = compute_ctf(f, *p)
        # float64 parameters: torch.tensor(python float) would be float32 and cost ~1e-5
        theirs = cryodrgn_ctf.compute_ctf(torch.from_numpy(f),
                                          *[torch.tensor(v, dtype=torch.float64) for v in p])
        # same formula in float64: rounding only (measured by hand against 4.3.1: 5.6e-14)
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-10)


# --------------------------------------------------------------------------------------------
# 3. Fourier and Hartley transforms
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_fft_and_hartley_round_trips(lib):
    # float64 round trips: rounding ~ log2(D)·1e-16, hence 1e-10
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 16, 16))
    xx = torch.from_numpy(x) if lib == "torch" else x
    back = ifft2_center(fft2_center(xx))
    back = back.numpy() if lib == "torch" else back
    np.testing.assert_allclose(back.real, x, atol=1e-10)
    np.testing.assert_allclose(back.imag, 0, atol=1e-10)
    h = iht2_center(ht2_center(xx))
    h = h.numpy() if lib == "torch" else h
    np.testing.assert_allclose(h, x, atol=1e-10)
    v = rng.normal(size=(2, 12, 12, 12))
    vv = torch.from_numpy(v) if lib == "torch" else v
    b3 = ifft3_center(fft3_center(vv))
    b3 = b3.numpy() if lib == "torch" else b3
    np.testing.assert_allclose(b3.real, v, atol=1e-10)
    h3 = iht3_center(ht3_center(vv))
    h3 = h3.numpy() if lib == "torch" else h3
    np.testing.assert_allclose(h3, v, atol=1e-10)


def test_zero_frequency_at_index_d_over_2():
    # DFT of a constant image: all weight D² at the zero frequency, which must be index D//2.
    for D in (8, 16):
        f = fft2_center(np.ones((D, D)))
        expected = np.zeros((D, D))
        expected[D // 2, D // 2] = D * D
        np.testing.assert_allclose(f, expected, atol=1e-10)
        f3 = fft3_center(np.ones((D, D, D)))
        assert abs(f3[D // 2, D // 2, D // 2] - D**3) < 1e-9
        assert np.abs(f3).sum() - D**3 < 1e-8


def test_centred_dft_against_explicit_sum_and_np_fft():
    # F[u, v] = Σ x[j, l] exp(-2πi((u-D/2)(j-D/2) + (v-D/2)(l-D/2)) / D): the centred DFT
    # written as a matrix product, no FFT; and the same with np.fft and explicit shifts.
    # Rounding ~ D·1e-16·|x|, hence 1e-10.
    rng = np.random.default_rng(6)
    D = 16
    x = rng.normal(size=(2, D, D))
    E = centred_dft_matrix(D)
    F = E @ x @ E.T
    np.testing.assert_allclose(fft2_center(x), F, atol=1e-10)
    np.testing.assert_allclose(ht2_center(x), F.real - F.imag, atol=1e-10)
    F_np = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1))), axes=(-2, -1))
    np.testing.assert_allclose(ht2_center(x), F_np.real - F_np.imag, atol=1e-10)
    # 3-D: explicit sum along each axis
    v = rng.normal(size=(8, 8, 8))
    E8 = centred_dft_matrix(8)
    F3 = np.einsum("ai,bj,ck,ijk->abc", E8, E8, E8, v)
    np.testing.assert_allclose(fft3_center(v), F3, atol=1e-10)
    np.testing.assert_allclose(ht3_center(v), F3.real - F3.imag, atol=1e-10)


def test_hartley_is_real_and_an_involution_up_to_n():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(16, 16))
    h = ht2_center(x)
    assert not np.iscomplexobj(h)
    np.testing.assert_allclose(ht2_center(h), x.size * x, atol=1e-10)
    ht = ht2_center(torch.from_numpy(x))
    assert not ht.is_complex()
    np.testing.assert_allclose(ht2_center(ht).numpy(), x.size * x, atol=1e-10)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_symmetrize_ht(lib):
    D = 8
    h = np.random.default_rng(8).normal(size=(2, D, D))
    hh = torch.from_numpy(h) if lib == "torch" else h
    s = symmetrize_ht(hh)
    s = s.numpy() if lib == "torch" else s
    assert s.shape == (2, D + 1, D + 1)
    np.testing.assert_array_equal(s[:, :D, :D], h)
    np.testing.assert_array_equal(s[:, D, :D], h[:, 0, :])
    np.testing.assert_array_equal(s[:, :D, D], h[:, :, 0])
    np.testing.assert_array_equal(s[:, D, D], h[:, 0, 0])
    # the padded lattice is symmetric about the centre: H(-k) is a flip of both axes, and for the
    # Hartley transform of a real image that is the transform of the mirrored image.
    x = np.random.default_rng(9).normal(size=(D, D))
    sx = symmetrize_ht(ht2_center(x))
    mirrored = np.roll(x[::-1, ::-1], 1, axis=(0, 1))  # x(-r) about index D/2
    np.testing.assert_allclose(sx[::-1, ::-1], symmetrize_ht(ht2_center(mirrored)), atol=1e-10)
    with pytest.raises(ValueError):
        symmetrize_ht(np.zeros((7, 7)))


# --------------------------------------------------------------------------------------------
# 4. Lattice and real-space window
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("D", [8, 16])
def test_lattice_coords(D):
    lat = Lattice(D)
    c = lat.coords.reshape(D + 1, D + 1, 3)
    j = np.arange(D + 1)
    # x (coordinate 0) along columns, y along rows, both (j - D/2)/D cycles/px, z = 0
    np.testing.assert_allclose(c[:, :, 0], np.broadcast_to((j - D / 2) / D, (D + 1, D + 1)),
                               atol=1e-15)
    np.testing.assert_allclose(c[:, :, 1], np.broadcast_to(((j - D / 2) / D)[:, None],
                                                           (D + 1, D + 1)), atol=1e-15)
    assert np.all(c[:, :, 2] == 0)
    assert c[..., :2].min() == -0.5 and c[..., :2].max() == 0.5
    np.testing.assert_allclose(lat.freqs2d(2.5), lat.coords[:, :2] / 2.5)


@pytest.mark.parametrize("D", [8, 16, 24])
def test_circular_mask_is_exactly_the_nyquist_disc(D):
    # In integer Fourier pixels (i, j) - D/2, |k| <= 0.5 cycles/px is i² + j² <= (D/2)²: exact
    # integer arithmetic, independent of any floating-point epsilon.
    lat = Lattice(D)
    i, j = np.meshgrid(np.arange(D + 1) - D // 2, np.arange(D + 1) - D // 2, indexing="ij")
    np.testing.assert_array_equal(lat.circular_mask(), (i**2 + j**2 <= (D // 2) ** 2).ravel())
    r = D // 4
    np.testing.assert_array_equal(lat.circular_mask(r), (i**2 + j**2 <= r**2).ravel())


def test_rfft_frequencies():
    ky, kx = rfft_frequencies(8, 2.0)
    np.testing.assert_allclose(ky, [0, 1, 2, 3, -4, -3, -2, -1] / np.float64(16))
    np.testing.assert_allclose(kx, [0, 1, 2, 3, 4] / np.float64(16))


def cryodrgn_window(D: int, in_rad: float, out_rad: float) -> np.ndarray:
    """cryoDRGN 4.3.1 masking.spherical_window_mask, transcribed (float64)."""
    ax = np.linspace(-1, 1, D + 1)[:-1]
    x0, x1 = np.meshgrid(ax, ax, indexing="ij")
    d = (x0**2 + x1**2) ** 0.5
    if in_rad == out_rad:
        return (d <= out_rad).astype(float)
    return np.minimum(1.0, np.maximum(0.0, 1 - (d - in_rad) / (out_rad - in_rad)))


@pytest.mark.parametrize("D", [16, 32])
@pytest.mark.parametrize("radii", [(0.85, 0.99), (0.5, 0.7), (0.6, 0.6)])
def test_radial_window(D, radii):
    in_rad, out_rad = radii
    w = radial_window(D, in_rad, out_rad)
    assert w.shape == (D, D)
    # radius in fractions of the half box, centre at pixel (D/2, D/2), computed from indices
    idx = np.arange(D) - D / 2
    r = np.hypot(*np.meshgrid(idx, idx, indexing="ij")) / (D / 2)
    assert np.all(w[r <= in_rad - 1e-12] == 1.0)
    assert np.all(w[r > out_rad + 1e-12] == 0.0)
    assert w[D // 2, D // 2] == 1.0
    np.testing.assert_allclose(w, cryodrgn_window(D, in_rad, out_rad), atol=1e-12)
    with pytest.raises(ValueError):
        radial_window(D, 0.9, 0.8)


# --------------------------------------------------------------------------------------------
# 5. Rotations
# --------------------------------------------------------------------------------------------

N_ROT = 20_000


@pytest.fixture(scope="module")
def many_rotations():
    return random_rotations(N_ROT, np.random.default_rng(10))


def test_random_rotations_are_proper(many_rotations):
    R = many_rotations
    assert R.shape == (N_ROT, 3, 3)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)


def test_random_rotations_are_haar_uniform(many_rotations):
    # Fixed seed, so these KS p-values are deterministic; 1e-3 flags a real departure.
    R = many_rotations
    # (a) R e_z is uniform on the sphere <=> cos(polar angle) = (R e_z)_z ~ U[-1, 1] (Archimedes)
    assert stats.kstest(R[:, 2, 2], "uniform", args=(-1, 2)).pvalue > 1e-3
    # (b) Haar measure: rotation angle θ has density (1 - cos θ)/π on [0, π], CDF (θ - sin θ)/π
    theta = np.arccos(np.clip((np.trace(R, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert stats.kstest(theta, lambda t: (t - np.sin(t)) / np.pi).pvalue > 1e-3
    # (c) E[R] = 0 under Haar measure; each entry has sd 1/√3, so the mean of 20k has sd 0.004:
    # 0.02 is 5 sd.
    assert np.abs(R.mean(0)).max() < 0.02


def relion_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's Euler_angles2matrix (src/euler.cpp), written out: A = Rz'(psi)·Ry'(tilt)·Rz'(rot)
    with the passive rotations Rz'(t) = [[c, s, 0], [-s, c, 0], [0, 0, 1]],
    Ry'(t) = [[c, 0, -s], [0, 1, 0], [s, 0, c]]."""
    a, b, g = np.deg2rad([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc_, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array([[cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
                     [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
                     [sc_, ss, cb]])


def test_relion_euler_convention():
    # Code's documented convention: scipy extrinsic "zxz" with (rot + 90, tilt, psi - 90), then
    # the sign pattern F = [[1,-1,1],[-1,1,-1],[1,-1,1]]. Hand derivation:
    # * (0, 0, 0): extrinsic zxz with tilt 0 is Rz(psi-90)·Rz(rot+90) = Rz(0) = I; F keeps the
    #   diagonal, so R = I.
    # * (0, 0, psi): Rz(psi) = [[c,-s,0],[s,c,0],[0,0,1]]; F flips the (0,1),(1,0) entries:
    #   R = [[c, s, 0], [-s, c, 0], [0, 0, 1]] = Rz(-psi), RELION's passive in-plane rotation.
    np.testing.assert_allclose(R_from_relion([0.0, 0.0, 0.0])[0], np.eye(3), atol=1e-14)
    psi = 35.0
    c, s = math.cos(math.radians(psi)), math.sin(math.radians(psi))
    np.testing.assert_allclose(R_from_relion([0.0, 0.0, psi])[0],
                               [[c, s, 0], [-s, c, 0], [0, 0, 1]], atol=1e-14)
    # * (0, tilt, 0): extrinsic zxz (90, b, -90) is Rz(-90)·Rx(b)·Rz(90), a rotation by b about
    #   Rz(-90) e_x = -e_y, i.e. Ry(-b) = [[cb, 0, -sb], [0, 1, 0], [sb, 0, cb]]; F only flips
    #   entries that are 0 here, so R = Ry(-b): RELION tilts about y, passively.
    tilt = 50.0
    cb, sb = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))
    np.testing.assert_allclose(R_from_relion([0.0, tilt, 0.0])[0],
                               [[cb, 0, -sb], [0, 1, 0], [sb, 0, cb]], atol=1e-14)
    # General angles against RELION's own matrix (1e-12: rounding)
    rng = np.random.default_rng(11)
    eul = np.column_stack([rng.uniform(-180, 180, 50), rng.uniform(0, 180, 50),
                           rng.uniform(-180, 180, 50)])
    ref = np.stack([relion_matrix(*e) for e in eul])
    np.testing.assert_allclose(R_from_relion(eul), ref, atol=1e-12)


def test_relion_round_trip():
    rng = np.random.default_rng(12)
    R = random_rotations(200, rng)
    np.testing.assert_allclose(R_from_relion(R_to_relion(R)), R, atol=1e-10)
    # angles away from the gimbal lock (tilt 0 or 180) come back themselves, in [-180, 180)
    eul = np.column_stack([rng.uniform(-179, 179, 200), rng.uniform(5, 175, 200),
                           rng.uniform(-179, 179, 200)])
    back = R_to_relion(R_from_relion(eul))
    assert np.all(back >= -180) and np.all(back < 180)
    np.testing.assert_allclose(back, eul, atol=1e-8)


def test_inplane_rotation():
    rng = np.random.default_rng(13)
    a, b = rng.uniform(-400, 400, size=(2, 20))
    np.testing.assert_allclose(inplane_rotation(a) @ inplane_rotation(b), inplane_rotation(a + b),
                               atol=1e-12)
    # counter-clockwise (right-handed about +z): e_x -> e_y at 90°
    np.testing.assert_allclose(inplane_rotation(90.0) @ [1, 0, 0], [0, 1, 0], atol=1e-15)
    assert inplane_rotation(np.zeros((4, 5))).shape == (4, 5, 3, 3)


def test_rotation_about_axis_is_rodrigues():
    # R = I + sin θ K + (1 - cos θ) K², K the cross-product matrix of the unit axis; rounding only
    rng = np.random.default_rng(14)
    for _ in range(10):
        axis = rng.normal(size=3) * rng.uniform(0.1, 5)  # non-unit: the function normalises
        ang = rng.uniform(-360, 360)
        u = axis / np.linalg.norm(axis)
        K = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
        t = math.radians(ang)
        ref = np.eye(3) + math.sin(t) * K + (1 - math.cos(t)) * K @ K
        np.testing.assert_allclose(rotation_about_axis(axis, ang), ref, atol=1e-12)
    np.testing.assert_allclose(rotation_about_axis([0, 0, 1], 30.0), inplane_rotation(30.0),
                               atol=1e-14)


# --------------------------------------------------------------------------------------------
# 6. Volumes and projections
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(20)
    return make_blobs(rng), random_rotations(3, rng)


def line_integral_projection(vol: np.ndarray, R: np.ndarray, apix: float) -> np.ndarray:
    """Projection of W(r) = V(Rᵀ r) along z by a Riemann sum, V the raster indexed [z, y, x] with
    voxel j at (j - D/2)·apix. W is sampled on the same grid with cubic splines."""
    D = vol.shape[0]
    ax = (np.arange(D) - D / 2) * apix
    Z, Y, X = np.meshgrid(ax, ax, ax, indexing="ij")
    r = np.stack([X, Y, Z], axis=-1).reshape(-1, 3)
    p = r @ R  # row vectors: (Rᵀ r)ᵀ = rᵀ R
    idx = p / apix + D / 2  # (x, y, z) in voxel indices
    W = ndimage.map_coordinates(vol, idx[:, ::-1].T, order=3, mode="constant", cval=0.0)
    return W.reshape(D, D, D).sum(axis=0) * apix


def test_real_projection_is_line_integral_of_raster(blobs):
    # Measured: 1.3e-4 to 1.7e-4 (D=40, apix 3, σ 6-7.5 Å = 2-2.5 px), dominated by cubic-spline
    # interpolation of the raster; the Riemann sum along z is exact to exp(-2π²σ_px²). 1e-3 leaves
    # margin and still catches any pose-convention error (a wrong R or Rᵀ gives O(1)).
    vol, R = blobs
    raster = vol.rasterize(D_VOL, APIX)
    analytic = vol.project(R, D_VOL, APIX, route="real")
    for k in range(len(R)):
        numeric = line_integral_projection(raster, R[k], APIX)
        assert rel_max_err(analytic[k], numeric) < 1e-3
    # a transposed pose must fail the same comparison (the test can tell R from Rᵀ)
    wrong = line_integral_projection(raster, R[0].T, APIX)
    assert rel_max_err(analytic[0], wrong) > 0.05


def test_fourier_route_equals_real_route(blobs):
    # Measured: 6.7e-11. Band limit and periodic wrap both ~1e-9 for these blobs (see D_VOL): 1e-6.
    vol, R = blobs
    assert rel_max_err(vol.project(R, D_VOL, APIX), vol.project(R, D_VOL, APIX, route="real")) \
        < 1e-6


def test_fourier_projection_is_central_slice(blobs):
    vol, R = blobs
    spec = project_blobs_fourier(vol.centers, vol.sigmas, vol.weights, R, D_VOL, APIX)
    assert spec.shape == (len(R), D_VOL, D_VOL // 2 + 1)
    # The central slice (kx, ky, 0) @ R on the rfft grid: ky = fftfreq rows, kx = rfftfreq columns.
    # Rounding of the cumulative-product phases ~ D·1e-16 -> 1e-12. Measured: 2.5e-16.
    ky = np.fft.fftfreq(D_VOL, APIX)
    kx = np.fft.rfftfreq(D_VOL, APIX)
    KY, KX = np.meshgrid(ky, kx, indexing="ij")
    k2 = np.stack([KX, KY, np.zeros_like(KX)], axis=-1)
    for b in range(len(R)):
        ref = blob_fourier_transform(vol.centers, vol.sigmas, vol.weights, k2 @ R[b])
        assert rel_max_err(spec[b], ref) < 1e-12
    # Tie to real space: the DFT of the (analytic, real-route) projection, times apix², is the
    # continuous transform up to aliasing ~exp(-π²σ_px²/2) ~ 3e-9. Measured: 2.0e-10.
    img = vol.project(R, D_VOL, APIX, route="real")
    assert rel_max_err(dft_of_image(img, APIX)[..., : D_VOL // 2 + 1], spec) < 1e-6


def test_fourier_slice_theorem_on_raster(blobs):
    # 3-D DFT of the raster (origin at index D/2, times apix³) = analytic 3-D transform on the
    # fftfreq grid, up to aliasing ~exp(-π²σ_px²/2) ~ 3e-9. Measured: 1.9e-10. Tolerance 1e-6.
    vol, R = blobs
    raster = vol.rasterize(D_VOL, APIX)
    F = APIX**3 * np.fft.fftn(np.fft.ifftshift(raster))
    f = np.fft.fftfreq(D_VOL, APIX)
    KZ, KY, KX = np.meshgrid(f, f, f, indexing="ij")  # raster is [z, y, x]
    A = vol.fourier(np.stack([KX, KY, KZ], axis=-1))
    assert rel_max_err(F, A) < 1e-6
    # The slice kz = 0 of that raster DFT is the identity-pose projection's spectrum (the discrete
    # Fourier slice theorem), so the raster and the projector agree through a third route.
    spec = project_blobs_fourier(vol.centers, vol.sigmas, vol.weights, np.eye(3)[None], D_VOL,
                                 APIX)[0]
    assert rel_max_err(F[0][:, : D_VOL // 2 + 1], spec) < 1e-6


def centre_of_mass(img: np.ndarray) -> np.ndarray:
    """(x, y) centre of mass in pixels, x along columns."""
    rows, cols = np.indices(img.shape)
    return np.array([(img * cols).sum(), (img * rows).sum()]) / img.sum()


@pytest.mark.parametrize("route", ["fourier", "real"])
def test_shifts(blobs, route):
    vol, R = blobs
    base = vol.project(R, D_VOL, APIX, route=route)
    # Non-integer shift: the centre of mass moves by exactly (dx, dy) pixels. The sampled
    # Gaussian's centre of mass equals its centre up to exp(-2π²σ_px²) (Poisson summation); the
    # box edge costs ~1e-9 px. Tolerance 1e-6 px.
    sh = np.array([[1.3, -2.7], [0.0, 0.5], [-3.25, 2.0]])
    moved = vol.project(R, D_VOL, APIX, shifts_px=sh, route=route)
    for b in range(len(R)):
        np.testing.assert_allclose(centre_of_mass(moved[b]) - centre_of_mass(base[b]), sh[b],
                                   atol=1e-6)
    # Integer shift = np.roll by (dy, dx) along (rows, cols).
    ish = np.array([[3, -2], [0, 5], [-4, 1]])
    moved = vol.project(R, D_VOL, APIX, shifts_px=ish, route=route)
    for b in range(len(R)):
        dx, dy = ish[b]
        rolled = np.roll(base[b], (dy, dx), axis=(0, 1))
        if route == "fourier":
            # periodic and band-limited: a shift by whole pixels is a roll, up to rounding
            assert rel_max_err(moved[b], rolled) < 1e-12
        else:
            # not periodic: compare where the roll did not wrap around (exact there)
            rs = slice(max(dy, 0), D_VOL + min(dy, 0))
            cs = slice(max(dx, 0), D_VOL + min(dx, 0))
            assert rel_max_err(moved[b][rs, cs], rolled[rs, cs]) < 1e-12


def test_ctf_application(blobs):
    # Independent route: DFT of the plain projection (np.fft, origin moved from index D/2 to 0)
    # times the CTF evaluated on the full fftfreq grid with (sx, sy) = (column, row)
    # frequencies, inverse DFT, origin back to D/2. Differences only at the Nyquist row/column,
    # where the half-plane (rfft) and the full-grid Hermitian parts of an astigmatic CTF differ
    # and the spectrum is ~3e-9 of its peak. Measured: 4e-11. Tolerance 1e-7 relative.
    vol, R = blobs
    table = np.array([[D_VOL, APIX, 16000.0, 13000.0, 35.0, 300.0, 2.7, 0.1, 0.0],
                      [D_VOL, APIX, 25000.0, 24000.0, -70.0, 300.0, 2.7, 0.07, 20.0],
                      [D_VOL, APIX, 9000.0, 9000.0, 0.0, 200.0, 2.0, 0.1, 0.0]])
    plain = vol.project(R, D_VOL, APIX)
    with_ctf = vol.project(R, D_VOL, APIX, ctf_table=table)
    f = np.fft.fftfreq(D_VOL, APIX)
    SY, SX = np.meshgrid(f, f, indexing="ij")
    freqs = np.stack([SX, SY], axis=-1).reshape(-1, 2)
    for b in range(len(R)):
        ctf = compute_ctf(freqs, *table[b, 2:]).reshape(D_VOL, D_VOL)
        F = np.fft.fft2(np.fft.ifftshift(plain[b]))
        ref = np.fft.fftshift(np.fft.ifft2(F * ctf)).real
        assert rel_max_err(with_ctf[b], ref) < 1e-7
        # and the CTF really changed the image (guards against a silently ignored table)
        assert rel_max_err(with_ctf[b], plain[b]) > 0.1
    # x/y swapped in the CTF grid would be caught: the astigmatic image differs from the transpose
    ctf_t = compute_ctf(freqs[:, ::-1], *table[0, 2:]).reshape(D_VOL, D_VOL)
    swapped = np.fft.fftshift(np.fft.ifft2(np.fft.fft2(np.fft.ifftshift(plain[0])) * ctf_t)).real
    assert rel_max_err(with_ctf[0], swapped) > 1e-3
    with pytest.raises(ValueError):
        vol.project(R, D_VOL, APIX, ctf_table=table, route="real")


def test_rasterisation_mass_and_centre(blobs):
    vol, _ = blobs
    raster = vol.rasterize(D_VOL, APIX)
    assert raster.shape == (D_VOL, D_VOL, D_VOL)
    # ∫ a exp(-|r-c|²/2σ²) dr = a (2πσ²)^{3/2}; the voxel sum equals the integral up to
    # exp(-2π²σ_px²) and box truncation ~1e-9, hence 1e-6.
    masses = vol.weights * (2 * np.pi * vol.sigmas**2) ** 1.5
    assert abs(raster.sum() * APIX**3 / masses.sum() - 1) < 1e-6
    # Centre of mass = mass-weighted mean of centres (mass a·(2πσ²)^{3/2}, not amplitude a).
    # Tolerance 1e-6 Å for the same reasons.
    ax = (np.arange(D_VOL) - D_VOL / 2) * APIX
    com = np.array([(raster.sum((0, 1)) * ax).sum(),   # x: last axis
                    (raster.sum((0, 2)) * ax).sum(),   # y
                    (raster.sum((1, 2)) * ax).sum()]) / raster.sum()
    np.testing.assert_allclose(com, masses @ vol.centers / masses.sum(), atol=1e-6)
    # orientation of the raster: a single off-centre blob peaks at voxel [z, y, x] of its centre
    one = BlobVolume(np.array([[6.0, -9.0, 3.0]]), np.array([5.0]), np.array([1.0]))
    r1 = one.rasterize(D_VOL, APIX)
    assert np.unravel_index(r1.argmax(), r1.shape) == (D_VOL // 2 + 1, D_VOL // 2 - 3,
                                                       D_VOL // 2 + 2)


# --------------------------------------------------------------------------------------------
# 7. Properties (hypothesis; the repo's conftest profile sets the number of examples)
# --------------------------------------------------------------------------------------------

D_H, APIX_H = 24, 3.0  # σ 5-6 Å = 1.7-2 px, centres within 8 Å: blobs >= 4σ from the edges


@st.composite
def blob_case(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    k = draw(st.integers(1, 4))
    rng = np.random.default_rng(seed)
    vol = make_blobs(rng, k=k, r_max=8.0, sig=(5.0, 6.0)) if k > 1 else \
        BlobVolume(rng.uniform(-4, 4, (1, 3)), np.array([5.5]), np.array([1.0]))
    return vol, random_rotations(1, rng)


@given(case=blob_case(), w2=st.lists(st.floats(-2, 2), min_size=4, max_size=4),
       alpha=st.floats(-3, 3), route=st.sampled_from(["fourier", "real"]))
def test_projection_is_linear_in_weights(case, w2, alpha, route):
    vol, R = case
    k = len(vol.weights)
    v2 = BlobVolume(vol.centers, vol.sigmas, np.asarray(w2[:k]))
    vs = BlobVolume(vol.centers, vol.sigmas, vol.weights + alpha * np.asarray(w2[:k]))
    lhs = vs.project(R, D_H, APIX_H, route=route)
    rhs = vol.project(R, D_H, APIX_H, route=route) + alpha * v2.project(R, D_H, APIX_H,
                                                                       route=route)
    scale = np.abs(vol.project(R, D_H, APIX_H, route=route)).max() + \
        abs(alpha) * np.abs(v2.project(R, D_H, APIX_H, route=route)).max()
    # rounding only: 1e-12 of the scale of the two terms
    assert np.abs(lhs - rhs).max() <= 1e-12 * scale + 1e-300


def rotate_image_90(img: np.ndarray) -> np.ndarray:
    """The image of pose inplane_rotation(90) @ R, from the image p of pose R.

    Pose Q R moves r to Q R r, so the new projection is p'(x, y) = p(Qᵀ(x, y)) with
    Qᵀ(x, y) = (y, -x) for Q = Rz(+90°). In pixels (x = col - D/2, y = row - D/2):
    p'[row, col] = p[D - col, row], indices mod D. With np.rot90(a, -1)[i, j] = a[D-1-j, i]
    this is np.rot90(p, -1) rolled by +1 along columns; on the sub-grid [1:, 1:] (symmetric
    about index D/2) it is exactly np.rot90(p[1:, 1:], -1): a clockwise quarter turn of the
    array as displayed with row 0 on top, i.e. counter-clockwise in (x, y) with y = row index.
    """
    return np.roll(np.rot90(img, -1, axes=(-2, -1)), 1, axis=-1)


@given(case=blob_case(), turns=st.integers(1, 3), route=st.sampled_from(["fourier", "real"]))
def test_inplane_rotation_rotates_the_image(case, turns, route):
    vol, R = case
    p = vol.project(R, D_H, APIX_H, route=route)[0]
    q = vol.project(inplane_rotation(90.0 * turns) @ R, D_H, APIX_H, route=route)[0]
    expected = p
    for _ in range(turns):
        expected = rotate_image_90(expected)
    if route == "fourier":
        # periodic: exact on the whole grid except the Nyquist terms, which the half-plane
        # spectrum treats asymmetrically: |spectrum at Nyquist| ~ exp(-π²σ_px²/2) <= 1e-6.
        # Measured ~9e-8 at σ = 5 Å = 1.67 px.
        assert rel_max_err(q, expected) < 1e-5
    else:
        # analytic samples: exact (rounding) where no wrap-around; the wrapped row/column 0 comes
        # from outside the box in the rotated image and is compared only away from it.
        assert rel_max_err(q[1:, 1:], expected[1:, 1:]) < 1e-12
        np.testing.assert_allclose(q[1:, 1:], np.rot90(
            vol.project(R, D_H, APIX_H, route="real")[0][1:, 1:], -turns), atol=1e-12 *
            np.abs(p).max())
