"""A user's own model family, registered as ampcheck's own are (``ampcheck.families``): it is
named, trained, checked and written to a run directory like them, at the smoke budget on a
few hundred digits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from ampcheck.budgets import BUDGETS, Training
from ampcheck.errors import ConfigError
from ampcheck.families import Family, get_family, register_family, unregister_family


class LinearVAE(nn.Module):
    """The smallest VAE the training loop takes: linear encoder and decoder on the flattened
    images, a Gaussian likelihood (the loop's model interface: ``prepare``, ``encode``,
    ``recon_loss``, ``kl_weight``, ``zdim``)."""

    def __init__(self, pixels: int, zdim: int, seed: int):
        super().__init__()
        self.zdim, self.kl_weight = zdim, 1.0 / pixels
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = nn.Linear(pixels, 2 * zdim)
            self.decoder = nn.Linear(zdim, pixels)

    def prepare(self, batch):
        x = batch["y"].flatten(1).float()
        return {"x_enc": x, "target": x}

    def encode(self, x_enc):
        mu, logvar = self.encoder(x_enc).chunk(2, dim=-1)
        return mu, logvar

    def recon_loss(self, prep, z):
        return (self.decoder(z) - prep["target"]).square().mean(-1)


def build_linear(config, data, device):
    return LinearVAE(int(data.D) ** 2, config.zdim or 4, config.seed)


LINEAR = Family("linear", "the linear VAE", data_kind="mnist", build=build_linear, lr=1e-2,
                batch_size=32, beta=1.0, training={name: Training(epochs=2)
                                                   for name in BUDGETS})


@pytest.fixture
def linear():
    register_family(LINEAR)
    yield LINEAR
    unregister_family(LINEAR.name)


@pytest.fixture(scope="module")
def digits():
    from ampcheck.data.mnist import MnistDataset

    return MnistDataset.load(limit=300)


def test_a_registered_family_is_named_configured_and_trained_as_ampchecks_own(linear, digits):
    from ampcheck import kinds
    from ampcheck.train import TrainConfig, budget_config, train

    assert kinds.model_name("linear") == "linear" and kinds.model_kind("linear") == "mnist"
    cfg = budget_config("smoke", model="linear")
    assert (cfg.epochs, cfg.resolved_lr, cfg.resolved_batch_size) == (2, 1e-2, 32)
    assert cfg.encoder == "base" and cfg.describe() == "linear vae (base)"
    # a config that names the family reads back from its JSON (a run.json, a checkpoint)
    from dataclasses import asdict

    assert TrainConfig.from_dict(json.loads(json.dumps(asdict(cfg)))) == cfg
    run = train(cfg, digits, show_progress=False)
    assert isinstance(run.model, LinearVAE) and len(run.history) == 2
    assert run.beta == 1.0 and run.history[-1].loss < run.history[0].loss


def test_a_registered_family_is_checked_at_the_smoke_budget(linear, digits):
    from ampcheck.checks import DEFAULT_CHECKS, TrainingCache, check_vae

    cache = TrainingCache()
    results = check_vae("linear", digits, budget="smoke", cache=cache)
    assert [r.check for r in results] == list(DEFAULT_CHECKS)
    cryoem_only = {"pose_leakage", "noise_resampling"}  # digits have no poses, no clean images
    assert all(r.model == "linear" and r.verdict in ("PASS", "FAIL", "WARN") for r in results
               if r.check not in cryoem_only), [r.summary() for r in results]
    assert [r.verdict for r in results if r.check in cryoem_only] == ["SKIP", "SKIP"]
    assert sorted(cache.trained) == ["linear/twin-noise/base/seed0",
                                     "linear/twin-perm/base/seed0", "linear/vae/base/seed0",
                                     "linear/vlt/base/seed0"]
    # the invariance check probes the shifts of the family's kind of images (MNIST's two)
    shift = next(r for r in results if r.check == "shift_invariance")
    assert {"retrieval@1[roll(0,1)]", "displacement[roll(0,5)]"} <= set(shift.metrics)


def test_a_registered_family_trains_into_a_run_directory_that_opens_again(linear, tmp_path,
                                                                          monkeypatch):
    from ampcheck.cli import main
    from ampcheck.data.mnist import MnistDataset
    from ampcheck.runs import RUN_JSON, open_run

    small = MnistDataset.load(limit=200)
    monkeypatch.setattr(MnistDataset, "load", classmethod(lambda cls, *a, **k: small))
    out = tmp_path / "run"
    assert main(["train", "--data", "mnist", "--model", "linear", "--budget", "smoke",
                 "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / RUN_JSON).read_text())["config"]["model"] == "linear"
    meta, cfg, data, train_set, model = open_run(out, "cpu")
    assert cfg.model == "linear" and isinstance(model.model, LinearVAE)
    assert np.isfinite(model.history[-1].loss)


def test_registration_refuses_what_the_loop_cannot_use(linear):
    from dataclasses import replace

    from ampcheck.train import TrainConfig

    assert get_family("linear") is linear
    with pytest.raises(ConfigError, match="registered already"):
        register_family(replace(linear, lr=1.0))
    with pytest.raises(ConfigError, match="must name every budget .* missing: standard"):
        register_family(replace(linear, name="partial", training={"smoke": Training(1)}))
    with pytest.raises(ConfigError, match="a word"):
        register_family(replace(linear, name="lin:ear"))
    with pytest.raises(ConfigError, match="the linear VAE has one encoder"):
        TrainConfig(model="linear", encoder="large")
    with pytest.raises(ConfigError, match="model must be one of .*linear"):
        TrainConfig(model="quadratic")
    unregister_family("linear")
    with pytest.raises(ConfigError, match="model must be one of"):
        TrainConfig(model="linear")  # gone: a config that names it no longer loads


def test_a_config_that_names_a_shipped_guest_loads_without_importing_its_adapter():
    # the guests register themselves when ampcheck.adapters is imported, and a config that
    # names one imports it; one written before families were registered (the guest's network
    # as the architecture of the family of its images) reads as the guest's
    import subprocess
    import sys

    code = ("import sys\n"
            "from ampcheck.train import TrainConfig\n"
            "assert 'ampcheck.adapters' not in sys.modules\n"
            "new = TrainConfig.from_dict({'model': 'cryodrgn', 'architecture': '{}'})\n"
            "old = TrainConfig.from_dict({'model': 'cryoem', 'architecture': '{}'})\n"
            "assert new == old and new.model == 'cryodrgn', old\n"
            "print(new.describe())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.split() == ["cryodrgn", "vae"], proc.stderr
