"""The command line: the main job, ``synth``, and bad input (exit codes, no tracebacks)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from ampcheck.cli import main


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ampcheck", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def assert_self_contained(page: str) -> None:
    """Every src/href of an HTML page is embedded data or an anchor that exists on it."""
    refs = re.findall(r"""(?:src|href)=["']([^"']*)["']""", page)
    ids = set(re.findall(r"""id=["']([^"']*)["']""", page))
    assert refs and all(r.startswith("data:") or (r.startswith("#") and r[1:] in ids)
                        for r in refs), [r[:40] for r in refs]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny data set and a base VAE trained on it by ``ampcheck train`` (seconds)."""
    root = tmp_path_factory.mktemp("cli")
    assert main(["synth", "--out", str(root / "data"), "--size", "tiny", "--quiet"]) == 0
    assert main(["train", "--data", str(root / "data"), "--out", str(root / "run"),
                 "--quiet", "--budget", "smoke"]) == 0
    return root


def test_synth_writes_a_data_set_and_prints_its_summary(tmp_path):
    proc = run_cli("synth", "--out", str(tmp_path / "d"), "--size", "tiny", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert "48 × 32×32 px" in proc.stdout and "SNR 0.1 requested" in proc.stdout
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert (manifest["n"], manifest["D"], manifest["seed"]) == (48, 32, 1)


def test_synth_options_override_the_preset(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "d"), "--size", "tiny", "--n", "20",
                 "--box", "48", "--snr", "inf", "--quiet"]) == 0
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert (manifest["n"], manifest["D"], manifest["apix"]) == (20, 48, 4.0)
    assert manifest["noise_std"] == 0
    assert "20 × 48×48 px" in capsys.readouterr().out


def test_run_reuses_matching_data_and_refuses_other_settings(tmp_path, capsys):
    out, only = str(tmp_path / "o"), ["--size", "tiny", "--quiet", "--data-only"]
    assert main(["run", "--out", out, *only]) == 0
    assert main(["run", "--out", out, *only]) == 0
    assert "Reusing" in capsys.readouterr().out
    assert main(["run", "--out", out, *only, "--seed", "9"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["run", "--out", out, *only, "--seed", "9", "--force"]) == 0


@pytest.mark.cryoem
@pytest.mark.mnist
def test_run_checks_everything_prints_the_profile_and_writes_the_report(tmp_path, capsys):
    import json

    from ampcheck.checks import CHECKS, INVARIANT_CONTROL

    out = tmp_path / "o"
    assert main(["run", "--out", str(out), "--size", "tiny", "--budget", "smoke",
                 "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    # every check (the MNIST control included) and the invariant encoder's positive controls
    control = {f"{c}[cryoem:invariant]" for c in INVARIANT_CONTROL}
    assert set(report["profile"]) == set(CHECKS) | control
    # every check runs, but pose_leakage: 38 training images are too few to cross-validate
    from ampcheck.checks.leakage import MIN_IMAGES

    ran = {k: v for k, v in report["profile"].items() if not k.startswith("pose_leakage")}
    assert all(v in ("PASS", "WARN", "FAIL") for v in ran.values())
    leak = [c for c in report["checks"] if c["check"] == "pose_leakage"]
    assert [c["verdict"] for c in leak] == ["SKIP", "SKIP"]
    assert leak[0]["explanation"].startswith(f"needs at least {MIN_IMAGES} training images")
    assert report["dataset"]["n"] == 48 and len(report["checks"]) == len(CHECKS) + len(control)
    trained = report["runs"]["trained"]
    assert {"cryoem/twin-perm/large/seed0", "cryoem/vae/invariant/seed0"} <= set(trained)
    assert "cryoem/vae/large/seed0" not in trained  # the twins' baseline is the base VAE
    # trained ahead, side by side: exactly what the checks then asked for, in their order
    from ampcheck.checks import TrainingCache, battery_jobs
    from ampcheck.data.particles import ParticleDataset

    jobs = battery_jobs(ParticleDataset.from_dir(out / "data"), budget="smoke")
    assert list(trained) == [TrainingCache.label(cfg) for cfg, _ in jobs]
    printed = capsys.readouterr().out
    assert "Amortization profile" in printed and "evil_twin" in printed
    page = (out / "report.html").read_text()
    assert all(f">{name}<" in page for name in CHECKS)
    assert_self_contained(page)
    # an existing report is not replaced without --force
    assert main(["run", "--out", str(out), "--size", "tiny", "--quiet"]) == 2
    assert "--force" in capsys.readouterr().err


def test_run_defaults_to_the_informative_standard_budget_and_data_set(tmp_path, monkeypatch):
    from ampcheck import cli
    from ampcheck.data.synthetic import SynthConfig

    seen = {}
    monkeypatch.setattr(cli, "_run_data",
                        lambda folder, args: seen.update(data=cli._synth_config(args)) or folder)
    monkeypatch.setattr(cli, "_run_battery", lambda data, source, report, args: seen.update(
        budget=args.budget, seeds=args.seeds, device=args.device) or 0)
    assert main(["run", "--out", str(tmp_path / "o")]) == 0
    assert seen == {"data": SynthConfig.preset("standard"), "budget": "standard", "seeds": 1,
                    "device": "auto"}
    synth = cli.build_parser().parse_args(["synth", "--out", "d"])
    assert cli._synth_config(synth) == SynthConfig.preset("standard")


@pytest.mark.parametrize("given, refused", [
    (["--particles", "p.star", "--size", "tiny"], "--size given with --particles: it describes"),
    (["--data", "d", "--snr", "0.5", "--seed", "3"], "--snr, --seed given with --data: they"),
    (["--data-only", "--budget", "full", "--device", "cpu"],
     "--budget, --device given with --data-only, which trains nothing"),
])
def test_run_refuses_options_that_would_do_nothing(tmp_path, capsys, given, refused):
    assert main(["run", "--out", str(tmp_path / "a" / "o"), *given]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ampcheck: error: {refused}"), err
    assert not (tmp_path / "a").exists()  # refused before any work


def test_run_data_only_on_given_files_reads_them_and_makes_no_output_folder(tmp_path, capsys):
    from pathlib import Path

    from ampcheck.outdir import OutputDir

    tiny = Path(__file__).resolve().parents[1] / "fixtures" / "tiny"
    busy = tmp_path / "busy"
    with OutputDir(busy, "ampcheck train"):  # nothing is written there: not in the way
        for given in (["--particles", str(tiny / "particles.star")], ["--data", str(tiny)]):
            for out in (busy, tmp_path / "a" / "o"):
                assert main(["run", "--data-only", "--out", str(out), *given]) == 0
                assert "48 images of 32 x 32 px" in capsys.readouterr().out
    assert not (tmp_path / "a").exists()


def test_every_entry_point_defaults_to_the_informative_standard_budget_and_data_set():
    import inspect

    from ampcheck.adapters.cryodrgn import check_cryodrgn
    from ampcheck.checks import check_vae, subject_from
    from ampcheck.cli import build_parser
    from ampcheck.data.synthetic import SIZES, SynthConfig

    assert build_parser().parse_args(["train", "--out", "r"]).budget == "standard"
    for fn in (check_vae, subject_from, check_cryodrgn):
        assert inspect.signature(fn).parameters["budget"].default == "standard", fn
    standard = SIZES["standard"]
    assert (SynthConfig().n, SynthConfig().D) == (standard["n"], standard["D"])
    assert SynthConfig.preset() == SynthConfig.preset("standard")


def test_train_help_gives_each_budgets_epochs_rate_and_time(capsys):
    from ampcheck.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for budget, epochs, lr in (("smoke", 1, "0.0001"), ("standard", 12, "0.001"),
                               ("medium", 5, "0.0001"), ("full", 50, "0.0001")):
        assert f"{budget} = {epochs} epoch(s) at lr {lr}" in text
    assert text.count("on the standard set (24 px)") == 4 and "on the ci set (64 px)" in text


@pytest.mark.parametrize("args, message", [
    (["synth", "--out", "d", "--box", "33"], "even integer"),
    (["synth", "--out", "d", "--n", "1", "--size", "tiny"], "n must be"),
    (["synth", "--out", "d", "--snr", "-1"], "positive number"),
    (["synth", "--out", "d", "--n", "abc"], "positive integer"),
    (["synth", "--out", "d", "--size", "huge"], "invalid choice"),
    (["synth"], "--out"),
    (["frobnicate"], "invalid choice"),
    (["run", "--out", "d", "--size", "tiny", "--device", "gpu7"], "expected auto, cpu"),
    (["train", "--data", "d", "--out", "r", "--variant", "gan"], "invalid choice"),
    (["train", "--data", "nowhere", "--out", "r"], "nowhere"),
    (["train", "--data", "mnist", "--out", "r", "--model", "cryoem"], "does not match"),
    (["check", "--out", "o"], "either --run"),
    (["check", "--out", "o", "--run", "r", "--cryodrgn", "c"], "either --run"),
    (["check", "--out", "o", "--run", "r", "--checks", "shift,bogus"], "unknown check"),
    (["check", "--out", "o", "--run", "r", "--threshold", "bogus=1"], "bogus"),
    (["check", "--out", "o", "--run", "r", "--threshold", "shift_invariance"], "NAME=NUMBER"),
    (["check", "--out", "o", "--run", "nowhere"], "ampcheck train"),
    (["check", "--out", "o", "--cryodrgn", "c"], "--particles"),
    (["check", "--out", "o", "--run", "r", "--poses", "p.pkl"], "--poses given with --run"),
    (["train", "--out", "r"], "give --data DIR|mnist"),
    (["train", "--out", "r", "--data", "d", "--particles", "p.star"], "not both"),
    (["run", "--out", "d", "--data", "d", "--particles", "p.star"], "not both"),
    (["run", "--out", "d", "--ind", "i.pkl"], "--ind given without --particles"),
    (["train", "--out", "r", "--particles", "p.mrcs"], "p.mrcs: file not found"),
    (["report", "nowhere"], "no such report"),
])
def test_bad_arguments_exit_2_with_a_message(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_input_through_the_real_entry_point_has_no_traceback(tmp_path):
    proc = run_cli("synth", "--out", "d", "--box", "33", cwd=tmp_path)
    assert proc.returncode == 2 and "even integer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_existing_output_is_not_overwritten(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.txt").write_text("keep me")
    proc = run_cli("synth", "--out", str(tmp_path / "d"), "--size", "tiny")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not empty" in proc.stderr and str(tmp_path / "d") in proc.stderr
    assert (tmp_path / "d" / "mine.txt").read_text() == "keep me"


def test_output_path_that_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["synth", "--out", str(tmp_path / "f"), "--size", "tiny"]) == 2
    assert "is a file; expected a directory" in capsys.readouterr().err


def test_train_writes_a_resumable_run_and_refuses_to_overwrite_it(tiny_run, capsys):
    run = tiny_run / "run"
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["variant"] == "vae" and len(meta["history"]) == 1
    assert meta["data"] == str((tiny_run / "data").resolve())
    before = (run / "checkpoint.pt").read_bytes()
    args = ["train", "--data", str(tiny_run / "data"), "--out", str(run), "--quiet", "--budget",
            "smoke"]
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == before  # untouched


def test_train_resume_continues_the_checkpoint(tiny_run, tmp_path):
    import shutil

    shutil.copytree(tiny_run / "run", tmp_path / "r")
    first = json.loads((tmp_path / "r" / "run.json").read_text())["history"]
    assert main(["train", "--data", str(tiny_run / "data"), "--out", str(tmp_path / "r"),
                 "--quiet", "--resume", "--epochs", "2", "--budget", "smoke"]) == 0
    history = json.loads((tmp_path / "r" / "run.json").read_text())["history"]
    assert len(history) == 2 and history[0] == first[0]  # epoch 1 kept, epoch 2 added


def test_an_interrupted_checkpoint_write_keeps_the_old_checkpoint(tiny_run, tmp_path,
                                                                 monkeypatch):
    import shutil

    import ampcheck.train as T
    from ampcheck.data.particles import ParticleDataset

    shutil.copytree(tiny_run / "run", tmp_path / "r")
    ckpt = tmp_path / "r" / "checkpoint.pt"
    before = ckpt.read_bytes()
    cfg = T.TrainConfig.from_dict(json.loads((tmp_path / "r" / "run.json").read_text())["config"])
    train_set, _ = T.training_split(cfg, ParticleDataset.from_dir(tiny_run / "data"))
    run = T.TrainedModel.load(ckpt, train_set)

    def half_written(obj, f):
        open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(T.torch, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        run.save(ckpt)
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["checkpoint.pt", "run.json"]


@pytest.mark.cryoem
def test_check_run_uses_the_trained_model_and_writes_a_report(tiny_run, tmp_path, capsys):
    out = tmp_path / "rep"
    args = ["check", "--run", str(tiny_run / "run"), "--out", str(out), "--quiet",
            "--checks", "shift_invariance,rotation_invariance,heldout_generalisation",
            "--threshold", "shift_invariance=0.3"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["profile"]) == ["shift_invariance", "rotation_invariance",
                                       "heldout_generalisation"]
    assert report["checks"][0]["threshold"]["value"] == 0.3
    # the run's own model was checked, not a new training: its history is the run's
    trained = report["runs"]["trained"]
    assert list(trained) == ["cryoem/vae/base/seed0"]
    run_history = json.loads((tiny_run / "run" / "run.json").read_text())["history"]
    assert trained["cryoem/vae/base/seed0"]["history"] == run_history
    assert (out / "arrays" / "shift_invariance.npz").is_file()
    assert_self_contained((out / "report.html").read_text())
    printed = capsys.readouterr().out
    assert "Amortization profile" in printed
    # one smoke epoch on 38 images learns nothing: the flagged verdicts say what would have
    flagged = [c for c in report["checks"] if c["flags"]]
    assert flagged and "Measured: standard gave truth R²" in " ".join(printed.split())
    assert "For these images of 32 px, try --budget standard" in " ".join(printed.split())
    assert main(args) == 2  # an existing report is kept
    assert "--force" in capsys.readouterr().err


@pytest.mark.cryoem
def test_check_run_checks_a_run_of_another_seed_without_training(tiny_run, tmp_path):
    # A run trained with --seed 3 is checked as itself: seed 3, its own history, nothing
    # trained (a seed-0 model of the same config used to be trained and reported instead).
    run = tmp_path / "seed3"
    assert main(["train", "--data", str(tiny_run / "data"), "--out", str(run), "--seed", "3",
                 "--quiet", "--budget", "smoke"]) == 0
    out = tmp_path / "rep"
    assert main(["check", "--run", str(run), "--out", str(out), "--quiet",
                 "--checks", "shift_invariance"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["checks"][0]["seeds"] == [3]
    trained = report["runs"]["trained"]
    assert list(trained) == ["cryoem/vae/base/seed3"]
    assert trained["cryoem/vae/base/seed3"]["history"] == \
        json.loads((run / "run.json").read_text())["history"]


def test_check_refuses_a_variant_run(tiny_run, tmp_path, capsys):
    run = tmp_path / "vlt"
    assert main(["train", "--data", str(tiny_run / "data"), "--out", str(run), "--quiet",
                 "--variant", "vlt", "--epochs", "0", "--budget", "smoke"]) == 0
    assert main(["check", "--run", str(run), "--out", str(tmp_path / "o")]) == 2
    assert "vlt run" in capsys.readouterr().err


def test_an_interrupted_report_write_keeps_the_old_report(tmp_path, monkeypatch):
    from ampcheck import report as R
    from ampcheck.results import CheckResult, Metric, Threshold

    def result(value):
        return CheckResult("shift_invariance", "m", "PASS", {"displacement": Metric(value, False)},
                           Threshold("displacement", 0.2, False), "fine",
                           arrays={"mu": np.zeros((3, 2))})

    R.write_report(tmp_path, [result(0.1)], {}, {})
    old = {p.name: p.read_bytes() for p in (tmp_path / "report.json",
                                            tmp_path / "arrays" / "shift_invariance.npz")}

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(R.np, "savez_compressed", boom)
    with pytest.raises(KeyboardInterrupt):
        R.write_report(tmp_path, [result(0.05)], {}, {})
    assert (tmp_path / "report.json").read_bytes() == old["report.json"]
    assert (tmp_path / "arrays" / "shift_invariance.npz").read_bytes() == \
        old["shift_invariance.npz"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["report.json", "arrays", "shift_invariance.npz"])  # no temporary left behind


def test_only_train_runs_under_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", "--out", str(tmp_path / "o"), "--size", "tiny"]) == 2
    assert "only `ampcheck train` runs under torchrun" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_budget_hint_names_measured_budgets_nearest_in_box_size():
    from ampcheck.calibration import CALIBRATION, budget_hint

    small = budget_hint("smoke", 24)
    assert "try --budget standard" in small and "0.52" in small  # the standard set's 24 px
    large = budget_hint("smoke", 64)
    assert "try --budget medium" in large and "ci set" in large  # measured at 64 px
    # nothing above full was measured: the hint says to train longer, naming no budget
    assert "--budget" not in budget_hint("full", 64) and "--epochs" in budget_hint("full", 64)
    elsewhere = budget_hint(None, 64)  # a cryoDRGN run: no budget to name or raise
    assert "None" not in elsewhere and "--budget" not in elsewhere and "epochs" in elsewhere
    # every budget it can name is one that recovered the truth in the table
    assert all(c.truth_r2 >= 0.1 for c in CALIBRATION if f"--budget {c.budget}" in small + large)
