"""Image formation from atomic models (ampcheck.data.atoms), against independent computations:
a Gaussian atom's analytic projection, the exact Fourier-slice projector of the synthetic
molecule (ampcheck.cryoem.volumes) and its dense rasteriser. No structure reader needed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ampcheck.cryoem.rotations import random_rotations
from ampcheck.cryoem.volumes import project_blobs_fourier, rasterize_blobs, spectrum_to_images
from ampcheck.data.atoms import (
    SliceProjector,
    atom_sigma,
    project_atoms_real,
    rasterize_atoms,
)
from ampcheck.data.structures import AtomicSynthConfig, render_plan, state_counts


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _amplitude(weights, sigma):
    return np.asarray(weights) / (2 * math.pi * sigma**2) ** 1.5


def test_a_gaussian_atoms_map_is_its_sampled_density_and_integrates_to_its_weight():
    D, apix, sigma = 32, 2.0, atom_sigma(8.0)
    rng = np.random.default_rng(0)
    c, w = rng.normal(size=(20, 3)) * 8, rng.uniform(1.5, 5.2, 20)
    vol = rasterize_atoms(c, w, sigma, D, apix)
    dense = rasterize_blobs(c, np.full(20, sigma), _amplitude(w, sigma), D, apix)
    assert np.abs(vol - dense).max() < 1e-4 * dense.max()  # the 4.5 σ cut-off only
    assert vol.sum() * apix**3 == pytest.approx(w.sum(), rel=1e-6)


@pytest.mark.parametrize("D, resolution_px, bound", [
    (32, 4, 0.04), (64, 4, 0.04), (32, 6, 0.008), (64, 6, 0.002)])
def test_one_atoms_projection_is_its_analytic_2d_gaussian(D, resolution_px, bound):
    # A carbon atom off centre, in random poses and shifted: the slices of its map's transform
    # against w / (2πσ²) exp(−|x − (Rc)_xy − s|² / 2σ²) at the pixel centres. Measured: 0.0205
    # and 0.0198 at the default 4 px (the images are band-limited, the samples of a 0.9 px
    # wide Gaussian are not: the exact transform on the same grid is 0.011 off too); 0.0037 and
    # 0.0008 at 6 px. Bounds about twice those.
    apix, w = 2.0, 2.5088
    sigma = atom_sigma(resolution_px * apix)
    c = np.array([[7.3, -4.1, 5.6]])
    rng = np.random.default_rng(1)
    rot, shift = random_rotations(4, rng), rng.uniform(-2, 2, size=(4, 2))
    got = spectrum_to_images(SliceProjector(rasterize_atoms(c, [w], sigma, D, apix), apix)
                             .spectra(rot, shift), D, apix)
    moved = c @ rot.transpose(0, 2, 1)
    moved[..., :2] += shift[:, None, :] * apix
    ax = (np.arange(D) - D // 2) * apix
    dx = ax[None, None, :] - moved[:, :, 0, None]
    dy = ax[None, :, None] - moved[:, :, 1, None]
    analytic = w / (2 * math.pi * sigma**2) * np.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    err = _rel(got, analytic)
    assert err < bound, err
    assert _rel(np.roll(got, 1, axis=-1), analytic) > 0.3  # one pixel off: 0.73 at 4 px
    # a projection keeps the mass (1.0% and 0.25% over: the gridding correction at DC)
    assert got.sum(axis=(1, 2)) * apix**2 == pytest.approx(np.full(4, w), rel=0.02)


@pytest.mark.parametrize("D", [32, 64])
def test_slices_match_the_exact_projection_of_the_same_atoms(D):
    # 300 atoms: the interpolated central slices against the analytic transform evaluated on
    # each slice (the synthetic molecule's exact projector), with CTF and shifts
    apix = 2.0
    sigma = atom_sigma(4 * apix)
    rng = np.random.default_rng(2)
    c, w = rng.normal(size=(300, 3)) * D * apix * 0.12, rng.uniform(1.5, 5.2, 300)
    rot, shift = random_rotations(6, rng), rng.uniform(-2, 2, size=(6, 2))
    ctf = np.column_stack([np.full(6, D), np.full(6, apix), np.full(6, 15000.0),
                           np.full(6, 14500.0), np.full(6, 30.0), np.full(6, 300.0),
                           np.full(6, 2.7), np.full(6, 0.1), np.zeros(6)])
    proj = SliceProjector(rasterize_atoms(c, w, sigma, D, apix), apix)
    got = spectrum_to_images(proj.spectra(rot, shift), D, apix, ctf)
    exact = spectrum_to_images(project_blobs_fourier(c, np.full(300, sigma), _amplitude(w, sigma),
                                                     rot, D, apix, shift), D, apix, ctf)
    err = _rel(got, exact)
    # controls: the transposed pose (0.39, 1.09) and the shift's sign flipped (0.91, 1.26)
    wrong = spectrum_to_images(proj.spectra(rot.transpose(0, 2, 1), shift), D, apix, ctf)
    flipped = spectrum_to_images(proj.spectra(rot, -shift), D, apix, ctf)
    assert _rel(wrong, exact) > 10 * err and _rel(flipped, exact) > 10 * err


def test_the_real_space_reference_agrees_with_the_exact_fourier_projector():
    # the two exact routes (sampled 2-D Gaussians; the analytic transform on the DFT grid)
    # differ only by aliasing, small for atoms 0.9 px wide
    D, apix = 32, 2.0
    sigma = atom_sigma(4 * apix)
    rng = np.random.default_rng(3)
    c, w = rng.normal(size=(50, 3)) * 8, rng.uniform(1.5, 5.2, 50)
    rot = random_rotations(3, rng)
    real = project_atoms_real(c, w, sigma, rot, D, apix)
    fourier = spectrum_to_images(project_blobs_fourier(c, np.full(50, sigma),
                                                       _amplitude(w, sigma), rot, D, apix),
                                 D, apix)
    assert _rel(real, fourier) < 0.01


@pytest.mark.parametrize("weights", [[1, 1], [1, 3], [0.2, 0.5, 0.3], [1, 0, 2]])
def test_state_counts_are_exact_and_follow_the_weights(weights):
    for n in (7, 1250):
        counts = state_counts(n, np.array(weights, float))
        assert counts.sum() == n
        share = n * np.array(weights) / np.sum(weights)
        assert (np.abs(counts - share) < 1).all()


@pytest.mark.parametrize("fields, message", [
    ({"state_weights": (1.0, -1.0)}, "non-negative"),
    ({"state_weights": (0.0, 0.0)}, "positive sum"),
    ({"D": 33}, "even integer"),
    ({"resolution": 0.0}, "resolution must be positive"),
])
def test_bad_settings_are_refused(fields, message):
    from ampcheck.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        AtomicSynthConfig(**fields)


@pytest.mark.parametrize("counts, workers, parts", [
    ([1000, 1000], 2, [(0, 0, 4), (1, 0, 4)]),  # a state each: each map made once
    ([500, 1500], 2, [(0, 0, 2), (1, 0, 3), (1, 3, 6)]),  # the larger state in two parts
    ([2000], 2, [(0, 0, 4), (0, 4, 8)]),
    ([300, 0, 10], 4, [(0, 0, 1), (0, 1, 2), (1, 0, 0), (2, 0, 1)]),  # no image: its map only
    ([1000, 1000], 1, [(0, 0, 4), (1, 0, 4)]),
])
def test_the_render_plan_covers_every_chunk_once_in_the_states_order(counts, workers, parts):
    plan = render_plan(np.array(counts), workers)
    assert plan == parts
    for s, k in enumerate(counts):  # contiguous runs from 0 to the state's last chunk
        runs = [(a, b) for t, a, b in plan if t == s]
        assert runs[0][0] == 0 and runs[-1][1] == -(-k // 256)
        assert all(b0 == a1 for (_, b0), (a1, _) in zip(runs, runs[1:], strict=False))
