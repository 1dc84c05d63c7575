"""Every command and example in README.md runs, so the README cannot rot.

* ``make`` targets: the quick start's two are what CI runs (``.ci/run``); every target exists;
* ``.venv/bin/ampcheck ...`` and ``.venv/bin/torchrun ...`` lines run, in order, in one scratch
  directory, on the 48-image ``tiny`` set where the step-by-step block makes ``my-set`` (its
  commands as written, on the ``standard`` set, are the ``slow`` test that asserts informative
  verdicts: about three minutes);
* ``.venv/bin/python -m pytest ...`` lines collect (running them is CI's or the reader's job);
* ``cryodrgn`` lines and ``ampcheck check --cryodrgn`` run when cryoDRGN is installed;
  ``ampcheck synth --structures / --trajectory`` lines when the ``structures`` extra is;
* Python blocks run in order in one scratch directory; the pytest-module example runs under
  pytester with the README's ``[tool.ampcheck]`` block as its ``pyproject.toml``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from launch import torchrun

from ampcheck.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PROGRAMS = {"make", ".venv/bin/ampcheck", ".venv/bin/python", ".venv/bin/torchrun", "cryodrgn"}
PYTEST_EXAMPLE = "# test_amortization.py"
PYTEST_EPOCHS = "# test_epochs.py"  # the profile over epochs, on the Python example's run


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, flags=re.S | re.M)


def commands() -> list[list[str]]:
    """Each command line of the bash blocks, split, without its trailing comment."""
    return [shlex.split(line, comments=True) for block in blocks("bash")
            for line in block.splitlines() if shlex.split(line, comments=True)]


def test_every_readme_command_is_one_this_file_runs():
    found = {c[0] for c in commands()}
    assert found <= PROGRAMS, found - PROGRAMS
    assert {"make", ".venv/bin/ampcheck"} <= found


def test_quick_start_is_what_ci_runs():
    makefile, ci = (ROOT / "Makefile").read_text(), (ROOT / ".ci" / "run").read_text()
    targets = [c[1] for c in commands() if c[0] == "make"]
    assert targets[:2] == ["run", "test"]  # the quick start: the main job, then the tests
    for t in targets:
        assert re.search(rf"^{t}:", makefile, flags=re.M), f"no make target {t!r}"
    ci_lines = [ln.split("#")[0].strip() for ln in ci.splitlines()]
    assert "make test" in ci_lines and "make run" in ci_lines


def test_readme_pytest_commands_collect():
    for c in commands():
        if c[0] == ".venv/bin/python":
            assert c[1:3] == ["-m", "pytest"], c
            # a pytest of its own, not an xdist worker's (pytest-benchmark reads the variables)
            env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
            proc = subprocess.run([sys.executable, *c[1:], "--collect-only", "-q",
                                   "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True,
                                  text=True, timeout=300, env=env)
            assert proc.returncode == 0, (c, proc.stdout[-2000:], proc.stderr[-2000:])


#: The step-by-step block of "From the command line": its first command writes ``my-set``.
STEP_BY_STEP = ["synth", "--out", "my-set"]


def step_by_step() -> list[list[str]]:
    """The step-by-step block's ``ampcheck`` commands, from its ``synth`` to its ``report``."""
    lines = [c[1:] for c in commands() if c[0] == ".venv/bin/ampcheck"]
    start = lines.index(STEP_BY_STEP)
    end = next(i for i in range(start, len(lines)) if lines[i][0] == "report")
    return lines[start:end + 1]


@pytest.mark.cryoem
def test_readme_ampcheck_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = 0
    for c in commands():
        if c[0] == ".venv/bin/ampcheck" and not {"--cryodrgn", *ATOMIC} & set(c):
            tiny = ["--size", "tiny"] if c[1:] == STEP_BY_STEP else []  # see the docstring
            assert main(c[1:] + tiny) == 0, shlex.join(c)
            ran += 1
        elif c[0] == ".venv/bin/torchrun":  # torchrun is torch.distributed.run
            torchrun(c[1:])
            ran += 1
    assert ran >= 8
    assert (tmp_path / "runs" / "ddp" / "run.json").is_file()
    assert (tmp_path / "reports" / "vae" / "report.json").is_file()


@pytest.mark.slow
@pytest.mark.cryoem
def test_readme_step_by_step_as_written_gives_informative_verdicts(tmp_path, monkeypatch):
    # the same path as test_readme_ampcheck_commands_run, on the standard set and budget
    monkeypatch.chdir(tmp_path)
    steps = step_by_step()
    assert [c[0] for c in steps] == ["synth", "train", "train", "check", "report"]
    for c in steps:
        assert main(c) == 0, shlex.join(c)
    report = json.loads((tmp_path / "reports" / "vae" / "report.json").read_text())
    assert report["runs"]["budget"] == "standard" and report["dataset"]["D"] == 24
    ran = [c for c in report["checks"] if c["verdict"] != "SKIP"]
    assert len(ran) == 6, report["profile"]
    flagged = {c["check"]: c["flags"] for c in ran if c["flags"]}
    assert not flagged, flagged


#: The options of the commands that need the ``structures`` extra.
ATOMIC = {"--structures", "--trajectory"}


@pytest.mark.extras
def test_readme_commands_from_atomic_models_run(tmp_path, monkeypatch):
    for module in ("gemmi", "MDAnalysis", "MDAnalysisTests"):
        pytest.importorskip(module, reason="needs the structures extra: pip install "
                                           "'ampcheck[structures]'")
    monkeypatch.chdir(tmp_path)
    lines = [c for c in commands() if c[0] == ".venv/bin/ampcheck" and ATOMIC & set(c)]
    assert len(lines) == 2
    for c in lines:
        assert main(c[1:] + ["--quiet"]) == 0, shlex.join(c)
    truth = np.load(tmp_path / "adk-pair" / "truth.npz")
    assert np.bincount(truth["z_class"]).tolist() == [313, 937]  # as the README says
    assert (tmp_path / "adk-motion" / "manifest.json").is_file()


def _cryodrgn_executable() -> str | None:
    beside = Path(sys.executable).parent / "cryodrgn"  # the extra, installed with ampcheck
    return (str(beside) if beside.is_file() else None) or os.environ.get("AMPCHECK_CRYODRGN") \
        or shutil.which("cryodrgn")


@pytest.mark.extras
@pytest.mark.cryoem
def test_readme_cryodrgn_commands_run(tmp_path, monkeypatch):
    pytest.importorskip("cryodrgn", reason="ampcheck check --cryodrgn needs the optional "
                                           "cryodrgn package (pip install ampcheck[cryodrgn])")
    exe = _cryodrgn_executable()
    if exe is None:
        pytest.skip("no cryodrgn executable")
    monkeypatch.chdir(tmp_path)
    assert main(["synth", "--out", "my-set", "--size", "tiny", "--quiet"]) == 0
    lines = [c for c in commands() if c[0] == "cryodrgn" or "--cryodrgn" in c]
    assert [c[0] for c in lines] == ["cryodrgn", ".venv/bin/ampcheck"]
    proc = subprocess.run([exe, *lines[0][1:]], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(lines[1][1:]) == 0
    assert (tmp_path / "reports" / "cdrgn" / "report.json").is_file()


@pytest.mark.cryoem
@pytest.mark.mnist
def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    examples = [b for b in blocks("python")
                if not b.startswith((PYTEST_EXAMPLE, PYTEST_EPOCHS))]
    assert len(examples) >= 3
    for code in examples:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "shift_invariance" in printed and "heldout_generalisation" in printed


@pytest.mark.mnist
def test_readme_pytest_example_runs_with_the_readme_settings(pytester):
    (example,) = [b for b in blocks("python") if b.startswith(PYTEST_EXAMPLE)]
    (toml,) = blocks("toml")
    (factory,) = [b for b in blocks("python") if "def fit_my_vae" in b]
    # mymodels: the README's VAE and factory, without the lines that run the checks
    pytester.makepyfile(mymodels=factory[:factory.index("\nfor result in check_vae(")])
    pytester.makepyfile(test_amortization=example)
    pytester.makefile(".toml", pyproject=toml)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=600)
    # the linear encoder is not shift invariant (a strict expected failure) and generalises
    result.assert_outcomes(passed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*ampcheck*summary*"])


@pytest.mark.mnist
def test_readme_pytest_epochs_example_runs_on_the_python_examples_checkpoints(pytester):
    (example,) = [b for b in blocks("python") if b.startswith(PYTEST_EPOCHS)]
    (trains,) = [b for b in blocks("python") if "checkpoint_every=1" in b
                 and "check_epochs" in b]
    monkeypatch = pytest.MonkeyPatch()
    with monkeypatch.context() as m:
        m.chdir(pytester.path)
        exec(compile(trains, "README.md", "exec"), {"__name__": "readme"})  # runs/digits
    pytester.makepyfile(test_epochs=example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=600)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*ampcheck*summary*", "over epochs*",
                                 "digits*1,2,3*test_epochs.py::*"])
