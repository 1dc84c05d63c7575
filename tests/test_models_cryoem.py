"""The cryo-EM VAE's conventions against independent computations, and its encoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ampcheck.cryoem.ctf import ctf_from_table
from ampcheck.cryoem.fft import ht2_center, symmetrize_ht
from ampcheck.cryoem.volumes import blob_fourier_transform
from ampcheck.data.particles import ParticleDataset
from ampcheck.data.synthetic import Assembly, SynthConfig, draw_parameters, generate
from ampcheck.data.transforms import roll, rot90
from ampcheck.errors import ConfigError
from ampcheck.models.cryoem import CryoVAE, training_mask
from ampcheck.models.table import LatentTable


@pytest.fixture(scope="module")
def noiseless(tmp_path_factory):
    cfg = SynthConfig(n=6, D=64, snr=float("inf"), seed=2, max_shift_px=4.0, volume_grid=1)
    out = generate(tmp_path_factory.mktemp("nl") / "s", cfg, show_progress=False).out
    return cfg, out


def test_prepared_targets_are_the_ctf_modulated_central_slices(noiseless):
    # What the decoder must learn to predict, built independently from the blob model: the
    # analytic transform on the slice coords @ R, as a Hartley value, times the CTF. This ties
    # together poses.pkl (rotation and translation sign), the CTF, the Hartley layout, the
    # mask order and the dataset's contrast inversion.
    cfg, out = noiseless
    ds = ParticleDataset.from_dir(out, window=False, norm=(0.0, 1.0))
    model = CryoVAE(64)
    prep = model.prepare(ds.get_batch(np.arange(6)))
    params, asm = draw_parameters(cfg), Assembly.default()
    apix, coords = cfg.pixel_size, model.coords.double().numpy()
    for i in range(6):
        f = blob_fourier_transform(asm.centers(params.hinge_deg[i:i + 1])[0],
                                   asm.reference.sigmas, asm.weights(params.z_class[i:i + 1])[0],
                                   coords @ params.rot[i] / apix)
        ctf = ctf_from_table(coords[:, :2] / apix, params.ctf[i:i + 1].astype(np.float64))[0]
        expected = ctf * (f.real - f.imag) / apix**2
        got = prep["target"][i].double().numpy()
        # float32 images, poses and CTF rows: measured ~2e-5 relative at D = 64
        assert np.abs(got - expected).max() < 2e-4 * np.abs(expected).max()
        np.testing.assert_allclose(prep["x_enc"][i].numpy(), got * np.sign(ctf), atol=1e-6)


def test_mask_lists_minus_k_mirrored():
    D = 16
    mask = training_mask(D)
    model = CryoVAE(D)
    c = model.coords.numpy()
    np.testing.assert_array_equal(c[::-1], -c)
    assert not mask[len(mask) // 2] and mask.sum() == model.n_pixels and model.n_pixels % 2 == 0
    assert np.all(np.hypot(c[:, 0], c[:, 1]) <= 0.5 + 1e-9)


def test_translation_matches_rolling_the_image():
    D = 32
    rng = np.random.default_rng(0)
    img = rng.normal(size=(1, D, D))
    model = CryoVAE(D)
    h = torch.from_numpy(symmetrize_ht(ht2_center(img))).reshape(1, -1)[:, model.mask].float()
    for shift in [(1, 0), (0, 1), (-3, 2)]:  # (dx, dy) pixels
        rolled = np.roll(img, shift=(shift[1], shift[0]), axis=(1, 2))
        expected = symmetrize_ht(ht2_center(rolled)).reshape(1, -1)[:, model.mask]
        got = model.translate(h, torch.tensor([shift], dtype=torch.float32))
        # Nyquist points of the symmetrised lattice are not shift-covariant: compare inside.
        inner = np.hypot(*model.coords[:, :2].numpy().T) < 0.5 - 1e-9
        np.testing.assert_allclose(got.numpy()[:, inner], expected[:, inner], atol=1e-4)


def test_symmetric_decoding_equals_decoding_every_point():
    model = CryoVAE(16, zdim=3)
    rot = torch.from_numpy(np.linalg.qr(np.random.default_rng(1).normal(size=(2, 3, 3)))[0]
                           ).float()
    rot = rot * torch.sign(torch.linalg.det(rot))[:, None, None]
    z = torch.randn(2, 3)
    full = model.decoder.hartley(model.coords @ rot, z)
    np.testing.assert_allclose(model.decode(rot, z).detach().numpy(), full.detach().numpy(),
                               atol=1e-5)


def test_decoder_with_a_square_first_layer_matches_concatenation():
    # 3·D + zdim = 256 = hidden: cryoDRGN's first layer is then residual (adds its input).
    model = CryoVAE(80, zdim=16)
    dec = model.decoder
    k = torch.rand(1, 30, 3) - 0.5
    k[..., 2] = -k[..., 2].abs()  # the represented hemisphere: no flip
    z = torch.randn(1, 16)
    x = torch.cat([dec._features(k), z[:, None, :].expand(1, 30, 16)], -1)
    reference = dec.mlp(x)  # the plain residual MLP on [features, z]
    np.testing.assert_allclose(dec.fourier(k, z).detach(), reference.detach(), atol=1e-5)


def test_decoded_volume_is_real_and_hermitian_decoder():
    model = CryoVAE(16, zdim=2)
    k = torch.rand(1, 50, 3) - 0.5
    k[0, :10, 2] = 0  # points on the plane kz = 0 too
    k[0, :3, 1] = 0  # and on its line ky = 0
    z = torch.randn(1, 2)
    a, b = model.decoder.fourier(k, z), model.decoder.fourier(-k, z)
    np.testing.assert_allclose(a[..., 0].detach(), b[..., 0].detach(), atol=1e-6)  # Re even
    np.testing.assert_allclose(a[..., 1].detach(), -b[..., 1].detach(), atol=1e-6)  # Im odd
    vol = model.decode_volume(np.zeros(2))
    assert vol.shape == (16, 16, 16) and vol.dtype == np.float32 and np.isfinite(vol).all()


@pytest.mark.parametrize("transform", [lambda x: roll(x, dx=1), lambda x: roll(x, dy=-3, dx=2),
                                       lambda x: rot90(x, 1), lambda x: rot90(x, 3),
                                       lambda x: rot90(x, 1, center="geometric")])
def test_invariant_encoder_is_exactly_invariant_and_base_is_not(noiseless, transform):
    _, out = noiseless
    ds = ParticleDataset.from_dir(out, window=False)
    idx = np.arange(6)

    def encode(model, images):
        batch = ds.get_batch(idx)
        batch["y"] = ds.preprocess(torch.from_numpy(images))
        with torch.no_grad():
            return model.encode(model.prepare(batch)["x_enc"])[0].numpy()

    images = ds.images(idx)
    for name, invariant in (("invariant", True), ("base", False)):
        model = CryoVAE(64, name, seed=3)
        a, b = encode(model, images), encode(model, transform(images))
        gap = np.abs(a - b).max() / np.abs(a).max()
        assert (gap < 1e-4) if invariant else (gap > 1e-2), (name, gap)


def test_bad_model_configuration():
    with pytest.raises(ConfigError, match="unknown encoder preset"):
        CryoVAE(32, "huge")
    with pytest.raises(ConfigError, match="zdim"):
        CryoVAE(32, zdim=0)
    with pytest.raises(ConfigError, match="even"):
        CryoVAE(33)


def test_latent_table_inits_and_fill():
    t = LatentTable(100, 3, "normal", generator=torch.Generator().manual_seed(0))
    mu, logvar = (a.detach() for a in t(torch.arange(100)))
    assert abs(float(mu.mean())) < 0.3 and 0.8 < float(mu.std()) < 1.2
    assert torch.all(logvar == -8)
    z = LatentTable(10, 3, "zero")
    assert torch.all(z(torch.arange(10))[0] == 0)
    z.fill(torch.ones(10, 3), torch.full((10, 3), -2.0))
    assert torch.all(z(torch.tensor([4]))[1] == -2)
    with pytest.raises(ConfigError):
        z.fill(torch.ones(9, 3), torch.ones(9, 3))
    with pytest.raises(ConfigError):
        LatentTable(10, 3, "random")
    assert z.rows.sparse  # sparse gradients: a step touches only the batch's rows


def test_geometry_stays_float32_under_bf16_autocast(noiseless):
    # The training loop runs the networks under bf16 autocast on CUDA; translations, CTF and
    # the rotated slice coordinates must not drop to bf16 (CPU autocast exercises the same
    # dispatch here).
    _, out = noiseless
    ds = ParticleDataset.from_dir(out)
    model = CryoVAE(64)
    batch = ds.get_batch(np.arange(4))
    plain = model.prepare(batch)
    rotated = model.coords[None, :10] @ batch["rot"][:1]
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        auto = model.prepare(batch)
        features = model.decoder._features(rotated)
    for key in ("target", "x_enc", "ctf"):
        assert auto[key].dtype == torch.float32
        assert torch.equal(auto[key], plain[key]), key
    assert torch.equal(features, model.decoder._features(rotated))


def test_invariant_encoder_centres_on_the_particle():
    """The centroid that the invariant encoder centres on is where a blob actually is."""
    D, (x0, y0) = 64, (7.0, -11.0)  # pixels from the image centre D/2
    yy, xx = np.mgrid[:D, :D] - D // 2
    image = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 3.0**2))
    model = CryoVAE(D, "invariant")
    y = symmetrize_ht(ht2_center(torch.from_numpy(image[None]).float())).reshape(1, -1)
    found = model.encoder.centroid(y[:, model.mask]).numpy()[0]
    np.testing.assert_allclose(found, [x0, y0], atol=0.05)


@pytest.mark.parametrize("rows", [4, 600])  # fewer and more rows than features: both paths
def test_resid_linear_is_x_plus_wx_plus_b_with_its_gradients(rows):
    from ampcheck.models.mlp import ResidLinear

    torch.manual_seed(0)
    layer = ResidLinear(32, 32)
    x = torch.randn(rows, 32, requires_grad=True)
    out = layer(x)
    (out * torch.linspace(-1, 1, 32)).sum().backward()
    # the same layer written out in float64
    x64 = x.detach().double().requires_grad_()
    w64 = layer.weight.detach().double().requires_grad_()
    b64 = layer.bias.detach().double().requires_grad_()
    ref = x64 + x64 @ w64.T + b64
    (ref * torch.linspace(-1, 1, 32, dtype=torch.float64)).sum().backward()
    for got, want in ((out, ref), (x.grad, x64.grad), (layer.weight.grad, w64.grad),
                      (layer.bias.grad, b64.grad)):
        torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-5)
