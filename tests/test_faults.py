"""Nothing lost, nothing mixed: ampcheck killed (SIGKILL) at every file-system instant.

The process under test (``tests/faults.py``) kills itself just before its K-th fsync, rename or
directory swap; each test first counts the events of an uninterrupted run, then kills a run at
each of them and checks what a user would find and what the next command makes of it. Reports
are killed at every fourth instant in the default run, trainings at three (the first and the
last two), and both at every instant with ``AMPCHECK_FAULTS=all`` (the training, a system
without an atomic swap, and a whole ``ampcheck check``, also with ``-m slow``).

Full disks are ``RLIMIT_FSIZE`` (no root needed): a write beyond the limit fails with EFBIG.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ampcheck.errors import InputError
from ampcheck.files import is_temporary
from ampcheck.outdir import OutputDir
from ampcheck.report import load_report

DRIVER = Path(__file__).with_name("faults.py")
ALL = os.environ.get("AMPCHECK_FAULTS") == "all"


def drive(*args: str, kill_at: int = 0, events: Path | None = None, no_swap: bool = False,
          fsize: int | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "AMPCHECK_KILL_AT": str(kill_at), "PYTHONWARNINGS": "ignore"}
    if events is not None:
        env["AMPCHECK_EVENTS"] = str(events)
    if no_swap:
        env["AMPCHECK_NO_SWAP"] = "1"

    def limit():
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, str(DRIVER), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, preexec_fn=limit, timeout=300)


def count_events(tmp_path: Path, *args: str, **kw) -> int:
    events = tmp_path / "events.txt"
    done = drive(*args, events=events, **kw)
    assert done.returncode == 0, done.stderr
    return int(events.read_text())


def leftovers(folder: Path) -> list[str]:
    """ampcheck's temporary files and staging folders in and beside ``folder``."""
    inside = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    beside = [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]
    return [n for n in inside if is_temporary(n) or n.startswith(".ampcheck")] + beside


def tag_of(out: Path) -> str:
    report, arrays = load_report(out)  # refuses a mix of two reports
    assert set(arrays) == set(report["profile"])
    return report["dataset"]["tag"]


# ----------------------------------------------------------------------------- reports
@pytest.mark.parametrize("mode", ["whole", "entries",
                                  pytest.param("no-swap", marks=pytest.mark.slow)])
def test_a_report_killed_at_any_instant_is_the_old_or_the_new_one(tmp_path, mode):
    """``whole``: a report folder swapped in one step; ``entries``: a folder that also holds a
    data set and the user's file, replaced entry by entry; ``no-swap``: a system without an
    atomic swap. Right after the kill the report is whole (``whole``), or at worst mixed and
    refused by ``load_report``; after the next command's repair it is the old or the new one,
    and nothing else in the folder was touched."""
    out = tmp_path / "out"
    assert drive("report", str(out), "old").returncode == 0
    if mode == "entries":  # what the report does not replace: a data set, the user's file
        (out / "data").mkdir()
        (out / "data" / "particles.mrcs").write_bytes(b"stack")
        (out / "notes.txt").write_text("mine")
    pristine, probe = tmp_path / "pristine", tmp_path / "probe"
    os.rename(out, pristine)
    subprocess.run(["cp", "-a", str(pristine), str(probe)], check=True)
    no_swap = mode == "no-swap"
    n = count_events(tmp_path, "report", str(probe), "new", no_swap=no_swap)
    outcomes, mixed = [], 0
    for k in _instants(n, every=4):
        subprocess.run(["cp", "-a", str(pristine), str(out)], check=True)
        killed = drive("report", str(out), "new", kill_at=k, no_swap=no_swap)
        assert killed.returncode == -signal.SIGKILL
        try:  # what a user finds right away
            before = tag_of(out)
        except InputError as err:
            assert mode != "whole" and "does not hold one whole report" in str(err), (k, err)
            before, mixed = "mixed", mixed + 1
        with OutputDir(out, "the next command"):  # the next command's repair
            pass
        after = tag_of(out)
        assert after == "new" or before in ("old", "mixed"), k  # never back from new to old
        if mode == "entries":
            assert (out / "data" / "particles.mrcs").read_bytes() == b"stack"
            assert (out / "notes.txt").read_text() == "mine"
        assert leftovers(out) == [], k
        outcomes.append(after)
        subprocess.run(["rm", "-rf", str(out)], check=True)
    # the report turns new at one instant and stays new
    assert outcomes == sorted(outcomes, key=("old", "new").index), outcomes
    assert outcomes[0] == "old" and outcomes[-1] == "new"
    print(f"{mode}: {n} instants: {outcomes.count('old')} old, {outcomes.count('new')} new, "
          f"{mixed} mixed until the next command")


def test_a_mixed_report_directory_is_refused(tmp_path):
    out, other = tmp_path / "out", tmp_path / "other"
    assert drive("report", str(out), "old").returncode == 0
    assert drive("report", str(other), "new").returncode == 0
    os.replace(other / "arrays" / "vlt_equivalence.npz", out / "arrays" / "vlt_equivalence.npz")
    with pytest.raises(InputError, match="not hold one whole report: arrays/vlt_equivalence.npz"):
        load_report(out)
    (out / "arrays" / "vlt_equivalence.npz").unlink()
    with pytest.raises(InputError, match="which it lists, is missing"):  # a missing part too
        load_report(out)


def test_a_report_that_hits_the_file_size_limit_leaves_the_old_one(tmp_path):
    out = tmp_path / "out"
    assert drive("report", str(out), "old").returncode == 0
    failed = drive("cli", "report", str(out), fsize=1)  # re-render: report.html cannot grow
    assert failed.returncode == 2, failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "report.html" in lines[0] and "too large" in lines[0].lower()
    assert tag_of(out) == "old" and leftovers(out) == []


# ----------------------------------------------------------------------------- trainings
def _tiny(tmp_path: Path) -> Path:
    from ampcheck.data.synthetic import SynthConfig, generate

    return generate(tmp_path / "data", SynthConfig.preset("tiny"), show_progress=False).out


def _weights(run: Path) -> dict:
    import torch

    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


TRAIN = ("--budget", "smoke", "--epochs", "2", "--quiet")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny data set, a complete run of seed 1 (the one a --force replaces) and the
    uninterrupted seed-0 run every killed and resumed one must equal, bit for bit."""
    root = tmp_path_factory.mktemp("faults")
    data = _tiny(root)
    old, reference = root / "old", root / "reference"
    for run, seed in ((old, "1"), (reference, "0")):
        done = drive("cli", "train", "--data", str(data), "--out", str(run), "--seed", seed,
                     *TRAIN)
        assert done.returncode == 0, done.stderr
    subprocess.run(["cp", "-a", str(old), str(root / "probe")], check=True)
    n = count_events(root, "cli", "train", "--data", str(data), "--out", str(root / "probe"),
                     "--force", *TRAIN)
    return data, old, reference, n


def _instants(n: int, every: int = 4) -> list[int]:
    """Every instant with ``AMPCHECK_FAULTS=all``; else the first, the last two and every
    ``every``-th (a sample that meets each outcome: old, mixed, new)."""
    return list(range(1, n + 1)) if ALL else sorted({1, n - 1, n, *range(every, n, every)})


def test_a_training_killed_at_any_instant_is_refused_or_consistent_and_resumes_exactly(
        tmp_path, trained):
    from ampcheck.runs import open_run

    data, old, reference, n = trained
    ref = _weights(reference)
    old_id = json.loads((old / "run.json").read_text())["run_id"]
    seen = {}
    for k in _instants(n, every=n):  # the first, the last two (all with AMPCHECK_FAULTS=all)
        run = tmp_path / f"run{k}"
        subprocess.run(["cp", "-a", str(old), str(run)], check=True)
        killed = drive("cli", "train", "--data", str(data), "--out", str(run), "--force",
                       *TRAIN, kill_at=k)
        assert killed.returncode == -signal.SIGKILL
        try:  # what `check --run` would do: the old training, the new one, or one line
            meta, *_, model = open_run(run, "cpu")
            assert meta["run_id"] == model.run_id, k
            assert model.run_id == old_id or len(model.history) == 2, k
            seen[k] = "old run" if model.run_id == old_id else "new run"
        except InputError as err:
            assert "unfinished" in str(err) or "different trainings" in str(err), (k, err)
            seen[k] = "refused: " + ("unfinished" if "unfinished" in str(err) else "mixed")
        resumed = drive("cli", "train", "--data", str(data), "--out", str(run), "--resume",
                        *TRAIN)
        if resumed.returncode == 2:  # killed before the new training's first checkpoint
            assert ("belongs to another training" in resumed.stderr  # run.json is new
                    or "another configuration" in resumed.stderr), (k, resumed.stderr)
            resumed = drive("cli", "train", "--data", str(data), "--out", str(run), "--force",
                            *TRAIN)
        else:
            seen[k] += ", resumed"
        assert resumed.returncode == 0, (k, resumed.stderr)
        got = _weights(run)
        assert all(np.array_equal(got[key].numpy(), ref[key].numpy()) for key in ref), k
        assert leftovers(run) == [], k
        open_run(run, "cpu")  # consistent and complete
    print(f"{n} instants of train --force, then --resume: {seen}")


@pytest.mark.slow
def test_every_training_instant(tmp_path, trained, monkeypatch):
    """The test above at every instant (``-m slow``; or ``AMPCHECK_FAULTS=all``)."""
    monkeypatch.setattr(sys.modules[__name__], "ALL", True)
    test_a_training_killed_at_any_instant_is_refused_or_consistent_and_resumes_exactly(
        tmp_path, trained)


def test_a_checkpoint_that_hits_the_file_size_limit_is_one_line_and_keeps_the_old(
        tmp_path, trained):
    data, old, _, _ = trained
    run = tmp_path / "run"
    subprocess.run(["cp", "-a", str(old), str(run)], check=True)
    before = (run / "checkpoint.pt").read_bytes()
    failed = drive("cli", "train", "--data", str(data), "--out", str(run), "--force", *TRAIN,
                   fsize=1 << 20)  # 1 MiB: run.json fits, a 7.6 MB checkpoint does not
    assert failed.returncode == 2, failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint.pt" in lines[0] and "enforce" not in lines[0], lines
    assert (run / "checkpoint.pt").read_bytes() == before and leftovers(run) == []


@pytest.mark.slow
def test_a_check_killed_at_any_instant_leaves_the_old_report_or_the_new(tmp_path, trained):
    """`ampcheck check --force` end to end (checks, then the report), killed at each instant
    of its file writes: every instant with ``AMPCHECK_FAULTS=all``, else a sample (``slow``:
    each run takes the checks' time)."""
    _, _, reference, _ = trained
    out, pristine = tmp_path / "out", tmp_path / "pristine"
    check = ("cli", "check", "--run", str(reference), "--checks", "shift_invariance",
             "--quiet", "--out")
    assert drive(*check, str(pristine)).returncode == 0
    new = ("--force", "--threshold", "shift_invariance=0.21")  # a report told apart
    subprocess.run(["cp", "-a", str(pristine), str(tmp_path / "probe")], check=True)
    n = count_events(tmp_path, *check, str(tmp_path / "probe"), *new)
    outcomes = []
    for k in _instants(n):
        subprocess.run(["cp", "-a", str(pristine), str(out)], check=True)
        killed = drive(*check, str(out), *new, kill_at=k)
        assert killed.returncode == -signal.SIGKILL
        report = load_report(out)[0]  # whole, right away (the swap is one step)
        value = report["checks"][0]["threshold"]["value"]
        outcomes.append("new" if value == 0.21 else "old")
        with OutputDir(out, "the next command"):
            pass
        assert leftovers(out) == [], k
        subprocess.run(["rm", "-rf", str(out)], check=True)
    assert outcomes == sorted(outcomes, key=("old", "new").index), outcomes
    print(f"{n} instants of check --force: {outcomes}")
