"""The written contracts (``ampcheck.contracts``): what checks ask of data sets and models.

Checks ask declared capabilities, never private attributes: a VAE given only through the
public protocol with ``decode_volume`` gets the volume metrics ampcheck's own models get (the
same numbers), and a data set without ground-truth volumes gets none and says why.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ampcheck.checks import check_vae, subject_from
from ampcheck.contracts import (
    VAE,
    DataCapabilities,
    Dataset,
    ModelCapabilities,
    TruthVolume,
    data_capabilities,
    model_capabilities,
)
from ampcheck.cryoem.mrc import read_mrc
from ampcheck.data.mnist import MnistDataset
from ampcheck.data.particles import ParticleDataset
from ampcheck.errors import ConfigError
from ampcheck.kinds import data_kind
from ampcheck.train import TrainConfig, train

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "tiny"  # 48 images of 32 px
QUICK = TrainConfig(epochs=1, batch_size=16, lr=1e-3)


@pytest.fixture(scope="module")
def tiny() -> ParticleDataset:
    return ParticleDataset.from_dir(TINY)


@pytest.fixture(scope="module")
def no_volumes(tmp_path_factory) -> ParticleDataset:
    """The same images, poses, CTF and truth without the manifest and its volumes (as real
    data come)."""
    folder = tmp_path_factory.mktemp("bare")
    for name in ("particles.mrcs", "poses.pkl", "ctf.pkl", "truth.npz"):
        shutil.copy(TINY / name, folder / name)
    return ParticleDataset.from_dir(folder)


@pytest.fixture(scope="module")
def trained(tiny):
    """An ampcheck cryo-EM VAE trained for one epoch on the tiny set."""
    return train(QUICK, tiny, show_progress=False)


def test_the_contracts_import_without_torch():
    # reading a contract (to type a model, to read a report) must not import the harness
    code = ("import sys; sys.modules['torch'] = None; "
            "import ampcheck.contracts, ampcheck.kinds; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# ----------------------------------------------------------------------------- data sets
def test_data_sets_follow_the_contract_and_declare_their_family():
    digits = MnistDataset.load(limit=50)
    assert isinstance(digits, Dataset)
    assert data_capabilities(digits) == DataCapabilities(truth_volumes=False)
    assert data_kind(digits) == "mnist"
    assert not isinstance(object(), Dataset)


def test_a_synthetic_set_serves_its_own_truth_volumes(tiny):
    volumes = tiny.truth_volumes()
    # independently: the manifest's files with a conformation, read as MRC volumes
    import json

    listed = [v for v in json.loads((TINY / "manifest.json").read_text())["volumes"]
              if v["z_continuous"] is not None]
    assert len(volumes) == len(listed) == 4
    for got, entry in zip(volumes, listed, strict=True):
        assert isinstance(got, TruthVolume)
        assert (got.z_continuous, got.z_class) == (entry["z_continuous"], entry["z_class"])
        np.testing.assert_array_equal(got.volume, read_mrc(TINY / entry["file"])[0])
        assert got.volume.shape == (tiny.D,) * 3
    # ... and, being ampcheck's own, carries poses and re-noises its clean images
    assert data_capabilities(tiny) == DataCapabilities(truth_volumes=True, poses=True,
                                                       noise_resampling=True)
    assert data_kind(tiny) == "cryoem"
    train_view, _ = tiny.split(0.25, seed=0)  # views share them
    assert data_capabilities(train_view).truth_volumes


def test_the_truth_volumes_capability_is_read_from_the_manifest_without_reading_a_map(
        tmp_path, monkeypatch):
    from ampcheck.cryoem import mrc

    reads = []
    monkeypatch.setattr(mrc, "read_mrc", lambda path, *a, **kw: reads.append(path) or
                        read_mrc(path, *a, **kw))
    folder = tmp_path / "set"  # a copy: no earlier test's volumes in the cache
    shutil.copytree(TINY, folder)
    data = ParticleDataset.from_dir(folder)
    subject = subject_from("cryoem", data, budget="smoke")
    assert subject.capabilities.truth_volumes and reads == []  # building the subject ...
    assert data_capabilities(data.split(0.25, seed=0)[0]).truth_volumes
    assert data.has_truth_volumes() and reads == []  # ... and asking read no map ...
    assert len(data.truth_volumes()) == 4 and len(reads) == 4  # ... a check that needs them does
    for f in (folder / "volumes").glob("class*.mrc"):  # listed, but gone
        f.unlink()
    (folder / "manifest.json").touch()  # a new version of the set
    assert not data.has_truth_volumes() and data.truth_volumes() == ()


def test_a_stack_without_a_manifest_has_no_truth_volumes(no_volumes):
    assert no_volumes.truth_volumes() == ()
    # nor clean images to re-noise (its poses it has)
    assert data_capabilities(no_volumes) == DataCapabilities(truth_volumes=False, poses=True)


def test_data_that_break_the_contract_are_refused_naming_what_is_missing():
    class Images:  # images only: no truth, no batches, no views
        def __len__(self):
            return 3

        def images(self, idx):
            return np.zeros((len(idx), 4, 4), np.float32)

    with pytest.raises(ConfigError, match=r"has no .*get_batch.*truth.*ampcheck.contracts"):
        subject_from("mnist", Images(), budget="smoke")


# ----------------------------------------------------------------------------- models
class _Encoding(torch.nn.Module):
    """An ampcheck cryo-EM network seen only through the public VAE protocol: raw images and
    their pose/CTF ``meta`` in, tensors out (nothing of ``TrainedModel``)."""

    def __init__(self, run, data: ParticleDataset):
        super().__init__()
        self.net, self.data, self.kl_weight = run.model, data, run.kl_scale

    def _prep(self, x, meta):
        return self.net.prepare({**meta, "y": self.data.preprocess(x)})

    def encode(self, x, meta):
        return self.net.encode(self._prep(x, meta)["x_enc"])

    def recon_loss(self, x, z, meta):
        return self.net.recon_loss(self._prep(x, meta), z)


class _Decoding(_Encoding):
    """The same, declaring volumes too."""

    def decode_volume(self, z):
        return self.net.decode_volume(z, norm=self.data.norm)


def test_models_declare_volumes_through_the_protocol(trained, tiny):
    assert isinstance(_Encoding(trained, tiny), VAE)
    assert model_capabilities(_Encoding(trained, tiny)) == ModelCapabilities(decode_volume=False)
    assert model_capabilities(_Decoding(trained, tiny)) == ModelCapabilities(decode_volume=True)
    assert trained.capabilities.decode_volume  # ampcheck's cryo-EM VAE
    mnist = train(TrainConfig(model="mnist", epochs=0), MnistDataset.load(limit=20),
                  show_progress=False)
    assert not mnist.capabilities.decode_volume


def test_a_protocol_vae_with_decode_volume_gets_the_volume_metrics(trained, tiny):
    key = "volume_displacement[roll(0,1)]"
    (own,) = check_vae(trained, tiny, checks=["shift_invariance"], budget="smoke")
    (given,) = check_vae(_Decoding(trained, tiny), tiny, checks=["shift_invariance"],
                         budget="smoke")
    (bare,) = check_vae(_Encoding(trained, tiny), tiny, checks=["shift_invariance"], budget="smoke")
    assert key in own.metrics and key in given.metrics and key not in bare.metrics
    # the same network through the protocol: the same latents, volumes and numbers
    assert given.metrics["displacement"].value == pytest.approx(own.metrics["displacement"].value,
                                                                rel=1e-4)
    assert given.metrics[key].value == pytest.approx(own.metrics[key].value, rel=1e-4)
    assert np.isfinite(given.metrics[key].value) and given.metrics[key].value > 0


def test_volume_agreement_asks_the_data_for_truth_volumes_and_says_when_there_are_none(
        tiny, no_volumes):
    (with_truth,) = check_vae(QUICK, tiny, checks=["vlt_equivalence"], budget="smoke")
    (without,) = check_vae(QUICK, no_volumes, checks=["vlt_equivalence"], budget="smoke")
    assert {"volume_auc_fsc[encoder]", "volume_auc_fsc[vlt]"} <= set(with_truth.metrics)
    assert "volumes" not in with_truth.details
    # the table's own rate, and where it came from: 100 x the networks' 1e-3
    assert with_truth.details["table"] == {
        "init": "normal", "frozen": False, "lr": pytest.approx(0.1),
        "lr_from": "100 x the networks' learning rate (the training config's default)"}
    for k in ("encoder", "vlt"):
        assert 0 < with_truth.metrics[f"volume_auc_fsc[{k}]"].value <= 1
    assert not any(k.startswith("volume_") for k in without.metrics)
    assert without.details["volumes"] == "the data set has no ground-truth volumes"
