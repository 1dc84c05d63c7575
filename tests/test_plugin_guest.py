"""The pytest plugin as a guest in a user's project (issue 14, items 1-8), through pytester.

The user project is :mod:`test_plugin`'s (its ``TinyVAE`` factory ``tiny_vae``: an MLP on the
digits, 0.4 s of training), with its helpers and its ``project`` fixture. Which test covers
which item of the issue:

1. drift fails an expected failure: ``test_drift_fails_expected_failures_too``;
2. unknown ``[tool.ampcheck.models]`` names: ``test_an_unknown_model_name_in_the_config_*``;
3. check options: ``test_check_options_*``;
4. markers: ``test_generated_tests_carry_the_marker_of_their_data_kind`` (and, in
   ``test_plugin.py``, ``test_the_plugin_registers_its_own_markers_only_*`` and
   ``test_this_repositorys_conftest_skips_gpu_tests_without_cuda``);
5. pytest-xdist and junitxml: ``test_xdist_gives_the_serial_summary_report_and_junit``;
6. the report schema: ``test_the_plugin_report_is_a_report_json``;
7. the README reference: ``test_plugin_docs.py``;
8. training time apart: ``test_training_time_is_reported_apart``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import test_plugin
from test_plugin import _pyproject, _test_module

# the user project and the imports its in-process runs need (fixtures of test_plugin.py)
project = test_plugin.project
_preimport = test_plugin._preimport

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


# ---------------------------------------------------------------------------- 1. drift
def test_drift_fails_expected_failures_too(project):
    # the declared (strict) expected failure and a user's own xfail both FAIL the check as
    # expected; once their metrics drift from the baseline they must fail, not xfail
    _pyproject(project, 'baseline_dir = "baselines"')
    project.makepyfile(test_user=_test_module(
        "[tiny_vae]", '["shift_invariance"]', '{"tiny_vae": {"shift_invariance": "MLP"}}') + '''

import pytest

@pytest.mark.xfail(strict=True, reason="an MLP is not shift invariant")
def test_own_xfail(ampcheck_check):
    ampcheck_check.run(tiny_vae, "shift_invariance")
''')
    result = project.runpytest_inprocess("--ampcheck-regen")
    result.assert_outcomes(xfailed=2)
    path = project.path / "baselines" / "tiny_vae" / "shift_invariance.json"
    result = project.runpytest_inprocess()  # the same metrics: still expected failures
    result.assert_outcomes(xfailed=2)

    stored = json.loads(path.read_text())
    before = stored["metrics"]["displacement"]
    stored["metrics"]["displacement"] = before + 0.5
    path.write_text(json.dumps(stored))
    result = project.runpytest_inprocess("-rA")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "expected to fail (MLP), but its metrics drifted from the baseline: failed" in out
    assert f"displacement: {before + 0.5:.6g} -> {before:.6g}" in out
    result.stdout.fnmatch_lines(["shift_invariance*tiny_vae*FAIL*displacement*drift"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


# ---------------------------------------------------------------------------- 2. model names
def test_an_unknown_model_name_in_the_config_is_a_usage_error_naming_the_known(project):
    _pyproject(project, '[tool.ampcheck.models."tiny_vea".thresholds]\nshift_invariance = 0.5')
    project.makepyfile(test_user=_test_module('[tiny_vae, ("other", tiny_vae)]',
                                              '["shift_invariance"]'))
    result = project.runpytest_inprocess("--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("[tool.ampcheck] models: unknown model 'tiny_vea'; expected one of the models of "
            "the collected checks: other, tiny_vae") in result.stderr.str()
    # -k deselects after the names are read: "tiny_vae" is still a known model
    _pyproject(project, '[tool.ampcheck.models."tiny_vae".options]\n'
                        'shift_transforms = ["roll:1"]')
    result = project.runpytest_inprocess("--collect-only", "-k", "other")
    assert result.ret == pytest.ExitCode.OK


def test_an_unknown_model_name_is_listed_when_names_are_known_only_at_run_time(project):
    # a test that runs a model of its own names it when it runs: no error at collection, and
    # the summary lists the configured models that no check used
    _pyproject(project, '[tool.ampcheck.models."tiny_vea".thresholds]\nshift_invariance = 0.5')
    project.makepyfile(test_user='''
from tinyvae import tiny_vae

def test_direct(ampcheck_check):
    ampcheck_check.run(tiny_vae, "amortization_gap")
''')
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["[tool.ampcheck.models] configures models that no check of "
                                 "this session ran: 'tiny_vea' (checked: tiny_vae)"])


# ---------------------------------------------------------------------------- 3. options
OPTIONS_MODULE = '''
import pytest
from ampcheck.testing import parametrize_with_checks
from tinyvae import tiny_vae

SHIFTS = {"shift_transforms": ["roll:2"]}


@parametrize_with_checks([tiny_vae], checks=["shift_invariance"])
def test_file(case, ampcheck_check):
    ampcheck_check.run(case.model, case.check, data=case.data, expected=["PASS", "WARN", "FAIL"])


@parametrize_with_checks([("per_model", tiny_vae)], checks=["shift_invariance"])
def test_per_model(case, ampcheck_check):
    ampcheck_check.run(case.model, case.check, data=case.data, expected=["PASS", "WARN", "FAIL"])


@parametrize_with_checks([tiny_vae], checks=["shift_invariance"], options=SHIFTS)
def test_case(case, ampcheck_check):
    ampcheck_check.run(case.model, case.check, data=case.data, expected=["PASS", "WARN", "FAIL"])


@pytest.mark.ampcheck_options(shift_transforms=["roll:3", "roll:1"])
@parametrize_with_checks([tiny_vae], checks=["shift_invariance"], options=SHIFTS)
def test_marker(case, ampcheck_check):
    ampcheck_check.run(case.model, case.check, data=case.data, expected=["PASS", "WARN", "FAIL"])


@pytest.mark.ampcheck_options(shift_transforms=["roll:3"])
def test_call(ampcheck_check):
    ampcheck_check.run(tiny_vae, "shift_invariance", options={"shift_transforms": ["roll:6"]},
                       expected=["PASS", "WARN", "FAIL"])
'''


def test_check_options_from_the_file_the_model_the_case_a_marker_and_the_call(project):
    # each level overrides the one below; the metrics name the transforms that ran
    _pyproject(project, '''
[tool.ampcheck.options]
shift_transforms = ["roll:4"]
[tool.ampcheck.models."per_model".options]
shift_transforms = ["roll:5"]
''')
    project.makepyfile(test_user=OPTIONS_MODULE)
    result = project.runpytest_inprocess("--ampcheck-report", "report.json")
    result.assert_outcomes(passed=5)
    report = json.loads((project.path / "report.json").read_text())
    ran = {c["test"].split("::")[1].split("[")[0]: c for c in report["checks"]}
    expected = {"test_file": ["roll:4"], "test_per_model": ["roll:5"], "test_case": ["roll:2"],
                "test_marker": ["roll:3", "roll:1"], "test_call": ["roll:6"]}
    for test, shifts in expected.items():
        assert ran[test]["options"] == {"shift_transforms": shifts}, test
        assert ran[test]["details"]["transforms"] == [f"roll(0,{s[5:]})" for s in shifts]
        moved = sorted(k for k in ran[test]["metrics"] if k.startswith("displacement["))
        assert moved == [f"displacement[roll(0,{s[5:]})]" for s in shifts[1:]], test  # not
        # the first, which governs: "displacement"
    # one factory training for all five tests: options make views of one subject
    assert list(report["runs"]["trained"]) == ["tiny_vae/factory/seed0",  # test_file's
                                               "per_model/factory/seed0"]


@pytest.mark.parametrize("where, extra, module, message", [
    ("file", '[tool.ampcheck.options]\nshift_transform = ["roll:1"]', None,
     "[tool.ampcheck] options: unknown check option 'shift_transform'; expected one of "
     "twin_encoder, twin_baseline, shift_transforms"),
    ("model", '[tool.ampcheck.models."tiny_vae".options]\nvlt_int = "zero"', None,
     "models.'tiny_vae' options: unknown check option 'vlt_int'; expected one of"),
    ("file data", '[tool.ampcheck.options]\nmnist_data = "digits"', None,
     "unknown check option 'mnist_data' (a data set, given from Python only)"),
    ("marker", "", "import pytest\n\n@pytest.mark.ampcheck_options(rotations=[1])\n"
                   "def test_x(ampcheck_check):\n    pass\n",
     "test_user.py::test_x: @pytest.mark.ampcheck_options: unknown check option 'rotations'; "
     "expected one of"),
])
def test_check_options_that_are_unknown_are_usage_errors(project, where, extra, module,
                                                         message):
    _pyproject(project, extra)
    project.makepyfile(test_user=module or _test_module("[tiny_vae]", '["shift_invariance"]'))
    result = project.runpytest_inprocess("--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, where
    assert message in result.stderr.str().replace("\n", " "), where


def test_check_options_that_are_unknown_in_python_name_the_known_ones(project):
    project.makepyfile(test_user='''
from ampcheck.testing import parametrize_with_checks
from tinyvae import tiny_vae

def test_call(ampcheck_check):
    ampcheck_check.run(tiny_vae, "shift_invariance", options={"shifts": ["roll:1"]})

@parametrize_with_checks([tiny_vae], options={"shifts": ["roll:1"]})
def test_case(case, ampcheck_check):
    pass
''')
    result = project.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.INTERRUPTED  # the decorator: a collection error
    result.stdout.fnmatch_lines(["*unknown check option 'shifts'; expected one of "
                                 "twin_encoder, *"])
    project.makepyfile(test_user='''
from tinyvae import tiny_vae

def test_call(ampcheck_check):
    ampcheck_check.run(tiny_vae, "shift_invariance", options={"shifts": ["roll:1"]})
''')
    result = project.runpytest_inprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ampcheck_check.run(options=...): unknown check option "
                                 "'shifts'; expected one of twin_encoder, *"])


def test_check_options_stamp_the_baseline(project):
    # a baseline made with other options measures something else: not compared
    _pyproject(project, 'baseline_dir = "baselines"')
    project.makepyfile(test_user=_test_module("[tiny_vae]", '["shift_invariance"]',
                                              '{"tiny_vae": {"shift_invariance": "MLP"}}'))
    project.runpytest_inprocess("--ampcheck-regen").assert_outcomes(xfailed=1)
    stored = json.loads((project.path / "baselines" / "tiny_vae" /
                         "shift_invariance.json").read_text())
    assert stored["options"] == {}
    _pyproject(project, 'baseline_dir = "baselines"\n[tool.ampcheck.options]\n'
                        'shift_transforms = ["roll:2"]')
    result = project.runpytest_inprocess()
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(["shift_invariance*tiny_vae*FAIL*skipped"])


# ---------------------------------------------------------------------------- 4. markers
def test_generated_tests_carry_the_marker_of_their_data_kind(project):
    project.makepyfile(test_user='''
from ampcheck.data.particles import ParticleDataset
from ampcheck.testing import parametrize_with_checks
from tinyvae import tiny_vae

TINY = "%s"


@parametrize_with_checks([tiny_vae], checks=["shift_invariance"])
def test_session_data(case):
    pass


@parametrize_with_checks(["cryoem", "mnist"], checks=["shift_invariance"])
def test_presets(case):
    pass


@parametrize_with_checks([tiny_vae], data=ParticleDataset.from_dir(TINY),
                         checks=["shift_invariance"])
def test_particles(case):
    pass


@parametrize_with_checks([tiny_vae], data=lambda: ParticleDataset.from_dir(TINY),
                         checks=["shift_invariance"], kind="cryoem")
def test_lazy(case):
    pass
''' % (FIXTURES / "tiny"))

    def selected(*args):
        result = project.runpytest_inprocess("--collect-only", "-q", *args)
        return sorted(line.split("::")[1] for line in result.stdout.lines if "::" in line)

    assert selected("-m", "cryoem") == [
        "test_lazy[tiny_vae-shift_invariance]", "test_particles[tiny_vae-shift_invariance]",
        "test_presets[cryoem:base-shift_invariance]"]  # a preset's full name (kinds.py)
    assert selected("-m", "mnist") == ["test_presets[mnist-shift_invariance]",
                                       "test_session_data[tiny_vae-shift_invariance]"]
    # the session's data decide where nothing else does
    assert "test_session_data[tiny_vae-shift_invariance]" in selected(
        "-m", "cryoem", "--ampcheck-data", str(FIXTURES / "tiny"))


def test_the_model_option_cases_carry_the_marker_of_their_data_kind(project):
    project.makepyfile(test_case='''
def test_model(ampcheck_case, ampcheck_check):
    pass
''')
    result = project.runpytest_inprocess("--collect-only", "-q", "-m", "mnist",
                                         "--ampcheck-model", "tinyvae:make")
    result.stdout.fnmatch_lines(["test_case.py::test_model[tiny_vae-shift_invariance]"])
    result = project.runpytest_inprocess("--collect-only", "-q", "-m", "cryoem",
                                         "--ampcheck-model", "tinyvae:make")
    assert "test_model[" not in result.stdout.str()


# ---------------------------------------------------------------------------- 5. xdist
XDIST_MODULE = '''
import pytest
from ampcheck.testing import parametrize_with_checks
from tinyvae import tiny_vae


@parametrize_with_checks([tiny_vae, ("second", tiny_vae)],
                         checks=["shift_invariance", "amortization_gap"],
                         expected_failed_checks={"tiny_vae": {"shift_invariance": "MLP"}})
def test_amortization(case, ampcheck_check):
    ampcheck_check.run(case.model, case.check, data=case.data)
'''


def _summary(stdout: str) -> list[str]:
    """The check rows of the ampcheck summary, in the order printed."""
    text = stdout.split("ampcheck summary", 1)[1].split("\ntraining (", 1)[0]
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("check "))
    return lines[header + 1:]


def _junit(path: Path) -> dict[str, dict[str, str]]:
    return {case.get("name"): {p.get("name"): p.get("value")
                               for p in case.iter("property")}
            for case in ET.parse(path).getroot().iter("testcase")}


def _untimed(report: dict) -> dict:
    """The report without what depends on timing or on which worker trained what."""
    runs = dict(report["runs"])
    runs.pop("seconds")
    runs["trained"] = sorted(runs["trained"])
    return {**report, "runs": runs}


def test_xdist_gives_the_serial_summary_report_and_junit(project, monkeypatch):
    pytest.importorskip("xdist")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers' torch: as the in-process one
    _pyproject(project, 'baseline_dir = "baselines"\n'
                        '[tool.ampcheck.models."second".thresholds]\nshift_invariance = 100')
    project.makepyfile(test_user=XDIST_MODULE)
    outcomes = {"passed": 3, "xfailed": 1}
    serial = project.runpytest_inprocess("--ampcheck-report", "serial.json",
                                         "--junitxml", "serial.xml")
    serial.assert_outcomes(**outcomes)
    xdist = project.runpytest_subprocess("-p", "xdist", "-n", "2", "-p", "no:cacheprovider",
                                         "--ampcheck-report", "xdist.json",
                                         "--junitxml", "xdist.xml", timeout=120)
    xdist.assert_outcomes(**outcomes)
    assert re.search(r"created: 2/2 workers", xdist.stdout.str())

    rows = _summary(serial.stdout.str())
    assert len(rows) == 4 and rows == _summary(xdist.stdout.str())
    a = json.loads((project.path / "serial.json").read_text())
    b = json.loads((project.path / "xdist.json").read_text())
    assert len(a["checks"]) == 4 and _untimed(a) == _untimed(b)
    junit = _junit(project.path / "serial.xml")
    props = junit["test_amortization[second-shift_invariance]"]
    assert props["ampcheck.second.shift_invariance.verdict"] == "PASS"
    assert props["ampcheck.second.shift_invariance.metric"] == "displacement"
    assert props["ampcheck.second.shift_invariance.threshold"] == "<= 100"
    assert props["ampcheck.second.shift_invariance.baseline"] == "new"
    assert re.fullmatch(r"\[\S+, \S+\]", props["ampcheck.second.shift_invariance.interval"])
    assert junit == _junit(project.path / "xdist.xml")
    assert not list(project.path.glob(".*.tmp.json"))  # one writer: no leftover temporaries


# ---------------------------------------------------------------------------- 6. the report
def test_the_plugin_report_is_a_report_json(project):
    from ampcheck.render import render_html
    from ampcheck.report import load_report, read_report_json

    project.makepyfile(test_user=_test_module("[tiny_vae]", '["amortization_gap"]'))
    out = project.path / "out"
    project.runpytest_inprocess("--ampcheck-report", str(out / "report.json")
                                ).assert_outcomes(passed=1)
    report = read_report_json(out / "report.json")
    assert set(report) == {"profile", "checks", "dataset", "runs", "arrays"}
    assert report["profile"] == {"amortization_gap": "PASS"} and report["arrays"] == {}
    (check,) = report["checks"]
    assert check["test"] == "test_user.py::test_amortization[tiny_vae-amortization_gap]"
    assert check["baseline"] == "new" and check["metrics"]["gap_fraction"]["value"] > 0
    run = report["runs"]["trained"]["tiny_vae/factory/seed0"]
    assert run["seconds"] > 0 and run["images"] > 0
    assert report["dataset"]["data"] == "mnist" and report["dataset"]["sets"][0]["n"] > 0
    # one reader for both: the directory renders as a CLI report does (no plots: no arrays)
    assert load_report(out) == (report, {})
    assert "amortization_gap" in render_html(out).read_text()
    # a report file under another name reads the same
    (out / "report.json").rename(out / "plugin.json")
    assert load_report(out / "plugin.json") == (report, {})


# ---------------------------------------------------------------------------- 8. training
def test_training_time_is_reported_apart(project):
    project.makepyfile(test_user=_test_module('[tiny_vae, ("second", tiny_vae)]',
                                              '["amortization_gap"]'))
    result = project.runpytest_inprocess("--ampcheck-seeds", "2")
    result.assert_outcomes(passed=2)
    lines = result.stdout.str().split("\ntraining (", 1)[1].splitlines()[2:6]
    pattern = r"(\S+)\s+factory\s+(\d)\s+(\d+\.\d)\s+test_user.py::test_amortization\[(\S+)-"
    found = [re.match(pattern, line) for line in lines]
    assert all(found), lines
    assert sorted((m[1], m[2], m[4]) for m in found) == [
        ("second", "0", "second"), ("second", "1", "second"),
        ("tiny_vae", "0", "tiny_vae"), ("tiny_vae", "1", "tiny_vae")]


def test_training_on_two_data_sets_is_two_rows_and_workers_one():
    # the same preset trained on the session's data and on a case's data is two models; the
    # same one trained on two xdist workers is one model, charged twice
    from types import SimpleNamespace

    from ampcheck._plugin_records import _trained

    def run(data, worker, test="t.py::a"):
        return {"label": "mnist/vae/base/seed0", "data": data, "worker": worker, "test": test,
                "model": "mnist", "variant": "vae", "seed": 0, "seconds": 2.0}

    state = SimpleNamespace(order={"t.py::a": 0, "t.py::b": 1}, training=[
        run("digits", None), run("other", None, "t.py::b")])
    assert list(_trained(state)) == ["mnist/vae/base/seed0", "mnist/vae/base/seed0 #2"]
    assert [r["data"] for r in _trained(state).values()] == ["digits", "other"]
    state.training = [run("digits", "gw0"), run("digits", "gw1", "t.py::b")]
    (only,) = _trained(state).values()
    assert only["trainings"] == 2 and only["seconds"] == 4.0 and only["workers"] == ["gw0", "gw1"]
