"""The amortization profile over epochs: which epochs, the recommended epoch, the report block.

The rule is tested on constructed metrics (where the answer is known by construction) and on
a constructed run: a linear VAE on digits whose encoder, from an epoch on, keeps serving its
training images and serves new images ever worse (a lookup table in the making): the rule must
recommend an epoch before that. The command line is tested on a tiny run of ``ampcheck train
--checkpoint-every 1``, and one epoch of its profile against the single-epoch path.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from ampcheck.epochs import parse_epochs, recommend_epoch
from ampcheck.errors import ConfigError, InputError
from ampcheck.results import Metric


# ----------------------------------------------------------------------------- selection
@pytest.mark.parametrize("text, saved, chosen", [
    ("all", [1, 2, 3, 5], [1, 2, 3, 5]),
    ("3", [1, 2, 3], [3]),
    ("1,3", [1, 2, 3], [1, 3]),
    ("2:12:2", list(range(1, 13)), [2, 4, 6, 8, 10, 12]),
    ("2:12:2", [1, 2, 3, 6, 9, 12], [2, 6, 12]),  # a stride takes the saved epochs on it
    ("1:3", [1, 2, 3, 4], [1, 2, 3]),
])
def test_epoch_selections(text, saved, chosen):
    assert parse_epochs(text).select(saved, "run") == chosen


def test_a_plain_epoch_is_the_single_epoch_path():
    assert parse_epochs("4").single == 4
    assert parse_epochs("4,5").single is None and parse_epochs("all").single is None


@pytest.mark.parametrize("text, message", [
    ("0", "count from 1"), ("two", "expected N, all"), ("1,,2", "expected N, all"),
    ("5:2", "a stride runs"), ("1:4:0", "a stride runs"), ("1:2:3:4", "expected N, all"),
])
def test_bad_epoch_selections_say_the_forms(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_epochs(text)


def test_missing_epochs_are_named_with_those_saved():
    with pytest.raises(InputError, match=r"epoch\(s\) 5, 7 of --epoch 1,5,7; epochs saved: "
                                         r"1-4, 6"):
        parse_epochs("1,5,7").select([1, 2, 3, 4, 6], "run")
    with pytest.raises(InputError, match="no saved epoch on the stride 7:9"):
        parse_epochs("7:9").select([1, 2], "run")
    with pytest.raises(InputError, match="no numbered weights saved.*--checkpoint-every"):
        parse_epochs("all").select([], "run")


# ----------------------------------------------------------------------------- the rule
def _m(v: float, half: float = 0.02) -> Metric:
    return Metric(v, False, v - half, v + half)


def _epochs(heldout, train, ratio=None, no_fit=()):
    ratio = ratio or [1.0] * len(heldout)
    return [(e, {"gap_fraction[heldout]": _m(h), "gap_fraction[train]": _m(t),
                 "loss_ratio": _m(r, 0.005)}, ["no_fit"] if e in no_fit else [])
            for e, (h, t, r) in enumerate(zip(heldout, train, ratio, strict=True), 1)]


def test_the_rule_stops_before_held_out_damage():
    # the held-out gap falls to epoch 4, then rises beyond its interval while training's falls
    held = [0.9, 0.7, 0.5, 0.4, 0.41, 0.6, 0.8, 0.9]
    train = [0.9, 0.7, 0.5, 0.4, 0.35, 0.3, 0.2, 0.1]
    epoch, reason = recommend_epoch(_epochs(held, train))
    assert epoch == 5 and "worse at epoch 6" in reason  # 5 is within the interval of the best


def test_without_damage_the_rule_takes_the_latest_as_good_as_the_best():
    held = [0.9, 0.7, 0.5, 0.45, 0.44, 0.43]
    epoch, reason = recommend_epoch(_epochs(held, held))
    assert epoch == 6 and reason.startswith("no epoch shows held-out damage")
    # a last epoch worse (intervals apart) than the best, training worse too: not damage, not
    # recommended either
    epoch, _ = recommend_epoch(_epochs([0.9, 0.5, 0.45, 0.6], [0.9, 0.5, 0.45, 0.6]))
    assert epoch == 3


def test_a_rising_loss_ratio_is_damage_and_no_fit_epochs_do_not_count():
    held = [0.2, 0.8, 0.7, 0.6, 0.6, 0.6]
    train = [0.2, 0.8, 0.7, 0.5, 0.4, 0.3]
    ratio = [1.0, 1.0, 1.0, 1.0, 1.05, 1.1]
    epoch, reason = recommend_epoch(_epochs(held, train, ratio, no_fit={1}))
    assert epoch == 4 and "loss_ratio" in reason  # epoch 1 (no fit) is never the best
    assert recommend_epoch(_epochs(held, train, no_fit=set(range(1, 7))))[0] is None


# ----------------------------------------------------------------------------- a constructed run
class _Memoriser(torch.nn.Module):
    """A linear VAE on digits. Up to epoch ``turn`` its encoder's error shrinks for every image;
    after it, training images keep the best encoding and any other image gets an error that
    grows with the epoch: it turns into a lookup table of its training set."""

    def __init__(self, proj, train_images: np.ndarray, epoch: int, turn: int):
        super().__init__()
        self.proj, self.epoch, self.turn = proj, epoch, turn
        self.kl_weight = 1e-4  # the reconstruction, not the prior, decides the posterior
        self.known = {img.tobytes() for img in train_images.astype(np.float32)}

    def _error(self, x: torch.Tensor) -> torch.Tensor:
        rows = []
        for img in x.numpy().astype(np.float32):
            seed = int.from_bytes(img.tobytes()[:4000:97], "little") % (2**31)
            noise = torch.from_numpy(np.random.default_rng(seed).normal(size=2)).float()
            if self.epoch <= self.turn:
                scale = 0.6 * (self.turn - self.epoch) / self.turn
            else:
                scale = 0.0 if img.tobytes() in self.known else 1.0 * (self.epoch - self.turn)
            rows.append(scale * noise)
        return torch.stack(rows)

    def encode(self, x):
        mu = x.flatten(1) @ self.proj
        return mu + self._error(x) * mu.std(0), torch.full_like(mu, -4.0)

    def recon_loss(self, x, z):
        return (x.flatten(1) - z @ self.proj.T).square().mean(1)


def test_the_rule_recommends_an_epoch_before_the_encoder_memorises():
    from ampcheck.checks.over_epochs import check_epochs
    from ampcheck.data.mnist import MnistDataset

    digits = MnistDataset.load()
    data = MnistDataset(digits.images(np.arange(200)), None, source="no labels")
    train = np.arange(150)
    # the first two principal directions: a decoder that uses the latent
    x = data.images(train).reshape(len(train), -1)
    proj = torch.from_numpy(np.linalg.svd(x - x.mean(0), full_matrices=False)[2][:2].T.copy())
    images = data.images(train)

    def model(epoch: int, turn: int):
        return _Memoriser(proj.float(), images, epoch, turn)

    profile = check_epochs(lambda e: model(e, 4), data, train_indices=train,
                           epochs=range(1, 9), budget="smoke",
                           checks=["amortization_gap"])
    held = [profile.metric("gap_fraction[heldout]", e).value for e in range(1, 9)]
    print("held-out gap fraction by epoch:", np.round(held, 3), profile.recommended_epoch,
          profile.reason)
    assert held[-1] > held[3]  # the construction: new images are served worse after epoch 4
    assert 2 <= profile.recommended_epoch <= 4  # before the damage, not the first epoch
    # the same run without the turn is recommended its last epoch
    steady = check_epochs({e: (lambda e=e: model(min(e, 4), 4)) for e in range(1, 7)}, data,
                          train_indices=train, budget="smoke", checks=["amortization_gap"])
    assert steady.recommended_epoch >= 4 and "no epoch shows held-out damage" in steady.reason


def test_check_epochs_refuses_what_it_cannot_measure():
    from ampcheck.checks.over_epochs import check_epochs

    with pytest.raises(ConfigError, match="no model for epoch"):
        check_epochs({1: object()}, None, train_indices=[0], epochs=[1, 2])
    # --epoch's text chooses among the epochs given (not among its characters)
    with pytest.raises(InputError, match=r"epoch\(s\) 3 of --epoch 1,3; epochs saved: 1-2"):
        check_epochs({1: object(), 2: object()}, None, train_indices=[0], epochs="1,3")
    with pytest.raises(ConfigError, match="list the epochs"):
        check_epochs(lambda e: None, None, train_indices=[0], epochs="1:4")
    with pytest.raises(ConfigError, match="cannot be measured over epochs"):
        from ampcheck.checks.over_epochs import epoch_checks

        epoch_checks(["evil_twin"], truth=True)


# ----------------------------------------------------------------------------- a run's epochs
@pytest.fixture(scope="module")
def epoch_run(tmp_path_factory):
    """A tiny run of ``ampcheck train --checkpoint-every 1`` for 3 epochs (seconds)."""
    from ampcheck.cli import main

    root = tmp_path_factory.mktemp("epochs")
    assert main(["synth", "--out", str(root / "data"), "--size", "tiny", "--quiet"]) == 0
    assert main(["train", "--data", str(root / "data"), "--out", str(root / "run"), "--quiet",
                 "--budget", "smoke", "--epochs", "3", "--checkpoint-every", "1"]) == 0
    return root


def test_train_keeps_numbered_checkpoints(epoch_run):
    from ampcheck.checkpoints import epoch_checkpoints, read_checkpoint

    saved = epoch_checkpoints(epoch_run / "run")
    assert list(saved) == [1, 2, 3]
    state = read_checkpoint(saved[2])
    assert len(state["history"]) == 2 and not state["optimizers"]  # the weights alone


def test_check_run_epoch_all_writes_the_profile(epoch_run, tmp_path, capsys):
    from ampcheck.cli import main
    from ampcheck.report import load_report

    out = tmp_path / "rep"  # one check: the page then draws no latent map (no UMAP to compile)
    assert main(["check", "--run", str(epoch_run / "run"), "--epoch", "all", "--out", str(out),
                 "--quiet", "--checks", "amortization_gap"]) == 0
    printed = capsys.readouterr().out
    assert "Amortization profile over 3 epoch(s)" in printed
    line = next(x for x in printed.splitlines() if x.startswith("Recommended epoch:"))
    report, _ = load_report(out)
    block = report["over_epochs"]
    assert line.startswith(f"Recommended epoch: {block['recommended_epoch']} (")
    assert [e["epoch"] for e in block["epochs"]] == [1, 2, 3]
    assert set(block) >= {"epochs", "recommended_epoch", "reason", "rule", "skipped"}
    assert {"gap_fraction[train]", "gap_fraction[heldout]", "loss_ratio", "recon[train]",
            "volume_auc_fsc[train]", "volume_auc_fsc[heldout]"} <= set(
        block["epochs"][0]["metrics"])
    assert "latent_movement[heldout]" in block["epochs"][1]["metrics"]
    assert set(block["epochs"][0]["metrics"]["loss_ratio"]) == {"value", "higher_is_better",
                                                                "lo", "hi"}
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Over training epochs" in page and "Recommended epoch: <b>" in page
    assert report["checks"][0]["check"] == "amortization_gap"  # the last epoch's


def test_one_epoch_of_the_profile_is_the_single_epoch_path(epoch_run):
    from ampcheck.checks import TrainingCache, check_vae, settings_for
    from ampcheck.checks.over_epochs import _losses
    from ampcheck.epoch_check import check_run_epochs
    from ampcheck.runs import open_run
    from ampcheck.train import TrainedModel, training_split

    checks = ["amortization_gap", "heldout_generalisation", "shift_invariance"]
    profile, _, _ = check_run_epochs(epoch_run / "run", parse_epochs("1:3:2"), checks=checks)
    assert [e for e, _, _ in profile.epochs] == [1, 3]
    # epoch 3 by the single-epoch path, at the same sizes and seed: the same numbers
    meta, cfg, data, train_set, _ = open_run(epoch_run / "run")
    model = TrainedModel.load(epoch_run / "run" / "checkpoint.3.pt", train_set)
    cache = TrainingCache()
    cache.add(model, train_set)
    settings = settings_for(meta["budget"], per_epoch=True)
    gap, held, shift = check_vae(cfg, data, checks=checks, budget=meta["budget"],
                                 seeds=[cfg.seed], cache=cache, settings=settings)
    for key in ("gap_fraction[train]", "gap_fraction[heldout]"):
        assert gap.metrics[key] == profile.metric(key, 3)
    kind = held.details["measure"]
    assert held.metrics[f"{kind}[heldout]"] == profile.metric(f"{kind}[heldout]", 3)
    assert shift.metrics["displacement"] == profile.metric("shift_displacement", 3)
    losses = _losses(model, train_set, training_split(cfg, data)[1], settings, cfg.seed)
    assert losses["loss_ratio"] == profile.metric("loss_ratio", 3)
    assert profile.last[0].metrics == gap.metrics


def test_bad_epochs_of_a_run_are_one_line_and_a_truncated_epoch_is_skipped(
        epoch_run, tmp_path, capsys):
    import shutil

    from ampcheck.cli import main

    run = tmp_path / "run"
    shutil.copytree(epoch_run / "run", run)
    out = str(tmp_path / "rep")
    assert main(["check", "--run", str(run), "--epoch", "1,5", "--out", out]) == 2
    assert "no weights for epoch(s) 5 of --epoch 1,5; epochs saved: 1-3" in \
        capsys.readouterr().err
    # a plain N checks that epoch's weights by the single-epoch path
    assert main(["check", "--run", str(run), "--epoch", "2", "--out", str(tmp_path / "one"),
                 "--quiet", "--checks", "amortization_gap"]) == 0
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    assert one["runs"]["epoch"] == 2 and "over_epochs" not in one
    data = (run / "checkpoint.2.pt").read_bytes()
    (run / "checkpoint.2.pt").write_bytes(data[:len(data) // 3])  # truncated
    assert main(["check", "--run", str(run), "--epoch", "all", "--out", out, "--quiet",
                 "--checks", "amortization_gap"]) == 0
    assert "epoch 2 skipped" in capsys.readouterr().err
    block = json.loads((tmp_path / "rep" / "report.json").read_text())["over_epochs"]
    assert [e["epoch"] for e in block["epochs"]] == [1, 3]
    assert block["skipped"][0]["epoch"] == 2 and "checkpoint.2.pt" in block["skipped"][0][
        "reason"]
    for p in run.glob("checkpoint.*.pt"):
        p.unlink()
    assert main(["check", "--run", str(run), "--epoch", "all", "--out", out, "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no numbered weights saved" in err
    with pytest.raises(SystemExit) as exit_:  # a usage error, as argparse reports them
        main(["check", "--run", str(run), "--epoch", "x", "--out", out])
    assert exit_.value.code == 2 and "--epoch: expected N, all" in capsys.readouterr().err


def test_held_out_indices_that_overlap_the_training_ones_are_refused(tmp_path):
    from ampcheck.adapters.cryodrgn import cryodrgn_split
    from ampcheck.data.mnist import MnistDataset

    data = MnistDataset(MnistDataset.load().images(np.arange(50)), None, source="digits")
    paths = {}
    for name, idx in (("train", np.arange(40)), ("held", np.arange(35, 50))):
        paths[name] = tmp_path / f"{name}.pkl"
        paths[name].write_bytes(pickle.dumps(idx))
    with pytest.raises(InputError, match="image 35 is also in"):
        cryodrgn_split(data, particles="p.mrcs", heldout_ind=paths["held"], ind=paths["train"])


# ----------------------------------------------------------------------- from Python and pytest
def _profile(metrics: dict[int, dict[str, Metric]], skipped=None):
    from ampcheck.checks.over_epochs import EpochProfile

    return EpochProfile(epochs=[(e, m, {}) for e, m in sorted(metrics.items())],
                        skipped=dict(skipped or {}))


def test_no_worse_is_worse_only_with_intervals_apart():
    held = {1: 0.40, 2: 0.43, 3: 0.50, 4: 0.38}  # intervals +- 0.02: 2 overlaps 1, 3 does not
    profile = _profile({e: {"gap_fraction[heldout]": _m(v),
                            "r2[heldout]": Metric(1 - v, True, 0.98 - v, 1.02 - v)}
                        for e, v in held.items()}, skipped={5: "checkpoint.5.pt: truncated"})
    # against an independent reading of the intervals: worse when this epoch's lower bound
    # (upper, for a higher-is-better metric) is beyond the other's upper (lower) bound
    for e in held:
        for e0 in held:
            got = profile.no_worse("gap_fraction[heldout]", than_epoch=e0, at_epoch=e)
            assert bool(got) == (not held[e] - 0.02 > held[e0] + 0.02), (e, e0, got)
            up = profile.no_worse("r2[heldout]", than_epoch=e0, at_epoch=e)
            assert bool(up) == (not (1.02 - held[e]) < (0.98 - held[e0])), (e, e0, up)
    worse = profile.no_worse("gap_fraction[heldout]", than_epoch=1, at_epoch=3)
    assert not worse and repr(worse) == str(worse) == (
        "worse, intervals apart: gap_fraction[heldout] at epoch 3: 0.5 [0.48, 0.52]; at epoch "
        "1: 0.4 [0.38, 0.42] (lower is better)")
    assert str(profile.no_worse("gap_fraction[heldout]", than_epoch=1, at_epoch=2)).startswith(
        "no worse, the intervals overlap")
    last = profile.no_worse("gap_fraction[heldout]", than_epoch=3)  # at the last measured: 4
    assert last and last.epoch == 4 and str(last).startswith("better, intervals apart")
    nan = _profile({1: {"g": Metric(float("nan"), False)}, 2: {"g": _m(0.1)}})
    assert not nan.no_worse("g", than_epoch=1) and "not finite" in str(
        nan.no_worse("g", than_epoch=1))
    with pytest.raises(KeyError, match="epoch 5 not measured .skipped: checkpoint.5.pt"):
        profile.no_worse("gap_fraction[heldout]", than_epoch=5)
    # without an interval (one AUC-FSC), the values alone, and the message says so
    auc = _profile({1: {"auc": Metric(0.8124, True)}, 2: {"auc": Metric(0.8123, True)}})
    drop = auc.no_worse("auc", than_epoch=1)
    assert not drop and "without an interval" in str(drop)
    assert auc.no_worse("auc", than_epoch=2, at_epoch=1)
    # the rule's damage is what no_worse calls worse
    rule = _epochs([0.9, 0.7, 0.5, 0.4, 0.41, 0.6], [0.9, 0.7, 0.5, 0.4, 0.35, 0.3])
    assert "0.6 at epoch 6 above 0.5 at epoch 3" in recommend_epoch(rule)[1]
    assert not _profile({e: m for e, m, _ in rule}).no_worse("gap_fraction[heldout]",
                                                             than_epoch=3)


@pytest.fixture(scope="module")
def digit_run(tmp_path_factory):
    """``ampcheck train --data mnist --checkpoint-every 1`` for 3 smoke epochs (the offline
    digits: 1,150 trained on, 288 held out; two seconds), whose held-out reconstruction falls
    from 349 [346, 351] at epoch 1 to 212 [210, 213] at epoch 3."""
    from ampcheck.cli import main

    run = tmp_path_factory.mktemp("digits") / "digits"
    assert main(["train", "--data", "mnist", "--out", str(run), "--quiet", "--budget",
                 "smoke", "--epochs", "3", "--checkpoint-every", "1"]) == 0
    return run


def test_check_epochs_reads_checkpoint_files_once_each(digit_run, monkeypatch):
    from ampcheck import check_epochs
    from ampcheck.checkpoints import epoch_checkpoints
    from ampcheck.runs import open_run
    from ampcheck.train import TrainedModel

    meta, cfg, data, train_set, _ = open_run(digit_run)
    loads = []
    load = TrainedModel.load.__func__
    monkeypatch.setattr(TrainedModel, "load", classmethod(
        lambda cls, path, *a, **k: loads.append(path.name) or load(cls, path, *a, **k)))
    checks = ["amortization_gap"]
    own = check_epochs(digit_run, checks=checks)  # a run directory: its own data and split
    given = {"budget": meta["budget"], "seed": cfg.seed, "checks": checks}
    files = check_epochs(epoch_checkpoints(digit_run), data, train_indices=train_set.indices,
                         **given)
    folder = check_epochs(str(digit_run), data, train_indices=train_set.indices,
                          epochs="2:3", **given)
    assert sorted(loads) == ["checkpoint.1.pt", "checkpoint.1.pt", "checkpoint.2.pt",
                             "checkpoint.2.pt", "checkpoint.2.pt", "checkpoint.3.pt",
                             "checkpoint.3.pt", "checkpoint.3.pt", "checkpoint.pt"]
    assert [e for e, _, _ in own.epochs] == [e for e, _, _ in files.epochs] == [1, 2, 3]
    for e in (2, 3):  # the same weights, samples and seed: the same numbers, by every path
        for name in ("gap_fraction[heldout]", "loss_ratio", "latent_movement[heldout]"):
            assert own.metric(name, e) == files.metric(name, e)
    assert folder.metric("gap_fraction[heldout]", 3) == own.metric("gap_fraction[heldout]", 3)
    # the regression assertion, both ways: held-out images reconstruct better at the end
    assert files.no_worse("recon[heldout]", than_epoch=1)
    assert not files.no_worse("recon[heldout]", than_epoch=3, at_epoch=1)
    with pytest.raises(ConfigError, match="measured at its own budget and seed"):
        check_epochs(digit_run, budget="smoke")
    with pytest.raises(InputError, match="no such directory"):
        check_epochs(digit_run / "nowhere", data, train_indices=train_set.indices)
    with pytest.raises(InputError, match=r"no weights for epoch\(s\) 5 of --epoch 1,5"):
        check_epochs(digit_run, epochs=[1, 5])


def test_an_unreadable_first_epoch_is_skipped_and_listed(digit_run, tmp_path):
    import shutil

    from ampcheck import check_epochs
    from ampcheck.checkpoints import epoch_checkpoints
    from ampcheck.runs import open_run
    from ampcheck.train import TrainedModel

    run = tmp_path / "run"
    shutil.copytree(digit_run, run)
    first = run / "checkpoint.1.pt"
    first.write_bytes(first.read_bytes()[:1000])  # truncated
    meta, cfg, data, train_set, _ = open_run(run)
    checks = ["amortization_gap"]
    given = {"train_indices": train_set.indices, "budget": meta["budget"], "checks": checks}
    saved = epoch_checkpoints(run)

    def load(epoch: int):  # a user's loader: an InputError skips the epoch
        return TrainedModel.load(saved[epoch], train_set)

    for profile in (check_epochs(run, checks=checks), check_epochs(saved, data, **given),
                    check_epochs(load, data, epochs=[1, 2, 3], **given)):
        assert [e for e, _, _ in profile.epochs] == [2, 3]
        assert list(profile.skipped) == [1] and "checkpoint.1.pt" in profile.skipped[1]
        assert profile.to_dict()["skipped"][0]["epoch"] == 1
    for e in (2, 3):
        (run / f"checkpoint.{e}.pt").write_bytes(b"")
    with pytest.raises(InputError) as err:
        check_epochs(run, checks=checks)
    message = str(err.value)
    assert "\n" not in message and message.startswith("no epoch could be measured")
    assert all(f"epoch {e}: " in message for e in (1, 2, 3))


PLUGIN_TEST = '''
RUN = {run!r}


def test_the_last_epoch_is_no_worse(ampcheck_epochs):
    profile = ampcheck_epochs(RUN, checks=["amortization_gap"])
    assert profile.no_worse("recon[heldout]", than_epoch=1)


def test_a_regression_fails_with_both_values(ampcheck_epochs):
    profile = ampcheck_epochs(RUN, checks=["amortization_gap"], epochs=[1, 3])
    assert profile.no_worse("recon[heldout]", than_epoch=3, at_epoch=1)
'''


def test_the_plugin_measures_and_records_a_profile(digit_run, pytester):
    from ampcheck import check_epochs

    # an in-process run drops what it imported: import what the profile needs here first
    check_epochs(digit_run, checks=["amortization_gap"], epochs=[1])
    pytester.makepyfile(test_user=PLUGIN_TEST.format(run=str(digit_run)))
    result = pytester.runpytest_inprocess("-rA", "-p", "no:cacheprovider", "--junitxml",
                                          "out/junit.xml", "--ampcheck-report",
                                          "out/report.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*AssertionError: assert worse, intervals apart: recon[[]heldout] at epoch 1: *; at "
        "epoch 3: * (lower is better)",
        "*- ampcheck over epochs -*",
        "digits: Amortization profile over 3 epoch(s):",
        "Recommended epoch: *",
        "*= ampcheck summary =*",
        "over epochs*",
        "model*epochs*skipped*recommended*test",
        "digits*1,2,3*-*test_user.py::test_the_last_epoch_is_no_worse",
        "digits*1,3*-*test_user.py::test_a_regression_fails_with_both_values",
    ])
    report = json.loads((pytester.path / "out" / "report.json").read_text())
    profiles = report["runs"]["over_epochs"]
    assert [(p["model"], [e["epoch"] for e in p["epochs"]]) for p in profiles] == [
        ("digits", [1, 2, 3]), ("digits", [1, 3])]
    assert profiles[0]["test"].endswith("test_the_last_epoch_is_no_worse")
    assert set(profiles[0]) >= {"epochs", "recommended_epoch", "reason", "rule", "skipped"}
    junit = (pytester.path / "out" / "junit.xml").read_text()
    assert 'name="ampcheck.digits.over_epochs.epochs" value="1,2,3"' in junit
