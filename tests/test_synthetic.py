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


def test_translations_are_what_centres_the_particle():
    # Noiseless, no CTF influence on the centroid sign: compare the particle's centre of mass
    # (projection route without CTF) with -trans*D from the parameters the generator writes.
    cfg = SynthConfig(n=8, D=64, snr=float("inf"), max_shift_px=6.0, seed=1)
    params = draw_parameters(cfg)
    asm = Assembly.default()
    from ampcheck.cryoem.volumes import project_blobs_real

    centred = project_blobs_real(asm.centers(params.hinge_deg), asm.reference.sigmas,
                                 asm.weights(params.z_class), params.rot, 64, cfg.pixel_size)
    moved = project_blobs_real(asm.centers(params.hinge_deg), asm.reference.sigmas,
                               asm.weights(params.z_class), params.rot, 64, cfg.pixel_size,
                               params.shift_px)
    ax = np.arange(64)

    def com(img):
        return np.array([(img.sum(0) * ax).sum(), (img.sum(1) * ax).sum()]) / img.sum()

    trans_px = -params.shift_px  # what poses.pkl stores, times D
    for b in range(8):
        np.testing.assert_allclose(com(moved[b]) + trans_px[b], com(centred[b]), atol=1e-6)


def test_noise_level_matches_requested_snr():
    cfg = SynthConfig(n=600, D=32, snr=0.5, seed=2)
    params = draw_parameters(cfg)
    clean = render_clean(Assembly.default(), params, slice(0, 600), cfg)
    mask = synthetic._mask(32)
    signal_var = clean[:, mask].var(axis=1).mean()
    # The generator's noise std from its 512-image pilot; the pilot is a subset of these 600.
    pilot_var = clean[:512][:, mask].var(axis=1).mean()
    assert signal_var / pilot_var == pytest.approx(1, rel=0.1)


def test_measured_snr_and_noise_statistics(tmp_path):
    res = generate(tmp_path / "s", SynthConfig(n=300, D=32, snr=0.2, seed=5), show_progress=False)
    m = res.manifest
    assert m["snr_measured"] == pytest.approx(0.2, rel=0.15)
    # Residual = image - clean signal must be white Gaussian noise of the recorded std.
    cfg = SynthConfig(n=300, D=32, snr=0.2, seed=5)
    clean = render_clean(Assembly.default(), draw_parameters(cfg), slice(0, 300), cfg)
    noise = io.read_stack(res.out / "particles.mrcs")[:] - clean
    assert noise.std() == pytest.approx(m["noise_std"], rel=0.01)
    assert abs(noise.mean()) < 5 * m["noise_std"] / np.sqrt(noise.size)


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


def test_molecule_stays_inside_the_box_at_every_conformation():
    asm = Assembly.default()
    extreme = asm.centers(np.array([-30.0, 30.0]))
    radius = np.linalg.norm(extreme, axis=-1) + 3 * asm.reference.sigmas
    cfg = SynthConfig()
    assert radius.max() + cfg.shift_px * cfg.pixel_size < 0.5 * cfg.D * cfg.pixel_size


def test_existing_directory_is_kept_unless_forced(tmp_path):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        generate(out, SynthConfig(**SMALL), show_progress=False)
    assert (out / "precious.txt").read_text() == "mine"
    generate(out, SynthConfig(**SMALL), force=True, show_progress=False)
    assert not (out / "precious.txt").exists() and (out / "particles.mrcs").is_file()


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


@pytest.mark.parametrize("kwargs", [dict(D=33), dict(D=8), dict(n=1), dict(snr=0),
                                    dict(snr=-1), dict(p_subunit=1.5),
                                    dict(hinge_range_deg=(10, -10)), dict(apix=0),
                                    dict(max_shift_px=100)])
def test_bad_configuration_is_rejected(kwargs):
    with pytest.raises(ConfigError):
        SynthConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown size"):
        SynthConfig.preset("huge")
    assert SynthConfig.preset("paper").D == 128 and SynthConfig.preset("paper").n == 50_000
    assert SynthConfig.preset("ci", n=100).n == 100
