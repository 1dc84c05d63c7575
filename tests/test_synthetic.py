"""The synthetic generator: determinism, ground truth, noise level, atomic output."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest

from ampcheck.cryoem import io
from ampcheck.data import synthetic
from ampcheck.data.synthetic import Assembly, SynthConfig, draw_parameters, generate, render_clean
from ampcheck.errors import ConfigError, InputError

SMALL = dict(n=40, D=32, volume_grid=2)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "set"
    return generate(out, SynthConfig(**SMALL, seed=3), show_progress=False)


def test_writes_every_file_with_consistent_counts(small_set):
    out = small_set.out
    for name in ("particles.mrcs", "poses.pkl", "ctf.pkl", "truth.npz", "manifest.json"):
        assert (out / name).is_file(), name
    stack = io.read_stack(out / "particles.mrcs")
    assert (len(stack), stack.D) == (40, 32)
    assert stack.apix == pytest.approx(192 / 32)
    rot, trans = io.read_poses(out / "poses.pkl", n=40)
    ctf = io.read_ctf(out / "ctf.pkl", n=40)
    assert rot.shape == (40, 3, 3) and trans.shape == (40, 2)
    assert np.all(ctf[:, 0] == 32) and np.allclose(ctf[:, 1], 6.0)
    assert np.all((ctf[:, 2] >= 1e4) & (ctf[:, 2] <= 3e4))  # defocus 1-3 µm
    assert np.all(ctf[:, 3] <= ctf[:, 2])
    np.testing.assert_allclose(ctf[:, 5:8], [[300, 2.7, 0.1]] * 40, rtol=1e-6)
    truth = np.load(out / "truth.npz")
    assert set(truth.files) == {"z_continuous", "z_class", "hinge_deg"}
    assert truth["z_continuous"].min() >= 0 and truth["z_continuous"].max() <= 1
    assert set(np.unique(truth["z_class"])) <= {0, 1}
    np.testing.assert_allclose(truth["hinge_deg"], -30 + 60 * truth["z_continuous"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n"] == 40 and manifest["D"] == 32 and manifest["seed"] == 3
    assert manifest["generator_version"] == synthetic.GENERATOR_VERSION
    for entry in manifest["volumes"]:
        with mrcfile.open(out / entry["file"]) as m:
            assert m.data.shape == (32, 32, 32)
            assert float(m.voxel_size.x) == pytest.approx(6.0)


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path, small_set):
    again = generate(tmp_path / "again", SynthConfig(**SMALL, seed=3), show_progress=False)
    for name in ("particles.mrcs", "poses.pkl", "ctf.pkl", "truth.npz"):
        assert (again.out / name).read_bytes() == (small_set.out / name).read_bytes(), name
    other = generate(tmp_path / "other", SynthConfig(**SMALL, seed=4), show_progress=False)
    assert (other.out / "particles.mrcs").read_bytes() != \
        (small_set.out / "particles.mrcs").read_bytes()


def test_written_translations_centre_the_particle(tmp_path):
    # Noiseless images from the generator's own Fourier route; poses.pkl read back from disk.
    # Shifting each image by trans * D pixels (cryoDRGN's convention) must put the particle
    # where the undisplaced projection has it (centres of mass of CTF-free renderings).
    cfg = SynthConfig(n=8, D=64, snr=float("inf"), max_shift_px=5.0, seed=1, volume_grid=1)
    res = generate(tmp_path / "s", cfg, show_progress=False)
    _, trans = io.read_poses(res.out / "poses.pkl")
    params, asm = draw_parameters(cfg), Assembly.default()
    from ampcheck.cryoem.volumes import project_blobs_fourier, spectrum_to_images

    def render(shifts, ctf=None):
        spec = project_blobs_fourier(asm.centers(params.hinge_deg), asm.reference.sigmas,
                                     asm.weights(params.z_class), params.rot, 64,
                                     cfg.pixel_size, shifts)
        return spectrum_to_images(spec, 64, cfg.pixel_size, ctf)

    moved, centred = render(params.shift_px), render(None)
    ax = np.arange(64)

    def com(img):
        return np.array([(img.sum(0) * ax).sum(), (img.sum(1) * ax).sum()]) / img.sum()

    assert np.abs(params.shift_px).max() > 2  # the test needs real displacements
    for b in range(8):
        np.testing.assert_allclose(com(moved[b]) + trans[b] * 64, com(centred[b]), atol=1e-3)
    # and the stack holds exactly the displaced, CTF-modulated projections (white particles)
    images = io.read_stack(res.out / "particles.mrcs")[:]
    expected = -render(params.shift_px, params.ctf)
    np.testing.assert_allclose(images, expected, atol=1e-4 * np.abs(expected).max())


def test_noise_level_matches_requested_snr(tmp_path):
    # Independent of the generator's bookkeeping: render the noiseless signal again, subtract
    # it from the written stack, and measure SNR = var(signal in mask) / var(noise).
    cfg = SynthConfig(n=600, D=32, snr=0.2, seed=5, volume_grid=1)
    res = generate(tmp_path / "s", cfg, show_progress=False)
    clean = render_clean(Assembly.default(), draw_parameters(cfg), slice(0, 600), cfg)
    noise = io.read_stack(res.out / "particles.mrcs")[:] - clean
    ax = np.arange(32) - 16
    mask = np.hypot(*np.meshgrid(ax, ax, indexing="ij")) <= 16
    snr = clean[:, mask].var(axis=1).mean() / noise.var()
    assert snr == pytest.approx(0.2, rel=0.05)
    assert res.manifest["snr_measured"] == pytest.approx(snr, rel=0.05)
    # white Gaussian noise: zero mean, no correlation between neighbouring pixels
    assert abs(noise.mean()) < 5 * noise.std() / np.sqrt(noise.size)
    lag1 = (noise[:, :, 1:] * noise[:, :, :-1]).mean() / noise.var()
    assert abs(lag1) < 5 / np.sqrt(noise.size)
    from scipy import stats

    assert stats.normaltest(noise.ravel()[:20000]).pvalue > 1e-4


def test_noiseless_images_equal_rendering_one_by_one_across_chunks(tmp_path):
    # 300 > one chunk of 256: images on both sides of the boundary equal single renders.
    cfg = SynthConfig(n=300, D=32, snr=float("inf"), seed=6, volume_grid=1)
    res = generate(tmp_path / "clean", cfg, show_progress=False)
    stack = io.read_stack(res.out / "particles.mrcs")
    params, asm = draw_parameters(cfg), Assembly.default()
    for i in (0, 255, 256, 299):
        single = render_clean(asm, params, slice(i, i + 1), cfg)[0]
        np.testing.assert_allclose(stack[i], single, rtol=1e-5, atol=1e-4 * np.abs(single).max())


def test_heterogeneity_ground_truth_volumes():
    asm = Assembly.default()
    D, apix = 48, 4.0
    absent = asm.volume(0.0, 0).rasterize(D, apix)
    present = asm.volume(0.0, 1).rasterize(D, apix)
    sub = asm.domain == synthetic.DOMAIN_SUBUNIT
    w, s = asm.reference.weights[sub], asm.reference.sigmas[sub]
    expected_mass = (w * (2 * np.pi * s**2) ** 1.5).sum()
    assert (present - absent).sum() * apix**3 == pytest.approx(expected_mass, rel=1e-4)
    # The hinge moves the arm's blobs rigidly about the pivot and leaves the rest alone.
    c0, c30 = asm.centers(np.array([0.0, 30.0]))
    arm = asm.domain == synthetic.DOMAIN_ARM
    assert np.allclose(c0[~arm], c30[~arm])
    d0 = np.linalg.norm(c0[arm] - asm.hinge_pivot, axis=1)
    assert np.allclose(d0, np.linalg.norm(c30[arm] - asm.hinge_pivot, axis=1))
    assert np.abs(c30[arm] - c0[arm]).max() > 10  # Å: a visible motion


def test_molecule_stays_inside_its_stated_radius_at_every_conformation():
    asm = Assembly.default()
    extreme = asm.centers(np.linspace(-90.0, 90.0, 181))
    radius = np.linalg.norm(extreme, axis=-1) + 3 * asm.reference.sigmas
    assert radius.max() < synthetic.MOLECULE_RADIUS_ANGSTROMS
    cfg = SynthConfig()
    assert radius.max() + cfg.shift_px * cfg.pixel_size < 0.5 * cfg.D * cfg.pixel_size


def test_existing_directory_is_kept_unless_forced(tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        generate(out, SynthConfig(**SMALL), show_progress=False)
    with pytest.raises(InputError, match="refusing to replace"):  # not ours: never deleted
        generate(out, SynthConfig(**SMALL), force=True, show_progress=False)
    assert (out / "precious.txt").read_text() == "mine"
    data = tmp_path / "data"
    generate(data, SynthConfig(**SMALL, seed=1), show_progress=False)
    (data / "note.txt").write_text("inside a data set of ours")
    generate(data, SynthConfig(**SMALL, seed=2), force=True, show_progress=False)
    assert not (data / "note.txt").exists()
    assert json.loads((data / "manifest.json").read_text())["seed"] == 2


def test_output_directory_follows_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        res = generate(tmp_path / "m", SynthConfig(**SMALL), show_progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(res.out.stat().st_mode) == 0o755


def test_interrupted_generation_leaves_no_trace(tmp_path, monkeypatch):
    out = tmp_path / "old"
    first = generate(out, SynthConfig(**SMALL, seed=1), show_progress=False)
    before = (first.out / "particles.mrcs").read_bytes()
    calls = {"n": 0}
    real = synthetic.render_clean

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:  # the pilot (first 512 images, two chunks written) passes
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_clean", failing)
    with pytest.raises(KeyboardInterrupt):
        generate(out, SynthConfig(n=600, D=32, seed=2), force=True, show_progress=False)
    assert (out / "particles.mrcs").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


@pytest.mark.parametrize("kwargs", [dict(D=33), dict(D=8), dict(n=1), dict(n=10.0),
                                    dict(snr=0), dict(snr=-1), dict(p_subunit=1.5),
                                    dict(hinge_range_deg=(10, -10)), dict(apix=0),
                                    dict(max_shift_px=100), dict(seed=-1), dict(voltage_kv=-300),
                                    dict(cs_mm=-1), dict(D=32, apix=1.0)])
def test_bad_configuration_is_rejected(kwargs):
    with pytest.raises(ConfigError):
        SynthConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown size"):
        SynthConfig.preset("huge")
    assert SynthConfig.preset("paper").D == 128 and SynthConfig.preset("paper").n == 50_000
    assert SynthConfig.preset("ci", n=100).n == 100
