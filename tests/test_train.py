"""The one training loop: variants, determinism, checkpoints, guards, and what training reaches."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from ampcheck.checkpoints import CHECKPOINT
from ampcheck.data.particles import ParticleDataset
from ampcheck.data.synthetic import SynthConfig, generate
from ampcheck.data.twins import empirical_moments
from ampcheck.errors import ConfigError, InputError, TrainingDiverged
from ampcheck.train import TrainConfig, TrainedModel, budget_config, train

TINY = dict(D=32, volume_grid=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = generate(tmp_path_factory.mktemp("tiny") / "s", SynthConfig(n=64, seed=4, **TINY),
                   show_progress=False).out
    return ParticleDataset.from_dir(out)


def quick(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 16, "lr": 1e-3, **kw})


def params_of(run: TrainedModel) -> dict[str, torch.Tensor]:
    out = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    if run.table is not None:
        out["table"] = run.table.rows.weight.detach().clone()
    return out


@pytest.mark.parametrize("variant", ["vae", "vlt", "twin-perm", "twin-noise"])
def test_every_variant_trains_and_is_deterministic(tiny, variant):
    a = train(quick(variant=variant), tiny, show_progress=False)
    b = train(quick(variant=variant), tiny, show_progress=False)
    c = train(quick(variant=variant, seed=1), tiny, show_progress=False)
    assert [r.loss for r in a.history] == [r.loss for r in b.history]
    assert all(torch.equal(x, params_of(b)[k]) for k, x in params_of(a).items())
    assert [r.loss for r in a.history] != [r.loss for r in c.history]
    assert a.history[-1].images == 64 and all(np.isfinite(r.loss) for r in a.history)
    mu, logvar = a.latents()
    assert mu.shape == (64, 8) and np.isfinite(mu).all() and np.isfinite(logvar).all()


@pytest.mark.parametrize("variant", ["vae", "vlt", "twin-perm"])
def test_resumed_training_equals_uninterrupted_training(tiny, tmp_path, variant):
    straight = train(quick(variant=variant, epochs=3), tiny, show_progress=False)
    train(quick(variant=variant, epochs=1), tiny, out=tmp_path, show_progress=False)
    resumed = train(quick(variant=variant, epochs=3), tiny, out=tmp_path, resume=True,
                    show_progress=False)
    assert [r.loss for r in resumed.history] == [r.loss for r in straight.history]
    for k, x in params_of(straight).items():
        assert torch.equal(x, params_of(resumed)[k]), k
    with pytest.raises(ConfigError, match="another configuration"):
        train(quick(variant=variant, epochs=3, lr=5e-4), tiny, out=tmp_path, resume=True)


def test_a_checkpoint_from_before_fused_adam_resumes_fused(tiny, tmp_path):
    straight = train(quick(epochs=3), tiny, show_progress=False)
    train(quick(epochs=1), tiny, out=tmp_path, show_progress=False)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    for group in state["optimizers"]["model"]["param_groups"]:
        group["fused"] = None  # what torch.optim.Adam() without fused=True saves
    torch.save(state, tmp_path / CHECKPOINT)
    resumed = train(quick(epochs=3), tiny, out=tmp_path, resume=True, show_progress=False)
    assert [r.loss for r in resumed.history] == [r.loss for r in straight.history]


def test_checkpoint_loads_with_weights_only_and_gives_the_same_latents(tiny, tmp_path):
    run = train(quick(variant="vlt"), tiny, out=tmp_path, show_progress=False)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["format"] == 1 and len(state["history"]) == 2
    again = TrainedModel.load(tmp_path / CHECKPOINT, tiny)
    assert not run.model.training and not again.model.training  # in the mode train() leaves
    np.testing.assert_array_equal(again.latents()[0], run.latents()[0])
    assert [r.loss for r in again.history] == [r.loss for r in run.history]
    with pytest.raises(InputError, match="trained on 64 images"):
        TrainedModel.load(tmp_path / CHECKPOINT, tiny.subset(np.arange(40)))
    other = generate(tmp_path / "other", SynthConfig(n=64, seed=9, D=48, volume_grid=1),
                     show_progress=False).out
    with pytest.raises(InputError, match="trained on 64 images of 32 px"):
        TrainedModel.load(tmp_path / CHECKPOINT, ParticleDataset.from_dir(other))
    run.save(tmp_path / "saved.pt")  # a model, without optimiser state
    (tmp_path / "resume").mkdir()
    (tmp_path / "saved.pt").rename(tmp_path / "resume" / CHECKPOINT)
    with pytest.raises(InputError, match="not a resumable"):
        train(quick(variant="vlt", epochs=3), tiny, out=tmp_path / "resume", resume=True)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(InputError, match="not an ampcheck checkpoint"):
        TrainedModel.load(tmp_path / "junk.pt", tiny)


def test_elbo_is_minus_the_training_objective_per_image(tiny):
    run = train(quick(), tiny, show_progress=False)
    idx = np.arange(16)
    mu, logvar = run.latents(idx)
    # With a near-zero posterior width every sample is the mean: ELBO = -(recon(mu) + b*w*KL).
    tight = np.full_like(logvar, -30.0)
    kl = -0.5 * (1 + tight - mu**2 - np.exp(tight)).sum(-1)  # by hand, not kl_divergence
    expected = -(run.recon_loss(tiny, idx, mu) + run.beta * run.model.kl_weight * kl)
    np.testing.assert_allclose(run.elbo(tiny, idx, mu, tight, samples=3), expected, rtol=1e-5)
    # Wider posteriors cost KL and reconstruction: a lower ELBO on average.
    assert run.elbo(tiny, idx, mu, logvar + 4, samples=4).mean() < expected.mean()
    assert run.beta == pytest.approx(1 / 8)  # beta defaults to 1/zdim


def test_twin_assignment_never_changes(tiny, monkeypatch):
    seen: dict[int, int] = {}
    run = train(quick(variant="twin-perm", epochs=0), tiny, show_progress=False)
    twins_type = type(run.twins)
    original = twins_type.twin_index

    def recording(self, indices):
        out = original(self, indices)
        for i, t in zip(np.atleast_1d(indices), np.atleast_1d(out), strict=True):
            assert seen.setdefault(int(i), int(t)) == int(t)
        return out

    monkeypatch.setattr(twins_type, "twin_index", recording)
    run = train(quick(variant="twin-perm", epochs=3), tiny, show_progress=False)
    assert len(seen) == 64 and all(i != t for i, t in seen.items())
    assert sorted(seen.values()) == list(range(64))


def test_the_encoder_sees_the_twin_and_the_loss_the_image(tiny):
    perm_run = train(quick(variant="twin-perm"), tiny, show_progress=False)
    perm = perm_run.twins.twin_index(np.arange(64))
    mu_twin, _ = perm_run.latents()
    mu_enc, _ = perm_run.encode(tiny)
    np.testing.assert_allclose(mu_twin, mu_enc[perm], atol=1e-6)  # image i gets twin's code
    noise_run = train(quick(variant="twin-noise"), tiny, show_progress=False)
    noise = noise_run.twins.twins(np.arange(64))
    mu_noise, _ = noise_run.latents()
    np.testing.assert_allclose(mu_noise, noise_run.encode(tiny, transform=lambda x: noise)[0],
                               atol=1e-6)
    # The loss is against the image itself: recon_loss of image i does not involve its twin.
    z = np.zeros((64, 8), dtype=np.float32)
    loss = noise_run.recon_loss(tiny, np.arange(64), z)
    assert np.allclose(loss, noise_run.recon_loss(tiny, np.arange(64), z))
    prep = noise_run.model.prepare(tiny.get_batch(np.arange(2)))
    target = tiny.get_batch(np.arange(2))["y"]
    assert torch.allclose(prep["target"], noise_run.model.prepare({**tiny.get_batch(
        np.arange(2)), "y": target})["target"])


def test_vlt_trains_the_table_rows_and_leaves_the_encoder_alone(tiny):
    before = train(quick(variant="vlt", epochs=0), tiny, show_progress=False)
    after = train(quick(variant="vlt", epochs=1), tiny, show_progress=False)
    for name, p in before.model.encoder.state_dict().items():
        assert torch.equal(p, after.model.encoder.state_dict()[name]), name
    moved = (after.table.rows.weight - before.table.rows.weight).abs().sum(-1)
    assert bool((moved > 0).all())  # one epoch touches every row once
    with pytest.raises(ConfigError, match="no trained encoder"):
        after.encode(tiny)


def test_kl_is_weighted_by_the_number_of_masked_pixels(tiny):
    run = train(quick(epochs=0), tiny, show_progress=False)
    D = 32
    k = np.arange(-D // 2, D // 2 + 1)
    inside = (k[:, None] ** 2 + k[None, :] ** 2 <= (D // 2) ** 2).sum() - 1  # minus DC
    assert run.model.n_pixels == inside
    assert run.model.kl_weight == pytest.approx(1 / inside)
    assert run.beta == pytest.approx(1 / 8)


def test_invariant_encoder_stays_invariant_when_trained_on_windowed_data(tiny):
    from ampcheck.data.transforms import roll, rot90

    assert tiny.windowed  # the default preprocessing, with cryoDRGN's window
    run = train(quick(encoder="invariant"), tiny, show_progress=False)
    mu, _ = run.encode(tiny)
    for t in (lambda x: roll(x, dx=1), lambda x: rot90(x, 1), lambda x: roll(x, dy=3, dx=-2)):
        np.testing.assert_allclose(run.encode(tiny, transform=t)[0], mu, atol=1e-4)


def test_noise_twins_match_the_data_set_moments(tiny):
    run = train(quick(variant="twin-noise", epochs=0), tiny, show_progress=False)
    mean, std = empirical_moments(tiny.images(np.arange(64)))
    assert run.twins.mean == pytest.approx(mean, rel=1e-6, abs=1e-9)
    assert run.twins.std == pytest.approx(std, rel=1e-6)
    twins = run.twins.twins(np.arange(64))
    assert twins.shape == (64, 32, 32)
    np.testing.assert_array_equal(twins, run.twins.twins(np.arange(64)))  # fixed
    assert twins.std() == pytest.approx(std, rel=0.02)


def test_frozen_table_from_the_encoder_reproduces_the_encoders_loss(tiny):
    vae = train(quick(epochs=2), tiny, show_progress=False)
    vlt = train(quick(variant="vlt", table_init="from_encoder", freeze_table=True, epochs=0),
                tiny, encoder_from=vae, show_progress=False)
    vlt.model.decoder.load_state_dict(vae.model.decoder.state_dict())  # the same decoder
    idx = np.arange(64)
    mu_enc, logvar_enc = vae.encode(tiny, idx)
    mu_tab, logvar_tab = vlt.latents(idx)
    np.testing.assert_array_equal(mu_tab, mu_enc)
    np.testing.assert_array_equal(logvar_tab, logvar_enc)
    np.testing.assert_allclose(vlt.recon_loss(tiny, idx, mu_tab), vae.recon_loss(tiny, idx, mu_enc),
                               rtol=1e-6)
    # Frozen: training moves the decoder, not the table.
    trained = train(quick(variant="vlt", table_init="from_encoder", freeze_table=True),
                    tiny, encoder_from=vae, show_progress=False)
    np.testing.assert_array_equal(trained.latents(idx)[0], mu_enc)
    with pytest.raises(ConfigError, match="encoder_from"):
        train(quick(variant="vlt", table_init="from_encoder"), tiny)


def test_nan_loss_stops_with_epoch_and_batch(tiny, monkeypatch):
    from ampcheck.models.cryoem import CryoVAE

    calls = {"n": 0}
    real = CryoVAE.recon_loss

    def poisoned(self, prep, z):
        calls["n"] += 1
        out = real(self, prep, z)
        return out * float("nan") if calls["n"] == 7 else out

    monkeypatch.setattr(CryoVAE, "recon_loss", poisoned)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, batch 3: the loss is nan"):
        train(quick(epochs=2), tiny, show_progress=False)  # 4 batches an epoch


def test_exploding_loss_stops(tiny, monkeypatch):
    from ampcheck.models.cryoem import CryoVAE

    calls = {"n": 0}
    real = CryoVAE.recon_loss

    def exploding(self, prep, z):
        calls["n"] += 1
        return real(self, prep, z) * (1e9 if calls["n"] == 3 else 1.0)

    monkeypatch.setattr(CryoVAE, "recon_loss", exploding)
    with pytest.raises(TrainingDiverged, match="epoch 1, batch 3: the loss .* is over"):
        train(quick(), tiny, show_progress=False)


@pytest.mark.parametrize("kwargs, message", [
    (dict(encoder="huge"), "encoder must be one of"),
    (dict(zdim=0), "zdim must be a positive integer"),
    (dict(variant="teacher"), "variant must be one of"),
    (dict(model="gan"), "model must be one of"),
    (dict(table_init="ones"), "table_init must be one of"),
    (dict(lr=-1.0), "lr must be"),
    (dict(batch_size=0), "batch_size must be"),
    (dict(device="tpu"), "device must be"),
    (dict(freeze_table=True), "vlt variant only"),
    (dict(model="mnist", encoder="large"), "one encoder"),
])
def test_bad_configuration_is_rejected(tiny, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        train(TrainConfig(**kwargs), tiny, show_progress=False)


def test_budgets_are_named_configs():
    smoke, full = budget_config("smoke"), budget_config("full")
    # full is the paper's (cryoDRGN's defaults): 50 epochs of every image, lr 1e-4, batch 8
    assert full.epochs == 50 and full.max_images is None
    assert (full.resolved_lr, full.resolved_batch_size) == (1e-4, 8)
    assert smoke.epochs < full.epochs
    # the main job's: 1,000 images seen 12 times at 10x the learning rate; overrides still win
    standard = budget_config("standard")
    assert (standard.epochs, standard.max_images, standard.resolved_lr) == (12, 1000, 1e-3)
    assert budget_config("standard", lr=1e-4).resolved_lr == 1e-4
    assert budget_config("standard", model="mnist").resolved_lr == 1e-3  # MNIST's own default
    assert budget_config("smoke", variant="vlt").variant == "vlt"
    with pytest.raises(ConfigError, match="unknown budget"):
        budget_config("huge")
    with pytest.raises(ConfigError, match="unknown model"):
        budget_config("smoke", model="gan")


def test_training_logs_each_epoch_and_prints_nothing(tiny, capsys, ampcheck_log):
    # library code logs; where the records go is the application's choice (the CLI prints
    # them), so nothing reaches stderr by itself
    caplog = ampcheck_log
    train(quick(epochs=2), tiny)
    records = [r for r in caplog.records if r.name == "ampcheck.train"]
    lines = [r.getMessage() for r in records]
    assert len(lines) == 2 and "epoch 1/2" in lines[0] and "epoch 2/2" in lines[1]
    assert all("images/s" in line for line in lines)
    assert all(r.levelno == logging.INFO for r in records)
    assert capsys.readouterr().err == ""
    caplog.clear()
    train(quick(epochs=1), tiny, show_progress=False)
    assert not [r for r in caplog.records if r.name == "ampcheck.train"]


def test_progress_without_a_terminal_logs_every_tenth(ampcheck_log):
    from ampcheck._progress import progress

    caplog = ampcheck_log
    assert list(progress(range(20), 20, "chunks", unit="chunk")) == list(range(20))
    lines = [r.getMessage() for r in caplog.records if r.name == "ampcheck._progress"]
    assert len(lines) == 10 and lines[0].startswith("chunks: 2/20 chunk (10%")
    assert lines[-1].startswith("chunks: 20/20 chunk (100%")


def test_importing_ampcheck_configures_no_logging():
    code = ("import logging, ampcheck, ampcheck.train, ampcheck.checks, ampcheck.data.particles;"
            "print(len(logging.getLogger('ampcheck').handlers), len(logging.getLogger().handlers),"
            " logging.getLogger('ampcheck').level)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0", "0", "0"]


def test_every_budget_name_has_training_and_evaluation_settings():
    # one source for each fact: a budget (ampcheck.budgets) has the checks' evaluation sizes
    # and each family that trains at budgets its training there (ampcheck.families); the
    # cryo-EM encoder presets are the names the models size
    from ampcheck import budgets, families
    from ampcheck.checks import settings_for
    from ampcheck.models.encoders import ENCODER_PRESETS

    assert list(budgets.BUDGETS) == ["smoke", "standard", "medium", "full"]  # cheapest first
    assert budgets.DEFAULT_BUDGET in budgets.BUDGETS
    trainable = families.trainable_families()
    assert [f.name for f in trainable][:2] == ["cryoem", "mnist"]
    for name, budget in budgets.BUDGETS.items():
        assert budget.name == name and settings_for(name).budget == name
        for family in trainable:
            assert set(family.training) == set(budgets.BUDGETS), family.name
            cfg = budget_config(name, model=family.name)
            assert cfg.epochs == budget.training(family).epochs
    assert tuple(ENCODER_PRESETS) == families.CRYOEM_ENCODERS
    assert TrainConfig().encoder == families.get_family("cryoem").default_encoder == "base"
    assert TrainConfig(model="mnist").encoder == "base"


@pytest.mark.gpu
def test_cuda_bf16_training_runs(tiny):
    run = train(quick(device="cuda", amp=True), tiny, show_progress=False)
    assert np.isfinite(run.history[-1].loss)


# ------------------------------------------------------------------ what training reaches
@pytest.mark.cryoem
def test_constant_latent_decoder_recovers_a_homogeneous_volume(tmp_path):
    # Noiseless, homogeneous data (no hinge motion, subunit always present) and a constant
    # latent (a zero table, frozen): the decoder alone must learn the volume. Measured at this
    # budget (D = 32, 6 A/px, Nyquist 12 A): FSC > 0.5 out to ~12.4 A; the test asks for 16 A.
    from ampcheck.cryoem import io
    from ampcheck.metrics import fsc, fsc_resolution

    cfg = SynthConfig(n=600, D=32, snr=float("inf"), hinge_range_deg=(0.0, 0.0),
                      p_subunit=1.0, volume_grid=1, seed=0)
    out = generate(tmp_path / "homog", cfg, show_progress=False).out
    data = ParticleDataset.from_dir(out)
    run = train(TrainConfig(variant="vlt", table_init="zero", freeze_table=True, epochs=2,
                            lr=1e-3), data, show_progress=False)
    truth, apix = io.read_mrc(out / "volumes" / "class1_z0.500.mrc")
    curve = fsc(run.decode_volume(np.zeros(8)), truth)
    assert fsc_resolution(curve, apix, 0.5) < 16.0, np.round(curve, 3)
    assert curve[1:6].min() > 0.95  # low resolution: right sign, scale-free agreement


def _latent_r2(run) -> tuple[float, float]:
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsRegressor

    mu, _ = run.latents()
    z = run.data.truth["z_continuous"]
    lin = cross_val_score(LinearRegression(), mu, z, cv=5, scoring="r2").mean()
    knn = cross_val_score(KNeighborsRegressor(10), mu, z, cv=5, scoring="r2").mean()
    return float(lin), float(knn)


@pytest.mark.cryoem
@pytest.mark.slow
@pytest.mark.parametrize("encoder, bound", [("base", 0.2), ("invariant", 0.15)])
def test_vae_latents_recover_the_continuous_coordinate_at_the_medium_budget(ci_set, encoder,
                                                                          bound):
    # Measured on the ci set (2,000 images, SNR 0.1, seed 0): at the smoke budget (1,000
    # images x 1-2 epochs) the latents carry nothing yet (5-fold CV R^2 0.004 linear,
    # -0.06 kNN); at the medium budget (all images, 5 epochs) R^2 = 0.32 linear, 0.30 kNN for
    # the base encoder and 0.24 linear, 0.18 kNN for the exactly invariant one.
    run = train(budget_config("medium", encoder=encoder), ci_set, show_progress=False)
    lin, knn = _latent_r2(run)
    assert max(lin, knn) > bound, (lin, knn)


@pytest.mark.mnist
def test_mnist_vae_reaches_a_stated_elbo_and_the_vlt_trains():
    from ampcheck.data.mnist import MnistDataset

    data = MnistDataset.load()  # offline: scikit-learn's digits as a 28x28 stand-in
    cfg = budget_config("smoke", model="mnist")
    vae = train(cfg, data, show_progress=False)
    first, last = vae.history[0].loss, vae.history[-1].loss
    # Negative ELBO per image in nats (784 Bernoulli pixels + KL, beta = 1). Measured at this
    # budget (20 epochs) on the 1,438 training digits: 191.2 (recon 189.5, KL 1.6), from 429
    # after the first epoch; the VLT (zero init) 181.8. The bound allows ~5% of noise.
    assert last < 0.6 * first
    assert last < MNIST_SMOKE_NELBO_BOUND
    vlt = train(budget_config("smoke", model="mnist", variant="vlt", table_init="zero"), data,
                show_progress=False)
    assert vlt.history[-1].loss < 0.8 * vlt.history[0].loss


MNIST_SMOKE_NELBO_BOUND = 200.0


@pytest.mark.parametrize("encoder", ["base", "large"])
def test_a_cpu_runs_numbers_do_not_depend_on_its_thread_count(tiny, encoder):
    # what lets the main battery train its models side by side in one-thread processes
    cfg = quick(encoder=encoder, batch_size=8, epochs=1, device="cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = train(cfg, tiny, show_progress=False)
        torch.set_num_threads(2)
        two = train(cfg, tiny, show_progress=False)
    finally:
        torch.set_num_threads(threads)
    assert [r.loss for r in one.history] == [r.loss for r in two.history]
    assert all(torch.equal(x, params_of(two)[k]) for k, x in params_of(one).items())


def test_training_ahead_adopts_what_training_here_gives_in_the_order_given(tiny):
    from ampcheck.checks import TrainingCache

    cfgs = [quick(device="cpu"), quick(variant="vlt", device="cpu"),
            quick(variant="twin-noise", encoder="large", device="cpu")]
    import os

    ahead, meanwhile = TrainingCache(), []
    ahead.train_ahead([(c, tiny) for c in cfgs] + [(cfgs[0], tiny)], processes=2,
                      meanwhile=lambda: meanwhile.append(os.getpid()))
    assert ahead.trained == [TrainingCache.label(c) for c in cfgs]  # once each, in order
    assert meanwhile == [os.getpid()]  # done here, once, while the others trained
    for cfg, run in zip(cfgs, ahead.runs, strict=True):
        here = train(cfg, tiny, show_progress=False)
        assert [r.loss for r in run.history] == [r.loss for r in here.history]
        assert all(torch.equal(x, params_of(here)[k]) for k, x in params_of(run).items())
        np.testing.assert_array_equal(run.latents()[0], here.latents()[0])
        assert ahead.train(cfg, tiny) is run  # the checks find it: nothing trains again
