"""The command line: the main job, ``synth``, and bad input (exit codes, no tracebacks)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ampcheck.cli import main


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ampcheck", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


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

    from ampcheck.checks import CHECKS

    out = tmp_path / "o"
    assert main(["run", "--out", str(out), "--size", "tiny", "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["profile"]) == set(CHECKS)  # every check, the MNIST control included
    assert all(v in ("PASS", "WARN", "FAIL") for v in report["profile"].values())
    assert report["dataset"]["n"] == 48 and len(report["checks"]) == len(CHECKS)
    assert "cryoem/twin-perm/large/seed0" in report["runs"]["trained"]
    printed = capsys.readouterr().out
    assert "Amortization profile" in printed and "evil_twin" in printed
    # an existing report is not replaced without --force
    assert main(["run", "--out", str(out), "--size", "tiny", "--quiet"]) == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["synth", "--out", "d", "--box", "33"], "even integer"),
    (["synth", "--out", "d", "--n", "1", "--size", "tiny"], "n must be"),
    (["synth", "--out", "d", "--snr", "-1"], "positive number"),
    (["synth", "--out", "d", "--n", "abc"], "positive integer"),
    (["synth", "--out", "d", "--size", "huge"], "invalid choice"),
    (["synth"], "--out"),
    (["frobnicate"], "invalid choice"),
    (["run", "--out", "d", "--size", "tiny", "--device", "gpu7"], "unknown device"),
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
    assert "not a directory" in capsys.readouterr().err
