"""Multi-process training (torchrun + DDP, gloo on CPU) does what one process does.

Two ranks follow the same seeded permutation and noise and each takes its share of every global
batch; DDP averages the networks' gradients and the VLT's row gradients are all-gathered. So a
2-rank run matches one process on the same global batch up to floating-point reduction order.
The reference process runs one thread, as each rank does, so that only the split differs.
Measured on the tiny set (2-3 epochs, default learning rates): losses, reconstruction losses
and curve points agree to a relative 2e-7, the KL to 2e-5, network weights to 3e-6 and table
rows to 2e-7 absolute; the tests ask for ``RTOL``, ``KL_RTOL`` and ``ATOL``. (Two threads
against one in a single process differ as much: this is rounding, amplified by Adam.)
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from launch import torchrun

from ampcheck.checkpoints import CHECKPOINT
from ampcheck.data.particles import ParticleDataset
from ampcheck.data.synthetic import SynthConfig, generate
from ampcheck.errors import ConfigError, TrainingDiverged
from ampcheck.train import (
    TrainConfig,
    TrainedModel,
    budget_config,
    train,
    training_split,
)

RTOL = 1e-6  # losses, reconstruction losses and curve points, relative
KL_RTOL = 1e-4  # the KL of near-prior posteriors is a difference of near-equal terms
ATOL = 1e-5  # weights and table rows (of order 1), absolute
WORLD = 2
# 41 images in batches of 10: the last batch of 1 leaves rank 0 without an image of its own
VAE = TrainConfig(epochs=2, batch_size=10, max_images=41)
# 45 images: the last batch of 5 splits 3 / 2
VLT = TrainConfig(variant="vlt", epochs=3, batch_size=10, max_images=45)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("dist") / "tiny", SynthConfig.preset("tiny"),
                    show_progress=False).out


def weights(run: TrainedModel) -> dict[str, torch.Tensor]:
    out = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    if run.table is not None:
        out["table"] = run.table.rows.weight.detach().clone()
    return out


@contextmanager
def one_thread():
    """Like each rank (torchrun's default): so that only the split over ranks differs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def summary(run: TrainedModel) -> dict:
    return {"history": [asdict(r) for r in run.history], "weights": weights(run)}


def assert_same_training(history: list[dict], params: dict, reference: TrainedModel) -> None:
    """Per-epoch losses, their parts, curves and images, and the weights, as one process."""
    assert len(history) == len(reference.history)
    for got, want in zip(history, reference.history, strict=True):
        assert got["images"] == want.images
        for key, rtol in (("loss", RTOL), ("recon", RTOL), ("kl", KL_RTOL)):
            assert got[key] == pytest.approx(getattr(want, key), rel=rtol), key
        np.testing.assert_allclose(got["curve"], want.curve, rtol=RTOL)
    ref = weights(reference)
    assert params.keys() == ref.keys()
    for key, value in ref.items():
        np.testing.assert_allclose(params[key], value, rtol=0, atol=ATOL, err_msg=key)


# ------------------------------------------------------------------ the real command path
def test_torchrun_trains_a_vlt_as_one_process_does(tiny_dir, tmp_path):
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    args = ["--standalone", f"--nproc_per_node={WORLD}", "-m", "ampcheck", "train", "--data",
            str(tiny_dir), "--out", str(run_dir), "--variant", "vlt", "--epochs", "3",
            "--device", "cpu", "--budget", "smoke"]
    done = torchrun(args, env={**env, "OMP_NUM_THREADS": "1"}, timeout=180)
    assert done.stdout.count("Trained cryoem vlt") == 1  # rank 0 alone reports
    assert done.stderr.count("epoch 3/3:") == 1
    assert sorted(p.name for p in run_dir.iterdir()) == [CHECKPOINT, "run.json"]

    cfg = budget_config("smoke", variant="vlt", epochs=3, device="cpu")
    data = ParticleDataset.from_dir(tiny_dir)
    with one_thread():
        reference = train(cfg, training_split(cfg, data)[0], show_progress=False)
    saved = TrainedModel.load(run_dir / CHECKPOINT, reference.data)
    assert_same_training([asdict(r) for r in saved.history], weights(saved), reference)


# ------------------------------------------------------------------ the library, 2 ranks
def _worker(rank: int, store: str, data_dir: str, out: str) -> None:
    """One rank: every scenario in turn (the ranks run them in lockstep), results to a file."""
    torch.set_num_threads(1)  # two ranks on two cores
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        torch.save(_scenarios(rank, ParticleDataset.from_dir(data_dir), Path(out)),
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _scenarios(rank: int, data, out: Path) -> dict:
    from ampcheck.models.cryoem import CryoVAE

    results = {"vae": summary(train(VAE, data, show_progress=False))}

    # a VLT trained for one epoch, then resumed from the checkpoint for two more
    saves, save = [], TrainedModel.save

    def recording(self, path, *args, **kwargs):
        saves.append(len(self.history))
        return save(self, path, *args, **kwargs)

    TrainedModel.save = recording
    train(replace(VLT, epochs=1), data, out=out / "vlt", show_progress=False)
    results["vlt"] = summary(train(VLT, data, out=out / "vlt", resume=True, show_progress=False))
    results["saves"] = saves

    try:
        train(replace(VAE, batch_size=7), data, show_progress=False)
    except ConfigError as err:
        results["indivisible"] = str(err)

    # a NaN on rank 1 alone, in its 3rd batch: both ranks stop there with the message
    calls, real = [0], CryoVAE.recon_loss

    def poisoned(self, prep, z):
        calls[0] += 1
        out = real(self, prep, z)
        return out * float("nan") if rank == 1 and calls[0] == 3 else out

    CryoVAE.recon_loss = poisoned
    try:
        train(VAE, data, show_progress=False)
    except TrainingDiverged as err:
        results["diverged"] = str(err)
    return results


def _spawn(data_dir: Path, out: Path, timeout: float = 120.0) -> list[dict]:
    ctx = mp.spawn(_worker, args=(str(out / "store"), str(data_dir), str(out)), nprocs=WORLD,
                   join=False)
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:  # a hang is a failure, not a stuck test run
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {WORLD} ranks did not finish within {timeout:.0f} s")
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def ranks(tiny_dir, tmp_path_factory) -> list[dict]:
    return _spawn(tiny_dir, tmp_path_factory.mktemp("ranks"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return ParticleDataset.from_dir(tiny_dir)


@pytest.mark.parametrize("name, cfg", [("vae", VAE), ("vlt", VLT)])
def test_two_ranks_train_as_one_process_does(ranks, tiny, name, cfg):
    with one_thread():
        reference = train(cfg, tiny, show_progress=False)
    assert_same_training(ranks[0][name]["history"], ranks[0][name]["weights"], reference)
    for key, value in ranks[0][name]["weights"].items():  # the replicas never drift apart
        assert torch.equal(ranks[1][name]["weights"][key], value), key
    untimed = [[{**r, "seconds": None} for r in rank[name]["history"]] for rank in ranks]
    assert untimed[1] == untimed[0]  # every rank saw the same global losses


def test_only_rank_0_writes_checkpoints_and_every_rank_resumes_from_them(ranks):
    # the VLT above ran 1 epoch, then resumed for 2: it matched one process's straight run
    assert ranks[0]["saves"] == [1, 2, 3] and ranks[1]["saves"] == []


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(ranks):
    for r in ranks:
        assert "batch of 7 images does not split evenly over 2 processes" in r.get(
            "indivisible", "no error")


def test_a_nan_on_one_rank_stops_every_rank(ranks):
    for r in ranks:
        assert r.get("diverged") == "training diverged at epoch 1, batch 3: the loss is nan"
