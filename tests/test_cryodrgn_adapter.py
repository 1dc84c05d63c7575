"""The cryoDRGN adapter (``ampcheck.adapters.cryodrgn``) against cryoDRGN itself.

These tests need the optional ``cryodrgn`` package importable in the running interpreter
(``pip install "ampcheck[cryodrgn]"``) and are skipped with that reason otherwise; the one
test of the missing-package message runs everywhere. A tiny cryoDRGN model is trained here,
in seconds, by ``cryodrgn train_vae`` on a synthetic set, with ``--ind`` naming its training
images so that the rest are genuinely held out.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ampcheck.errors import ConfigError, InputError, UnsafePickleError

NEEDS = ("cryodrgn is not importable in this interpreter; install it with "
         'pip install "ampcheck[cryodrgn]" to test the cryoDRGN adapter')
N, D, N_TRAIN = 200, 32, 150
# `python -m cryodrgn` does not exist (no __main__). This is what the console script
# `cryodrgn train_vae` runs (the command's add_args and main), by the interpreter under test so
# that it is the same cryodrgn, without importing cryoDRGN's 22 other commands (seconds each).
TRAIN_VAE = [sys.executable, "-c", "import argparse, sys; from cryodrgn.commands import "
             "train_vae as t; p = argparse.ArgumentParser(); t.add_args(p); "
             "t.main(p.parse_args(sys.argv[1:]))"]
EVAL_VOL = [sys.executable, "-c", "import argparse, sys; from cryodrgn.commands import "
            "eval_vol as t; p = argparse.ArgumentParser(); t.add_args(p); "
            "t.main(p.parse_args(sys.argv[1:]))"]


def test_without_cryodrgn_the_adapter_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cryodrgn", None)  # `import cryodrgn` now fails
    from ampcheck.adapters.cryodrgn import load_cryodrgn  # importing the adapter never needs it

    with pytest.raises(ConfigError, match=r'pip install "ampcheck\[cryodrgn\]"'):
        load_cryodrgn(tmp_path)


def test_the_checks_a_cryodrgn_run_cannot_take_are_skips_with_the_reason():
    # runs everywhere: which default checks the adapter leaves out, and why
    from types import SimpleNamespace

    from ampcheck.adapters.cryodrgn import RETRAIN_HINT, _left_out

    truth = {"z_continuous": np.linspace(0, 1, 10)}
    bare = _left_out(SimpleNamespace(truth={}), heldout=False)
    assert list(bare) == ["evil_twin", "vlt_equivalence", "amortization_gap",
                          "heldout_generalisation"]
    assert bare["evil_twin"] == bare["vlt_equivalence"] == RETRAIN_HINT
    assert "give retrain='run' (--retrain)" in RETRAIN_HINT
    assert "--heldout-ind" in bare["amortization_gap"]
    assert bare["heldout_generalisation"].startswith(
        "needs held-out images: give ind (--ind), the indices the run was trained on")
    assert bare["heldout_generalisation"].endswith("needs ground truth: give truth= (--truth), "
                                                   "an .npz with z_continuous and/or z_class")
    assert "truth" not in _left_out(SimpleNamespace(truth=truth), heldout=False)[
        "heldout_generalisation"]
    held = _left_out(SimpleNamespace(truth={}), heldout=True)
    assert list(held) == ["evil_twin", "vlt_equivalence", "heldout_generalisation"]
    assert held["heldout_generalisation"].startswith("needs ground truth: give truth= (--truth)")
    constant = _left_out(SimpleNamespace(truth={"z_continuous": np.zeros(10)}), heldout=True)
    assert constant["heldout_generalisation"] == ("the ground truth is constant: z_continuous "
                                                  "has one value")
    assert list(_left_out(SimpleNamespace(truth=truth), heldout=True)) == [
        "evil_twin", "vlt_equivalence"]
    assert _left_out(SimpleNamespace(truth=truth), heldout=True, retrain=True) == {}


def test_check_cryodrgns_default_battery_skips_what_it_cannot_run(monkeypatch, tmp_path):
    # runs everywhere: check_cryodrgn with cryoDRGN's loading replaced by a stand-in VAE on
    # the digits, so that the adapter's own path (defaults, held-out split, skips) is tested
    import ampcheck.adapters.cryodrgn as adapter
    from ampcheck.checks import DEFAULT_CHECKS
    from ampcheck.data.mnist import MnistDataset

    class Pixels(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.randn(28 * 28, 2, generator=torch.Generator().manual_seed(0)) / 28

        def encode(self, x):
            mu = x.flatten(1) @ self.proj
            return mu, torch.full_like(mu, -6.0)

        def recon_loss(self, x, z):
            return (x.flatten(1) - z @ self.proj.T).square().mean(1)

    digits = MnistDataset.load()
    digits = MnistDataset(digits.images(np.arange(300)), None, source="no labels")
    monkeypatch.setattr(adapter, "load_cryodrgn", lambda *a, **k: Pixels())
    monkeypatch.setattr(adapter, "cryodrgn_dataset", lambda *a, **k: digits)
    results = adapter.check_cryodrgn(tmp_path, "p.mrcs", "poses.pkl", budget="smoke")
    assert [r.check for r in results] == list(DEFAULT_CHECKS)
    verdicts = {r.check: r.verdict for r in results}
    assert [c for c, v in verdicts.items() if v != "SKIP"] == ["shift_invariance",
                                                                "rotation_invariance"]
    gap = next(r for r in results if r.check == "amortization_gap")
    assert "--heldout-ind" in gap.explanation and gap.model == "cryodrgn"
    held = _dump(tmp_path / "heldout.pkl", np.arange(250, 300))
    results = adapter.check_cryodrgn(tmp_path, "p.mrcs", "poses.pkl", heldout_ind=held,
                                     budget="smoke")
    verdicts = {r.check: r.verdict for r in results}
    assert verdicts["amortization_gap"] != "SKIP" and verdicts["heldout_generalisation"] == \
        "SKIP"
    held = next(r for r in results if r.check == "heldout_generalisation")
    assert held.explanation.startswith("needs ground truth: give truth=")


def _need_cryodrgn() -> None:
    """Skip unless cryodrgn imports; imported as the adapter does (logging kept)."""
    from ampcheck.adapters.cryodrgn_lib import import_cryodrgn

    try:
        import_cryodrgn()
    except ConfigError:
        pytest.skip(NEEDS)


@pytest.mark.extras
def test_importing_cryodrgn_keeps_ampchecks_logging():
    # cryoDRGN's __init__ reconfigures logging (dictConfig: root to stdout, existing loggers
    # disabled); through the adapter, ampcheck's loggers and the application's handler stay
    _need_cryodrgn()  # installed; the child process below imports it afresh
    code = """if True:
        import io, logging
        import ampcheck.train
        from ampcheck.adapters.cryodrgn_lib import import_cryodrgn
        seen = io.StringIO()
        handler = logging.StreamHandler(seen)
        logging.getLogger().addHandler(handler)
        logging.getLogger("ampcheck").setLevel(logging.INFO)
        import_cryodrgn()
        logging.getLogger("ampcheck.train").info("still here")
        assert logging.getLogger().handlers == [handler], logging.getLogger().handlers
        print(repr(seen.getvalue()))
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == repr("still here\n")


# ----------------------------------------------------------------------------- a trained run
def _dump(path: Path, obj) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A cryoDRGN run on the first N_TRAIN of N synthetic images (2 epochs, zdim 8)."""
    _need_cryodrgn()
    from ampcheck.data.synthetic import SynthConfig, generate

    tmp = tmp_path_factory.mktemp("cryodrgn")
    data = generate(tmp / "set", SynthConfig(n=N, D=D, seed=5, volume_grid=1),
                    show_progress=False).out
    train = np.arange(N_TRAIN)
    files = {"particles": data / "particles.mrcs", "poses": data / "poses.pkl",
             "ctf": data / "ctf.pkl", "truth": data / "truth.npz",
             "train_ind": _dump(tmp / "train.pkl", train),
             "heldout_ind": _dump(tmp / "heldout.pkl", np.arange(N_TRAIN, N)),
             "out": tmp / "run"}
    cmd = [*TRAIN_VAE, str(files["particles"]), "--poses", str(files["poses"]),
           "--ctf", str(files["ctf"]), "--ind", str(files["train_ind"]), "--zdim", "8",
           "-n", "2", "--enc-dim", "32", "--enc-layers", "2", "--dec-dim", "32",
           "--dec-layers", "2", "-b", "32", "--seed", "0", "--no-analysis",
           "-o", str(files["out"])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return argparse.Namespace(**files, train=train)


def _zspread(z: np.ndarray) -> float:
    return float(z.std(axis=0).mean())


@pytest.mark.extras
@pytest.mark.cryoem
@pytest.mark.parametrize("epoch", [None, 1])
def test_latents_are_cryodrgns_own(run, epoch):
    from ampcheck.adapters.cryodrgn import cryodrgn_dataset, cryodrgn_latents, load_cryodrgn
    from ampcheck.checks.subject import ProtocolModel
    from ampcheck.cryoem.io import read_z

    mu = cryodrgn_latents(run.out, run.particles, run.poses, run.ctf, epoch=epoch)
    z_mu, z_logvar = read_z(run.out / ("z.pkl" if epoch is None else f"z.{epoch}.pkl"))
    assert mu.shape == (N, 8) and z_mu.shape == (N_TRAIN, 8)
    diff = float(np.abs(mu[run.train] - z_mu).max())
    print(f"epoch {epoch}: max |mu - z.pkl| = {diff:.3g}, latent spread {_zspread(z_mu):.3g}")
    # Measured with cryoDRGN 4.3.1 on CPU: 0 (bitwise equal). Float tolerance only.
    assert diff <= 1e-4 * _zspread(z_mu)

    model = load_cryodrgn(run.out, epoch=epoch)
    data = cryodrgn_dataset(model, run.particles, run.poses, run.ctf)
    _, logvar = ProtocolModel(model).encode(data, run.train)
    assert np.abs(logvar - z_logvar).max() <= 1e-4 * max(float(np.abs(z_logvar).max()), 1.0)


@pytest.mark.extras
@pytest.mark.cryoem
def test_loss_matches_cryodrgns_evaluation(run):
    """Per-image recon_loss and kl_weight reproduce cryoDRGN's eval_images loss on a batch,
    computed by cryoDRGN's own data set, pose tracker, CTF loader and eval_batch."""
    from cryodrgn import config, ctf, dataset
    from cryodrgn.commands.eval_images import eval_batch
    from cryodrgn.models import HetOnlyVAE
    from cryodrgn.pose import PoseTracker

    from ampcheck.adapters.cryodrgn import cryodrgn_dataset, load_cryodrgn
    from ampcheck.checks.subject import ProtocolModel

    cfg = config.load(str(run.out / "config.yaml"))
    train = run.train
    ref = dataset.ImageDataset(mrcfile=str(run.particles), lazy=False,
                               norm=cfg["dataset_args"]["norm"], invert_data=True, ind=train)
    poses = PoseTracker.load(str(run.poses), len(train), ref.D, None, train)
    ctf_params = torch.tensor(ctf.load_ctf_for_training(ref.D - 1, str(run.ctf))[train])
    net, lattice = HetOnlyVAE.load(cfg, str(run.out / "weights.pkl"))
    net.eval()
    batch = list(range(40))
    rot, trans = poses.get_pose(torch.tensor(batch))
    y = ref[batch]["y"]
    beta = 1 / 8
    _, _, loss, gen_loss, kld = eval_batch(net, lattice, y, rot, trans, beta,
                                           ctf_params=ctf_params[batch])

    model = load_cryodrgn(run.out)
    assert model.kl_weight == pytest.approx(beta / model.n_pix)
    pm = ProtocolModel(model)
    data = cryodrgn_dataset(model, run.particles, run.poses, run.ctf)
    idx = train[batch]
    mu, logvar = pm.encode(data, idx)
    recon = pm.recon_loss(data, idx, mu)
    kl = -0.5 * (1 + logvar - mu**2 - np.exp(logvar)).sum(axis=1)
    assert recon.mean() == pytest.approx(gen_loss, rel=1e-5)
    assert kl.mean() == pytest.approx(kld, rel=1e-4)
    assert (recon + model.kl_weight * kl).mean() == pytest.approx(loss, rel=1e-5)

    z = torch.tensor(mu[:4], requires_grad=True)  # differentiable in z (amortization gap)
    pm.recon_closure(data, idx[:4])(z).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.extras
@pytest.mark.cryoem
def test_volumes_are_cryodrgns_eval_vol(run, tmp_path):
    """decode_volume at two latents of the run's z.pkl against the maps `cryodrgn eval_vol
    --zfile` writes for them, read back from its MRC files."""
    from ampcheck.adapters.cryodrgn import load_cryodrgn
    from ampcheck.cryoem.io import read_z
    from ampcheck.cryoem.mrc import read_mrc

    z_mu, _ = read_z(run.out / "z.pkl")
    np.savetxt(tmp_path / "z.txt", z_mu[:2].astype(np.float64), fmt="%.9g")
    proc = subprocess.run([*EVAL_VOL, str(run.out / "weights.pkl"), "-c",
                           str(run.out / "config.yaml"), "-o", str(tmp_path / "vols"),
                           "--zfile", str(tmp_path / "z.txt")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = load_cryodrgn(run.out)
    for i in (0, 1):
        theirs = read_mrc(tmp_path / "vols" / f"vol_{i + 1:03d}.mrc")[0]
        ours = model.decode_volume(np.loadtxt(tmp_path / "z.txt")[i])
        assert ours.shape == theirs.shape == (D, D, D) and ours.dtype == np.float32
        scale = float(np.abs(theirs).max())
        # the MRC file holds float32: agreement to float rounding
        assert float(np.abs(ours - theirs).max()) <= 1e-5 * scale, i
    assert float(np.abs(model.decode_volume(z_mu[0]) - model.decode_volume(z_mu[1])).max()) > 0
    with pytest.raises(InputError, match=r"latents of shape \(8,\)"):
        model.decode_volume(z_mu[0][:3])


@pytest.mark.extras
@pytest.mark.cryoem
def test_check_cryodrgn_runs_the_checks(run):
    from ampcheck.adapters.cryodrgn import check_cryodrgn
    from ampcheck.checks import DEFAULT_CHECKS

    results = check_cryodrgn(run.out, run.particles, run.poses, run.ctf, truth=run.truth,
                             heldout_ind=run.heldout_ind, budget="smoke")
    by_name = {r.check: r for r in results}
    assert list(by_name) == list(DEFAULT_CHECKS)  # the whole battery, what cannot run skipped
    for r in results:
        expected = ("SKIP",) if r.check in ("evil_twin", "vlt_equivalence") else \
            ("PASS", "FAIL", "WARN")
        assert r.verdict in expected, r
        assert r.model == "cryodrgn"
        print(r.check, r.verdict, r.explanation)
    assert by_name["heldout_generalisation"].details["n_heldout"] == N - N_TRAIN
    assert "gap_fraction[heldout]" in by_name["amortization_gap"].metrics
    # cryoDRGN's decoder gives the invariance checks their volume metrics
    for check, t in (("shift_invariance", "roll(0,1)"), ("rotation_invariance", "rot90(1)")):
        vd = by_name[check].metrics[f"volume_displacement[{t}]"].value
        assert np.isfinite(vd) and vd >= 0
    # ... and the report its volumes: each row the central sections of the volumes decoded at
    # one sampled image's latent and at its transformed copy's (recomputed here)
    from ampcheck.adapters.cryodrgn import load_cryodrgn
    from ampcheck.checks import settings_for
    from ampcheck.checks._common import central_slices, sample

    model = load_cryodrgn(run.out, device="cpu")
    a = by_name["shift_invariance"].arrays
    image, moved = a["slices[image]"], a["slices[moved]"]
    assert image.shape == moved.shape == (settings_for("smoke").n_volumes, 3, D, D)
    for row, j in enumerate(sample(len(a["mu"]), len(image), 0 + 7)):  # the check's volumes
        np.testing.assert_allclose(image[row], central_slices(model.decode_volume(a["mu"][j])),
                                   atol=1e-6)
        np.testing.assert_allclose(
            moved[row], central_slices(model.decode_volume(a["moved[roll(0,1)]"][j])),
            atol=1e-6)
    assert not np.allclose(image, moved)  # the encoder is not invariant: other volumes

    results = check_cryodrgn(run.out, run.particles, run.poses, run.ctf,
                             checks=["shift_invariance"], budget="smoke")
    assert [r.check for r in results] == ["shift_invariance"]
    # held-out recovery needs ground truth: a SKIP in the default battery, an error by name
    results = check_cryodrgn(run.out, run.particles, run.poses, run.ctf,
                             heldout_ind=run.heldout_ind, budget="smoke")
    held = [r for r in results if r.check == "heldout_generalisation"]
    assert held[0].verdict == "SKIP" and "give truth=" in held[0].explanation
    with pytest.raises(ConfigError, match="truth"):
        check_cryodrgn(run.out, run.particles, run.poses, run.ctf, heldout_ind=run.heldout_ind,
                       checks=["heldout_generalisation"], budget="smoke")


@pytest.mark.extras
@pytest.mark.cryoem
def test_the_runs_own_ind_says_which_images_are_held_out(run, tmp_path):
    # a run trained with cryoDRGN's --ind: the same file tells ampcheck its training images,
    # and every other image of the stack is held out, as --heldout-ind would say
    from ampcheck.adapters.cryodrgn import check_cryodrgn

    common = dict(truth=run.truth, checks=["heldout_generalisation"])
    (by_ind,) = check_cryodrgn(run.out, run.particles, run.poses, run.ctf, ind=run.train_ind,
                               **common)
    (by_held,) = check_cryodrgn(run.out, run.particles, run.poses, run.ctf,
                                heldout_ind=run.heldout_ind, **common)
    assert by_ind.details["n_heldout"] == N - N_TRAIN == by_held.details["n_heldout"]
    assert by_ind.metrics == by_held.metrics
    # both given: only their images are checked, and they must not overlap
    half = _dump(tmp_path / "half.pkl", np.arange(N_TRAIN, N_TRAIN + (N - N_TRAIN) // 2))
    (both,) = check_cryodrgn(run.out, run.particles, run.poses, run.ctf, ind=run.train_ind,
                             heldout_ind=half, **common)
    assert both.details["n_heldout"] == (N - N_TRAIN) // 2
    with pytest.raises(InputError, match="image 0 is also in"):
        check_cryodrgn(run.out, run.particles, run.poses, run.ctf, ind=run.train_ind,
                       heldout_ind=_dump(tmp_path / "overlap.pkl", np.arange(0, N)), **common)


@pytest.mark.extras
@pytest.mark.cryoem
def test_check_cli_report_names_the_run_and_keeps_the_gap_per_image(run, tmp_path, monkeypatch):
    """`ampcheck check --cryodrgn` writes a report that says which run, which weights, which
    architecture and which files it checked, and keeps each image's gap on either side (what
    the report's training/held-out figure is drawn from)."""
    import dataclasses

    import yaml

    from ampcheck import budgets
    from ampcheck.adapters.cryodrgn import describe_run, load_cryodrgn
    from ampcheck.cli import main
    from ampcheck.report import load_report

    # a lighter gap optimisation: this test is about what the report records, not the gap
    default = budgets.BUDGETS[budgets.DEFAULT_BUDGET]  # what the command line checks at
    small = dataclasses.replace(default.evaluation, n_gap=8, gap_steps=5, n_boot=50)
    monkeypatch.setitem(budgets.BUDGETS, default.name,
                        dataclasses.replace(default, evaluation=small))
    out = tmp_path / "report"
    assert main(["check", "--cryodrgn", str(run.out), "--particles", str(run.particles),
                 "--poses", str(run.poses), "--ctf", str(run.ctf), "--ind", str(run.train_ind),
                 "--checks", "amortization_gap", "--out", str(out), "--quiet"]) == 0
    report, arrays = load_report(out)
    block = report["runs"]["cryodrgn"]
    assert block["run_dir"] == str(run.out.resolve())
    assert Path(block["weights"]).name == "weights.pkl"
    assert block["epoch"] == 2 and block["epoch_requested"] is None  # the fixture's -n 2
    cfg = yaml.safe_load((run.out / "config.yaml").read_text())
    m, ds = cfg["model_args"], cfg["dataset_args"]
    arch = block["architecture"]
    assert arch["encoder"] == {"layers": 2, "width": 32, "mode": m["encode_mode"],
                               "mask_radius": m["enc_mask"]}  # --enc-layers 2 --enc-dim 32
    assert arch["decoder"] == {"layers": 2, "width": 32}
    assert (arch["zdim"], arch["D"]) == (8, D)
    assert [arch[k] for k in ("pe_type", "pe_dim", "domain")] == \
        [m["pe_type"], m["pe_dim"], m["domain"]]
    pre = block["preprocessing"]
    assert pre["window"] == ds["window"] and pre["invert_data"] == ds["invert_data"]
    assert pre["norm"] == pytest.approx(ds["norm"])
    assert pre["ctf"] is True and pre["translations"] is True and pre["do_pose_sgd"] is False
    assert block["files"] == {"particles": str(run.particles), "poses": str(run.poses),
                              "ctf": str(run.ctf), "ind": str(run.train_ind),
                              "datadir": None, "heldout_ind": None}
    assert block["trained_on"]["ind"] == str(run.train_ind)  # as cryoDRGN recorded it
    assert report["dataset"]["n"] == N and report["dataset"]["D"] == D

    gap = arrays["amortization_gap"]
    assert set(gap) == {"gap[train]", "gain[train]", "gap[heldout]", "gain[heldout]"}
    assert all(v.shape == (8,) and np.isfinite(v).all() for v in gap.values())
    # normalised by its side's mean gain, each side's mean is the check's gap_fraction
    (result,) = report["checks"]
    for side in ("train", "heldout"):
        frac = gap[f"gap[{side}]"].mean() / gap[f"gain[{side}]"].mean()
        assert frac == pytest.approx(result["metrics"][f"gap_fraction[{side}]"]["value"],
                                     rel=1e-4)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "cryoDRGN run" in page and "epoch 2 (the last)" in page
    assert "Each point is one image&#x27;s amortization gap" in page  # the figure's caption

    # an earlier epoch's weights say their own epoch
    assert describe_run(load_cryodrgn(run.out, epoch=1, device="cpu"))["epoch"] == 1


# ----------------------------------------------------------------------------- bad input
def _copy_run(run, dest: Path, **edits) -> Path:
    import yaml

    dest.mkdir()
    shutil.copy(run.out / "weights.pkl", dest / "weights.pkl")
    cfg = yaml.safe_load((run.out / "config.yaml").read_text())
    for key, value in edits.items():
        section, _, name = key.partition("__")
        if name:
            cfg[section][name] = value
        else:
            cfg[section] = value
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dest


@pytest.mark.extras
@pytest.mark.cryoem
def test_bad_run_directories_are_explained(run, tmp_path):
    from ampcheck.adapters.cryodrgn import load_cryodrgn

    with pytest.raises(InputError, match="not a directory"):
        load_cryodrgn(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no config.yaml"):
        load_cryodrgn(tmp_path)
    (tmp_path / "config.yaml").write_text("model_args: [unclosed\n")
    with pytest.raises(InputError, match="not readable as YAML"):
        load_cryodrgn(tmp_path)
    nn = _copy_run(run, tmp_path / "nn", cmd=["cryodrgn", "train_nn", "p.mrcs"])
    with pytest.raises(InputError, match="train_nn"):
        load_cryodrgn(nn)
    homo = _copy_run(run, tmp_path / "homo", model_args={"layers": 3, "dim": 256})
    with pytest.raises(InputError, match="model_args"):
        load_cryodrgn(homo)
    wider = _copy_run(run, tmp_path / "wider", model_args__qdim=64)
    with pytest.raises(InputError, match="do not fit"):
        load_cryodrgn(wider)
    (wider / "weights.pkl").unlink()
    with pytest.raises(InputError, match="no weights.pkl"):
        load_cryodrgn(wider)
    with pytest.raises(InputError, match="epochs saved: 1, 2"):
        load_cryodrgn(run.out, epoch=7)
    unsafe = _copy_run(run, tmp_path / "unsafe")
    torch.save({"model_state_dict": argparse.Namespace()}, unsafe / "weights.pkl")
    with pytest.raises(UnsafePickleError, match="refusing"):
        load_cryodrgn(unsafe)


@pytest.mark.extras
@pytest.mark.cryoem
def test_bad_data_for_the_run_is_explained(run, tmp_path):
    from ampcheck.adapters.cryodrgn import check_cryodrgn, cryodrgn_latents
    from ampcheck.data.synthetic import SynthConfig, generate

    small = generate(tmp_path / "small", SynthConfig(n=8, D=16, seed=1, volume_grid=1),
                     show_progress=False).out
    with pytest.raises(InputError, match="16 x 16 pixels .* trained on 32 x 32"):
        cryodrgn_latents(run.out, small / "particles.mrcs", small / "poses.pkl",
                         small / "ctf.pkl")
    with pytest.raises(InputError, match="trained with CTF"):
        cryodrgn_latents(run.out, run.particles, run.poses, None)
    for bad, why in ((np.array([3, N]), "out of range"), (np.array([1, 1]), "repeated"),
                     (np.array([0.5]), "integer"), ({"ind": 1}, "integer")):
        path = _dump(tmp_path / "ind.pkl", bad)
        with pytest.raises(InputError, match=why):
            check_cryodrgn(run.out, run.particles, run.poses, run.ctf, truth=run.truth,
                           heldout_ind=path, budget="smoke")


# ----------------------------------------------------------------------------- over epochs
@pytest.mark.extras
@pytest.mark.cryoem
def test_the_profile_over_a_cryodrgn_runs_epochs(run, tmp_path, capsys):
    """The fixture's run keeps weights.1.pkl and weights.2.pkl (train_vae's --checkpoint 1, its
    default): each is measured once on the run's held-out images, and epoch 1 by the
    single-epoch path gives the same numbers at the same sizes and seed."""
    from ampcheck.adapters.cryodrgn import check_cryodrgn_run, open_cryodrgn_run
    from ampcheck.adapters.cryodrgn_epochs import check_cryodrgn_epochs
    from ampcheck.checks import settings_for
    from ampcheck.cli import main
    from ampcheck.epochs import parse_epochs

    checks = ["amortization_gap", "heldout_generalisation", "rotation_invariance"]
    profile, model, data = check_cryodrgn_epochs(
        run.out, run.particles, run.poses, run.ctf, selection=parse_epochs("all"),
        truth=run.truth, ind=run.train_ind, checks=checks, budget="smoke")
    assert [e for e, _, _ in profile.epochs] == [1, 2] and model.epoch == 2
    assert profile.recommended_epoch in (1, 2, None) and profile.reason
    at1 = dict((e, m) for e, m, _ in profile.epochs)[1]
    assert {"gap_fraction[heldout]", "r2_linear[heldout]", "rotation_displacement",
            "loss_ratio", "volume_auc_fsc[train]"} <= set(at1)
    one, whole = open_cryodrgn_run(run.out, run.particles, run.poses, run.ctf, truth=run.truth,
                                   ind=run.train_ind, epoch=1)
    gap, held, rot = check_cryodrgn_run(one, whole, particles=run.particles, ind=run.train_ind,
                                        checks=checks, budget="smoke",
                                        settings=settings_for("smoke", per_epoch=True))
    assert gap.metrics["gap_fraction[heldout]"] == at1["gap_fraction[heldout]"]
    assert held.metrics["r2_linear[heldout]"] == at1["r2_linear[heldout]"]
    assert rot.metrics["displacement"] == at1["rotation_displacement"]

    # the command line: a list with an epoch not saved, then no held-out images
    args = ["check", "--cryodrgn", str(run.out), "--particles", str(run.particles),
            "--poses", str(run.poses), "--ctf", str(run.ctf), "--out", str(tmp_path / "r")]
    assert main([*args, "--ind", str(run.train_ind), "--epoch", "1,3"]) == 2
    assert "no weights for epoch(s) 3 of --epoch 1,3; epochs saved: 1-2" in \
        capsys.readouterr().err
    assert main([*args, "--epoch", "all"]) == 2
    assert "compares training with held-out images" in capsys.readouterr().err


@pytest.mark.extras
@pytest.mark.cryoem
def test_an_unreadable_last_epoch_of_a_cryodrgn_run_is_skipped_and_listed(run, tmp_path):
    """The last chosen epoch's weights describe the run (its preprocessing, its seed): when
    they cannot be read, the latest readable epoch does, and the last is skipped and listed."""
    from ampcheck.adapters.cryodrgn_epochs import check_cryodrgn_epochs
    from ampcheck.epochs import parse_epochs

    copy = tmp_path / "run"
    shutil.copytree(run.out, copy)
    last = copy / "weights.2.pkl"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    args = (copy, run.particles, run.poses, run.ctf)
    given = {"selection": parse_epochs("all"), "ind": run.train_ind,
             "checks": ["amortization_gap"], "budget": "smoke"}
    profile, model, _ = check_cryodrgn_epochs(*args, **given)
    assert [e for e, _, _ in profile.epochs] == [1] and model.epoch == 1
    assert list(profile.skipped) == [2] and "weights.2.pkl" in profile.skipped[2]
    (copy / "weights.1.pkl").write_bytes(b"")
    with pytest.raises(InputError) as err:
        check_cryodrgn_epochs(*args, **given)
    message = str(err.value)
    assert "\n" not in message and message.startswith("no epoch could be measured")
    assert "weights.1.pkl" in message and "weights.2.pkl" in message
