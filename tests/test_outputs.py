"""Outputs and runs a user can trust (issue 13): one writer per directory, nothing replaced
without --force, paths validated before any work, stale temporaries swept, the right model
checked, and one line naming the file for every damaged run, checkpoint or report."""

from __future__ import annotations

import json
import os
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ampcheck import outdir
from ampcheck.cli import main
from ampcheck.errors import BusyError, InputError
from ampcheck.outdir import LOCK, OutputDir, reading, staged
from ampcheck.runs import open_run


def one_error(capsys, *words: str) -> str:
    """The one stderr line of a refused command; it contains ``words``."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("ampcheck: error: ") and all(w in err[0] for w in words), err[0]
    return err[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two tiny data sets of the same size (seeds 0 and 1) and a run trained on the first."""
    root = tmp_path_factory.mktemp("outputs")
    for seed in ("0", "1"):
        assert main(["synth", "--out", str(root / f"data{seed}"), "--size", "tiny", "--seed",
                     seed, "--quiet"]) == 0
    assert main(["train", "--data", str(root / "data0"), "--out", str(root / "run"),
                 "--quiet", "--budget", "smoke"]) == 0
    return root


def copy_run(tiny, tmp_path, name="run") -> Path:
    return Path(shutil.copytree(tiny / "run", tmp_path / name))


def dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def forbid_training(monkeypatch):
    """Any training from here on fails the test: the command must refuse before work."""
    import ampcheck.train

    def no(*a, **k):
        raise AssertionError("trained before refusing")
    monkeypatch.setattr(ampcheck.train, "train", no)


# ----------------------------------------------------------------------------- one writer
def test_a_second_writer_is_refused_at_once_naming_the_holder(tiny, tmp_path, capsys,
                                                              monkeypatch):
    run = copy_run(tiny, tmp_path)
    forbid_training(monkeypatch)
    with OutputDir(run, "ampcheck train"):  # another process's `ampcheck train` (flock: per fd)
        assert main(["train", "--data", str(tiny / "data0"), "--out", str(run), "--force",
                     "--quiet", "--budget", "smoke"]) == 2
        one_error(capsys, str(run), "in use by another ampcheck process", f"pid {os.getpid()}",
                  "`ampcheck train`")
        assert main(["check", "--run", str(run), "--out", str(tmp_path / "rep"),
                     "--quiet"]) == 2
        one_error(capsys, "--run", "is being written by another ampcheck process")
    with OutputDir(tmp_path / "rep", "ampcheck check"):
        assert main(["check", "--run", str(run), "--out", str(tmp_path / "rep"),
                     "--quiet"]) == 2
        one_error(capsys, "in use by another ampcheck process", "`ampcheck check`")
    assert not list(tmp_path.rglob(".ampcheck-lock"))  # released and removed


def test_a_run_being_read_cannot_be_written(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with reading(run, "--run"), pytest.raises(BusyError, match="in use"):
        with OutputDir(run, "ampcheck train"):
            pass
    with OutputDir(run, "ampcheck train"):  # free again
        pass


def test_a_writer_that_waits_gets_the_folder_once_the_holder_lets_go(tmp_path):
    held = OutputDir(tmp_path / "d", "ampcheck synth")
    held.__enter__()  # it created the folder: it removes it, empty, when it lets go
    threading.Timer(0.3, held.__exit__, (None, None, None)).start()
    with OutputDir(tmp_path / "d", "pytest", wait=30) as waited:
        assert json.loads((waited.path / LOCK).read_text())["command"] == "pytest"
    with OutputDir(tmp_path / "d", "ampcheck synth"):
        with pytest.raises(BusyError, match=r"`ampcheck synth`.* for 0\.2 s; wait for it"):
            with OutputDir(tmp_path / "d", "pytest", wait=0.2):
                pass


# ----------------------------------------------------------------------------- --force
@pytest.mark.parametrize("mine", ["report.html", "arrays/x.npz", "report.json"])
def test_files_ampcheck_did_not_write_are_not_replaced_without_force(tiny, tmp_path, capsys,
                                                                     monkeypatch, mine):
    out = tmp_path / "out"
    (out / mine).parent.mkdir(parents=True, exist_ok=True)
    (out / mine).write_text("the user's own")
    forbid_training(monkeypatch)
    assert main(["check", "--run", str(tiny / "run"), "--out", str(out), "--quiet"]) == 2
    one_error(capsys, str(out / mine.split("/")[0]), "--force")
    assert (out / mine).read_text() == "the user's own"


def test_a_run_json_without_checkpoint_is_not_replaced_without_force(tiny, tmp_path, capsys,
                                                                     monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    forbid_training(monkeypatch)
    assert main(["train", "--data", str(tiny / "data0"), "--out", str(run), "--quiet"]) == 2
    one_error(capsys, str(run / "run.json"), "--force")
    assert (run / "run.json").read_text() == "{}"


# ----------------------------------------------------------------------------- --out checked first
@pytest.mark.parametrize("command", ["train", "check", "run"])
def test_an_out_that_cannot_be_a_directory_is_refused_before_any_work(tiny, tmp_path, capsys,
                                                                      monkeypatch, command):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    forbid_training(monkeypatch)
    args = {"train": ["train", "--data", str(tiny / "data0"), "--budget", "smoke"],
            "check": ["check", "--run", str(tiny / "run")],
            "run": ["run", "--size", "tiny", "--budget", "smoke"]}[command]
    for out in (blocker, blocker / "sub"):
        assert main([*args, "--out", str(out), "--quiet"]) == 2
        one_error(capsys, str(blocker), "is a file")
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_out_in_a_read_only_folder_is_refused_before_any_work(tiny, tmp_path, capsys,
                                                                 monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    forbid_training(monkeypatch)
    assert main(["train", "--data", str(tiny / "data0"), "--out", str(ro / "run")]) == 2
    one_error(capsys, "not writable")


# ----------------------------------------------------------------------------- leftovers
def test_stale_temporaries_are_removed_by_the_next_command(tiny, tmp_path):
    run = copy_run(tiny, tmp_path)
    stale = run / ".checkpoint.pt.0123abcd.tmp.pt"  # what a kill during a save leaves
    stale.write_bytes(b"x" * 1000)
    mine = run / ".checkpoint.pt.notes"  # not ampcheck's pattern: kept
    mine.write_text("mine")
    staging = tmp_path / ".run.89abcdef.tmp"  # a report staging folder of a killed check
    staging.mkdir()
    (staging / "report.json").write_text("{}")
    (staging / outdir.STAGE_MARKER).write_text(json.dumps(["report.json"]))
    assert main(["train", "--data", str(tiny / "data0"), "--out", str(run), "--resume",
                 "--quiet", "--budget", "smoke"]) == 0
    assert not stale.exists() and not staging.exists() and mine.read_text() == "mine"


def test_an_interrupted_entry_by_entry_commit_is_finished_by_the_next_command(tmp_path,
                                                                            monkeypatch):
    """A folder that holds more than a report (here a data set) gets its report replaced entry
    by entry; an interruption after the commit began (Ctrl-C at the rename of report.json) is
    finished by the next command, and nothing else in the folder moves."""
    out = tmp_path / "out"
    with staged(out, ["report.json", "arrays"]) as stage:
        (stage / "report.json").write_text("old")
        (stage / "arrays").mkdir()
    (out / "data").mkdir()
    (out / "data" / "x").write_text("stack")
    real = os.replace

    def interrupted(src, dst):
        if Path(dst).name == "report.json":
            raise KeyboardInterrupt
        return real(src, dst)
    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt), staged(out, ["report.json", "arrays"]) as stage:
        (stage / "report.json").write_text("new")
        (stage / "arrays").mkdir()
        (stage / "arrays" / "a.npz").write_text("new")
    monkeypatch.setattr(os, "replace", real)
    assert (out / "report.json").read_text() == "old" and (out / "arrays" / "a.npz").exists()
    (stage,) = [p for p in out.iterdir() if p.name.startswith(".report.")]
    marker = json.loads((stage / outdir.STAGE_MARKER).read_text())
    assert marker["committing"]
    marker["pid"] = dead_pid()  # the interrupted process has exited since
    (stage / outdir.STAGE_MARKER).write_text(json.dumps(marker))
    with OutputDir(out, "next"):  # rolls the commit forward
        pass
    assert (out / "report.json").read_text() == "new" and (out / "data" / "x").read_text() == \
        "stack"
    assert sorted(p.name for p in out.iterdir()) == ["arrays", "data", "report.json"]


def test_a_failure_before_the_commit_changes_nothing(tmp_path):
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    for extras in (True, False):
        with pytest.raises(RuntimeError), staged(out, ["report.json"]) as stage:
            (stage / "report.json").write_text("new")
            raise RuntimeError("the checks failed")
        assert sorted(p.name for p in out.iterdir()) == (["data"] if extras else [])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
        shutil.rmtree(out / "data", ignore_errors=True)


def test_a_symlinked_out_takes_its_reports_and_shares_its_lock(tmp_path, capsys):
    from faults import small_report

    from ampcheck.report import load_report, write_report

    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    for tag in ("a", "b"):  # a first report, then one that replaces it
        with OutputDir(tmp_path / "link", "check") as held:
            write_report(held.path, small_report(tag), {"tag": tag}, {})
    assert (tmp_path / "link").is_symlink() and load_report(real)[0]["dataset"]["tag"] == "b"
    with OutputDir(real, "ampcheck check"), pytest.raises(BusyError, match="in use"):
        with OutputDir(tmp_path / "link", "ampcheck check"):
            pass


def test_the_working_directory_as_out_is_never_swapped_away(tmp_path, monkeypatch):
    from faults import small_report

    from ampcheck.report import write_report

    monkeypatch.chdir(tmp_path)
    for tag in ("a", "b"):
        with OutputDir(".", "check") as held:
            write_report(held.path, small_report(tag), {"tag": tag}, {})
    assert Path.cwd().exists() and os.path.samefile(Path.cwd(), tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["dataset"]["tag"] == "b"


def test_a_data_set_moved_aside_by_a_killed_generate_is_put_back(tmp_path):
    out = tmp_path / "data"
    aside = tmp_path / ".data.old-12345"  # generate() killed between its two renames
    aside.mkdir()
    (aside / "particles.mrcs").write_text("the user's data set")
    temp = tmp_path / ".data.ab12cd_9"  # and its half-written new one
    temp.mkdir()
    with OutputDir(out, "ampcheck synth"):
        pass
    assert (out / "particles.mrcs").read_text() == "the user's data set"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


# ----------------------------------------------------------------------------- the right run
def test_resume_on_another_data_set_of_the_same_size_is_refused(tiny, tmp_path, capsys):
    run = copy_run(tiny, tmp_path)
    before = (run / "checkpoint.pt").read_bytes()
    assert main(["train", "--data", str(tiny / "data1"), "--out", str(run), "--resume",
                 "--epochs", "2", "--quiet", "--budget", "smoke"]) == 2
    one_error(capsys, "checkpoint.pt", "trained on another data set of 38 images of 32 px")
    assert (run / "checkpoint.pt").read_bytes() == before
    assert (run / "run.json").read_text() == (tiny / "run" / "run.json").read_text()
    open_run(run)  # still the complete, consistent run it was
    assert main(["train", "--data", str(tiny / "data0"), "--out", str(run), "--resume",
                 "--epochs", "0", "--quiet", "--budget", "smoke"]) == 2
    one_error(capsys, "has 1 epochs already; asked for 0")
    assert main(["train", "--data", str(tiny / "data0"), "--out", str(run), "--resume",
                 "--epochs", "2", "--quiet", "--budget", "smoke"]) == 0  # the positive control


def test_check_refuses_a_run_whose_data_set_changed_since(tiny, tmp_path, capsys):
    run = copy_run(tiny, tmp_path)
    meta = json.loads((run / "run.json").read_text())
    meta["data"] = str(tiny / "data1")  # the same path, regenerated with another seed
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="trained on another data set"):
        open_run(run)


def test_check_refuses_a_run_whose_files_describe_different_trainings(tiny, tmp_path, capsys):
    run = copy_run(tiny, tmp_path)
    assert main(["train", "--data", str(tiny / "data0"), "--out", str(tmp_path / "other"),
                 "--seed", "3", "--quiet", "--budget", "smoke"]) == 0
    shutil.copy(tmp_path / "other" / "run.json", run / "run.json")
    assert main(["check", "--run", str(run), "--out", str(tmp_path / "rep"), "--quiet"]) == 2
    one_error(capsys, "checkpoint.pt and run.json describe different trainings")
    meta = json.loads((run / "run.json").read_text())
    del meta["run_id"]  # a run.json of before run ids: the configs still disagree (seed)
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="describe different trainings"):
        open_run(run)
    meta["status"] = "training"
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="unfinished training"):
        open_run(run)
    assert not (tmp_path / "rep").exists()


def test_a_completed_run_is_consistent(tiny):
    meta, cfg, data, train_set, model = open_run(tiny / "run")
    assert meta["status"] == "complete" and meta["run_id"] == model.run_id
    assert model.fingerprint and len(model.history) == cfg.epochs


# ----------------------------------------------------------------------------- damaged files
def _state(tiny) -> dict:
    return torch.load(tiny / "run" / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize("damage, message", [
    (lambda s: s["model"].update({k: torch.zeros(3) for k in list(s["model"])[:1]}),
     "weights do not fit a cryoem vae"),
    (lambda s: s.pop("data"), "'data' missing"),
    (lambda s: s["model"].update({k: v * float("nan") for k, v in list(s["model"].items())[:1]}),
     "NaN or infinite"),
    (lambda s: s.update(history=[{"epoch": "x"}]), "damaged training history"),
    (lambda s: s.update(twins=None, config={**s["config"], "variant": "twin-perm"}),
     "evil twins are missing or damaged"),
])
def test_a_damaged_checkpoint_is_one_line_naming_it(tiny, tmp_path, capsys, damage, message):
    run = copy_run(tiny, tmp_path)
    state = _state(tiny)
    damage(state)
    torch.save(state, run / "checkpoint.pt")
    if state.get("config", {}).get("variant") == "twin-perm":
        meta = json.loads((run / "run.json").read_text())
        meta["config"]["variant"] = "twin-perm"
        (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=message) as err:
        open_run(run)
    assert str(run / "checkpoint.pt") in str(err.value) and "\n" not in str(err.value)


def test_a_refused_checkpoint_never_suggests_loading_it_unsafely(tiny, tmp_path, capsys):
    import collections

    run = copy_run(tiny, tmp_path)
    torch.save({"format": 1, "x": collections.OrderedDict(a=np.float64)},
               run / "checkpoint.pt")
    assert main(["check", "--run", str(run), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    line = one_error(capsys, "checkpoint.pt", "refused")
    assert "weights_only" not in line
    (run / "checkpoint.pt").write_bytes(b"")
    assert main(["check", "--run", str(run), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    one_error(capsys, "checkpoint.pt", "an empty file")


def test_a_run_json_that_contradicts_itself_names_it_not_flags_never_given(tiny, tmp_path,
                                                                          capsys):
    run = copy_run(tiny, tmp_path)
    meta = json.loads((run / "run.json").read_text())
    meta["data"] = "mnist"
    (run / "run.json").write_text(json.dumps(meta))
    assert main(["check", "--run", str(run), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    line = one_error(capsys, str(run / "run.json"), "describes a cryoem model trained on mnist")
    assert "--model" not in line


def test_a_corrupt_array_file_fails_the_report_command_in_one_line(tmp_path, capsys):
    from faults import small_report  # tests/ is on the path (rootdir conftest, rootdir-relative)

    from ampcheck.report import write_report

    write_report(tmp_path / "r", small_report("a"), {}, {})
    npz = tmp_path / "r" / "arrays" / "shift_invariance.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    assert main(["report", str(tmp_path / "r")]) == 2
    one_error(capsys, "arrays/shift_invariance.npz", "damaged")
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    del report["arrays"]  # a report from before the list: the file is read, and refused
    (tmp_path / "r" / "report.json").write_text(json.dumps(report))
    assert main(["report", str(tmp_path / "r")]) == 2
    one_error(capsys, "shift_invariance.npz", "not a readable .npz file")


def test_warnings_never_stand_beside_an_error_and_print_one_line_after_success(
        tmp_path, capsys, monkeypatch):
    import ampcheck.cli as cli

    def warns_then_fails(args):
        warnings.warn("header says 7 Å/px\nbut the CTF says 8", RuntimeWarning, stacklevel=1)
        raise InputError("x.mrcs: not a readable MRC file")

    monkeypatch.setattr(cli, "_cmd_report", warns_then_fails)  # build_parser reads it
    assert main(["report", str(tmp_path)]) == 2
    one_error(capsys, "x.mrcs")

    def warns_twice_then_succeeds(args):
        for _ in range(2):
            warnings.warn("header says 7 Å/px\nbut the CTF says 8", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cli, "_cmd_report", warns_twice_then_succeeds)
    assert main(["report", str(tmp_path)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ampcheck: warning: header says 7 Å/px but the CTF says 8"]


def test_an_older_run_without_ids_stays_checkable_after_a_resume(tiny, tmp_path):
    run = copy_run(tiny, tmp_path)
    state = _state(tiny)
    del state["run_id"], state["data"]["fingerprint"]  # as written before run ids existed
    torch.save(state, run / "checkpoint.pt")
    meta = json.loads((run / "run.json").read_text())
    for key in ("run_id", "status"):
        del meta[key]
    (run / "run.json").write_text(json.dumps(meta))
    open_run(run)
    assert main(["train", "--data", str(tiny / "data0"), "--out", str(run), "--resume",
                 "--quiet", "--budget", "smoke"]) == 0  # no epoch left: the checkpoint keeps no id
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    open_run(run)


def test_a_damaged_optimiser_state_is_one_line_not_a_crash(tiny, tmp_path, capsys):
    run = copy_run(tiny, tmp_path)
    state = _state(tiny)
    moments = state["optimizers"]["model"]["state"]
    first = next(iter(moments))
    moments[first]["exp_avg"] = torch.zeros(3)  # fused Adam would read past it
    torch.save(state, run / "checkpoint.pt")
    assert main(["train", "--data", str(tiny / "data0"), "--out", str(run), "--resume",
                 "--epochs", "2", "--quiet", "--budget", "smoke"]) == 2
    one_error(capsys, "checkpoint.pt", "optimiser state", "exp_avg")
