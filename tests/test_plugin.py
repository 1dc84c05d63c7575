"""The pytest plugin, through pytester: a throwaway user project with its own tiny VAE.

The project's VAE (an MLP on the 28 x 28 digits, zdim 2, trained 8 epochs on 600 images in
half a second) behaves the same on every run, with margins measured beforehand (smoke budget,
seed 0): ``shift_invariance`` displacement 0.36 [0.34, 0.37] (the 1-px shift governs; the 5-px
one moves 1.35; latents informative: spread/width 6.0, AMI 0.33), so it FAILs the default 0.2
and 0.0 and PASSes 100; ``amortization_gap`` gap fraction 0.06 [0.02, 0.10], a PASS at 0.5.
(Seed 1 gives 0.33 [0.30, 0.35] and 0.08 [0.04, 0.13].)

Runs are in-process (``runpytest_inprocess``) and torch, BLAS and OpenMP use one thread: the
machine has two cores and these models are tiny.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

TINYVAE = '''
"""A user's own VAE, not one of ampcheck's."""
import numpy as np
import torch
from torch import nn


class TinyVAE(nn.Module):
    def __init__(self, side=28, hidden=64, zdim=2):
        super().__init__()
        self.side = side
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(side * side, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * zdim))
        self.dec = nn.Sequential(nn.Linear(zdim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, side * side))

    def encode(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=-1)
        return mu, logvar

    def recon_loss(self, x, z):
        logits = self.dec(z).view(-1, self.side, self.side)
        return nn.functional.binary_cross_entropy_with_logits(
            logits, x, reduction="none").sum((1, 2))


def tiny_vae(train_data, seed):
    """Factory (train_data, seed) -> trained VAE: 8 epochs of Adam on 600 images (0.4 s)."""
    torch.manual_seed(seed)
    model = TinyVAE()
    x = torch.as_tensor(train_data.images(np.arange(min(600, len(train_data)))))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(8):
        for b in torch.randperm(len(x)).split(64):
            mu, logvar = model.encode(x[b])
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
            loss = (model.recon_loss(x[b], z) + kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def make():
    return tiny_vae


def make_none():
    return None


class NoEncode:
    def recon_loss(self, x, z):
        return x.sum((1, 2))


def make_noencode():
    return NoEncode()
'''

PYPROJECT = '''
[tool.ampcheck]
{extra}
'''


def _test_module(models: str, checks: str, expected: str = "None") -> str:
    return f'''
from ampcheck.testing import parametrize_with_checks
from tinyvae import tiny_vae


@parametrize_with_checks({models}, checks={checks}, expected_failed_checks={expected})
def test_amortization(case, ampcheck_check):
    ampcheck_check.run(case.model, case.check, data=case.data)
'''


@pytest.fixture(scope="module", autouse=True)
def _preimport():
    """Import what the inner runs use here first: an in-process pytester run drops the modules
    it imported when it ends, and numpy's C core and torch's operator libraries cannot be
    loaded twice in one process. An optimiser step imports torch's lazily loaded parts."""
    import scipy.ndimage  # noqa: F401
    import sklearn.cluster  # noqa: F401
    import sklearn.datasets  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    import sklearn.neighbors  # noqa: F401
    import torch  # noqa: F401

    import ampcheck.checks  # noqa: F401
    import ampcheck.data.mnist  # noqa: F401
    import ampcheck.testing  # noqa: F401

    layer = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(layer.parameters())
    layer(torch.zeros(1, 2)).sum().backward()
    opt.step()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):  # k-means under OpenMP threads is 70x slower on a busy machine
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def project(pytester: pytest.Pytester):
    """A user project: its VAE module and a pyproject with ``[tool.ampcheck]``."""
    pytester.makepyfile(tinyvae=TINYVAE)
    _pyproject(pytester, 'budget = "smoke"\nseed = 0')
    return pytester


def _pyproject(pytester: pytest.Pytester, extra: str) -> None:
    pytester.makepyprojecttoml(PYPROJECT.format(extra=extra))


# ---------------------------------------------------------------------------- running checks
def test_checks_run_with_sections_summary_table_and_json_report(project):
    project.makepyfile(test_user=_test_module(
        "[tiny_vae]", '["shift_invariance", "amortization_gap"]',
        '{"tiny_vae": {"shift_invariance": "an MLP encoder sees pixels, not digits"}}'))
    result = project.runpytest_inprocess("-rA", "--ampcheck-report", "out/report.json")
    result.assert_outcomes(passed=1, xfailed=1)
    result.stdout.fnmatch_lines([
        "*- ampcheck metrics -*",
        "amortization_gap on tiny_vae: PASS (seeds 0)",
        "  threshold: gap_fraction <= 0.5",
        "  gap_fraction * <- governs",
        "*= ampcheck summary =*",
        "check*model*verdict*metric*value*threshold*baseline",
        "shift_invariance*tiny_vae*FAIL*displacement*<= 0.2*new",
        "amortization_gap*tiny_vae*PASS*gap_fraction*<= 0.5*new",
    ])
    report = json.loads((project.path / "out" / "report.json").read_text())
    verdicts = {r["check"]: r["verdict"] for r in report["checks"]}
    assert verdicts == {"shift_invariance": "FAIL", "amortization_gap": "PASS"}
    assert report["profile"] == verdicts
    assert report["checks"][0]["test"].endswith("test_amortization[tiny_vae-shift_invariance]")
    assert report["runs"]["budget"] == "smoke" and report["runs"]["seeds"] == [0]
    assert not list((project.path / "out").glob(".*"))  # no temporary file left behind


def test_thresholds_default_then_file_then_model_then_command_line(project):
    # Each level flips the verdict of the one below: the default 0.2 would FAIL; the file-wide
    # 100 makes "lenient" PASS; the per-model 0.0 makes "strict" FAIL; the command line's 100
    # makes "strict" PASS again.
    _pyproject(project, '''
[tool.ampcheck.thresholds]
shift_invariance = 100
[tool.ampcheck.models."strict".thresholds]
shift_invariance = 0.0
''')
    project.makepyfile(test_user=_test_module('[("lenient", tiny_vae), ("strict", tiny_vae)]',
                                              '["shift_invariance"]'))
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*lenient*PASS*<= 100*", "*strict*FAIL*<= 0 *"])
    assert "FAILED test_user.py::test_amortization[strict-shift_invariance]" in result.stdout.str()

    result = project.runpytest_inprocess("--ampcheck-threshold", "shift_invariance=100",
                                         "-k", "strict")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*strict*PASS*<= 100*"])


def test_budget_seed_and_data_from_the_command_line_then_the_file_then_defaults(project):
    tiny = Path(__file__).resolve().parents[1] / "fixtures" / "tiny"
    _pyproject(project, f'budget = "medium"\nseed = 3\nseeds = 2\ndata = "{tiny}"')
    project.makepyfile(test_show='''
def test_show(ampcheck_settings, ampcheck_data):
    s = ampcheck_settings
    print("SETTINGS", s.budget, *s.seed_list, s.device, type(ampcheck_data).__name__,
          len(ampcheck_data))
''')
    result = project.runpytest_inprocess("-s", "--ampcheck-seed", "5")
    result.stdout.fnmatch_lines(["*SETTINGS medium 5 6 auto ParticleDataset 48"])
    assert "a test suite's budget" not in result.stdout.str()
    result = project.runpytest_inprocess("-s", "--ampcheck-budget", "smoke", "--ampcheck-data",
                                         "mnist", "--ampcheck-device", "cpu")
    result.stdout.fnmatch_lines(["*SETTINGS smoke 3 4 cpu MnistDataset *"])
    # the header says why smoke's verdicts are not to be acted on, and what is
    result.stdout.fnmatch_lines(["ampcheck: budget smoke, *(smoke: a test suite's budget*"
                                 "--ampcheck-budget standard for verdicts to act on)"])


def test_synthetic_data_is_generated_once_into_the_pytest_cache(project, monkeypatch):
    from ampcheck.data import synthetic

    preset, generate, made = synthetic.SynthConfig.preset.__func__, synthetic.generate, []
    # the "ci" set takes half a minute on two cores; the "tiny" one stands in for it here
    monkeypatch.setattr(synthetic.SynthConfig, "preset",
                        classmethod(lambda cls, size="ci", **kw: preset(cls, "tiny", **kw)))
    monkeypatch.setattr(synthetic, "generate",
                        lambda out, *a, **kw: made.append(out) or generate(out, *a, **kw))
    project.makepyfile(test_show='''
def test_show(ampcheck_data):
    print("DATA", len(ampcheck_data), ampcheck_data.D)
''')
    for _ in range(2):
        result = project.runpytest_inprocess("-s", "--ampcheck-data", "synthetic")
        result.stdout.fnmatch_lines(["*DATA 48 32"])
    assert len(made) == 1 and ".pytest_cache" in str(made[0])


SLOW_GENERATOR = '''
"""The "tiny" set stands in for the "ci" one; its generation is slowed, and logged."""
import os
import time

from ampcheck.data import synthetic

_preset, _write = synthetic.SynthConfig.preset.__func__, synthetic._write


def _slow_write(folder, *args):
    with open({log!r}, "a") as log:
        log.write(f"{{os.getpid()}}\\n")
    manifest = _write(folder, *args)
    time.sleep(3)  # written, not yet in place: the other worker asks for the data meanwhile
    return manifest


synthetic.SynthConfig.preset = classmethod(lambda cls, size="ci", **kw: _preset(cls, "tiny", **kw))
synthetic._write = _slow_write
'''

READ_DATA = '''
import hashlib
import os


def test_read(ampcheck_data):
    folder = ampcheck_data.stack.path.parent
    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    with open({log!r}, "a") as log:
        log.write(f"{{os.getpid()}} {{folder}} {{len(ampcheck_data)}} {{digest.hexdigest()}}\\n")
'''


@pytest.mark.parametrize("cache", [[], ["-p", "no:cacheprovider"]], ids=["cache", "no-cache"])
def test_xdist_workers_generate_the_synthetic_data_once_and_read_it_whole(project, cache):
    pytest.importorskip("xdist")
    made, reads = project.path / "made.log", project.path / "reads.log"
    project.makeconftest(SLOW_GENERATOR.format(log=str(made)))
    project.makepyfile(test_data=READ_DATA.format(log=str(reads)))
    # --dist each: both workers run the test, so both need the data at the same time
    result = project.runpytest_subprocess("-p", "xdist", "-n", "2", "--dist", "each", *cache,
                                          "--ampcheck-data", "synthetic", timeout=300)
    result.assert_outcomes(passed=2)
    assert len(made.read_text().splitlines()) == 1  # one process generated it
    rows = [line.split() for line in reads.read_text().splitlines()]
    assert len({pid for pid, *_ in rows}) == 2  # two workers read it ...
    assert len({tuple(rest) for _, *rest in rows}) == 1  # ... the same folder, bytes, size
    assert rows[0][2] == "48"


def test_an_expected_failure_that_passes_fails_the_run(project):
    project.makepyfile(test_user=_test_module(
        "[tiny_vae]", '["amortization_gap"]',
        '{"tiny_vae": {"amortization_gap": "claimed to fail"}}') + '''

def test_negative_control(ampcheck_check):
    ampcheck_check.run(tiny_vae, "shift_invariance", expected="FAIL")
''')
    result = project.runpytest_inprocess()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*XPASS(strict)*claimed to fail*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_regen_writes_baselines_and_drift_beyond_tolerance_fails(project):
    _pyproject(project, '''
baseline_dir = "baselines"
[tool.ampcheck.tolerance]
rtol = 0.05
atol = 0.001
"amortization_gap.local_gain[train]" = 0.5
''')
    project.makepyfile(test_user=_test_module("[tiny_vae]",
                                              '["shift_invariance", "amortization_gap"]',
                                              '{"tiny_vae": {"shift_invariance": "MLP"}}'))
    result = project.runpytest_inprocess("--ampcheck-regen")
    result.assert_outcomes(passed=1, xfailed=1)
    path = project.path / "baselines" / "tiny_vae" / "amortization_gap.json"
    stored = json.loads(path.read_text())
    gap = stored["metrics"]["gap_fraction"]
    assert stored["tolerance"]["gap_fraction"] == {"rtol": 0.05, "atol": 0.001}
    assert stored["tolerance"]["local_gain[train]"] == {"rtol": 0.5, "atol": 0.001}
    assert (path.parent / "shift_invariance.json").is_file()  # an xfail's metrics are kept

    stored["metrics"]["gap_fraction"] = gap + 0.5
    path.write_text(json.dumps(stored))
    result = project.runpytest_inprocess("-rA")
    result.assert_outcomes(failed=1, xfailed=1)
    result.stdout.fnmatch_lines([
        "*metrics drifted from the baseline*amortization_gap.json:",
        f"*gap_fraction: {gap + 0.5:.6g} -> {gap:.6g} (|change| 0.5 > tolerance*",
        "*amortization_gap*PASS*gap_fraction*drift",
    ])
    result.stdout.fnmatch_lines(["shift_invariance*tiny_vae*FAIL*displacement*ok"])


# ---------------------------------------------------------------------------- --ampcheck-model
def test_model_factory_parametrizes_ampcheck_case_over_its_checks(project):
    project.makepyfile(test_case='''
def test_model(ampcheck_case, ampcheck_check):
    ampcheck_check.run(ampcheck_case)
''')
    result = project.runpytest_inprocess("--collect-only", "-q", "--ampcheck-model",
                                         "tinyvae:make")
    result.stdout.fnmatch_lines([
        "test_case.py::test_model[tiny_vae-shift_invariance]",
        "test_case.py::test_model[tiny_vae-rotation_invariance]",
        "test_case.py::test_model[tiny_vae-amortization_gap]",
        "test_case.py::test_model[tiny_vae-heldout_generalisation]",
    ])
    assert "evil_twin" not in result.stdout.str()  # needs a model ampcheck trains
    result = project.runpytest_inprocess("--ampcheck-model", "tinyvae:make",
                                         "-k", "amortization_gap")
    result.assert_outcomes(passed=1, deselected=3)
    result = project.runpytest_inprocess("-rs")  # no --ampcheck-model: skipped, with the reason
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*pass --ampcheck-model module:factory*"])


@pytest.mark.parametrize("spec, message", [
    ("tinyvae:nope", "module 'tinyvae' has no attribute 'nope'"),
    ("nomodule:make", "cannot import module 'nomodule'"),
    ("tinyvae:make_none", "make_none() returned None; expected a model"),
    ("tinyvae:make_noencode", "the model make_noencode() returned (NoEncode) has no encode()"),
])
def test_bad_model_factories_are_usage_errors_naming_them(project, spec, message):
    project.makepyfile(test_case="def test_model(ampcheck_case):\n    pass\n")
    result = project.runpytest_inprocess("--ampcheck-model", spec)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: --ampcheck-model {spec}: {message}" in result.stderr.str()


def test_a_check_that_cannot_run_fails_or_skips_its_test_with_the_reason(project):
    project.makepyfile(test_user='''
from ampcheck.testing import parametrize_with_checks
from tinyvae import NoEncode, tiny_vae

def test_no_encode(ampcheck_check):
    ampcheck_check.run(NoEncode(), "shift_invariance")

def test_unknown_check(ampcheck_check):
    ampcheck_check.run(tiny_vae, "shift_invariant")

@parametrize_with_checks([tiny_vae], checks=["evil_twin"])
def test_not_applicable(case, ampcheck_check):
    ampcheck_check.run(case.model, case.check, data=case.data)
''')
    result = project.runpytest_inprocess("-rs")
    result.assert_outcomes(failed=2, skipped=1)
    result.stdout.fnmatch_lines([
        "*ampcheck: the model (NoEncode) has no encode()*",
        "*ampcheck: unknown check 'shift_invariant'; expected one of*",
        "*evil_twin needs a model that is trainable; tiny_vae is not*",
    ])


# ---------------------------------------------------------------------------- bad configuration
@pytest.mark.parametrize("args, extra, message", [
    (["--ampcheck-threshold", "shift_invariant=0.3"], "",
     "--ampcheck-threshold: unknown threshold 'shift_invariant'; expected one of"),
    ([], "[tool.ampcheck.thresholds]\nshift_invariant = 0.3",
     "[tool.ampcheck] thresholds: unknown threshold 'shift_invariant'"),
    ([], "[tool.ampcheck.models.\"m\".thresholds]\nevil_twins = 0.3",
     "models.'m' thresholds: unknown threshold 'evil_twins'"),
    ([], "[tool.ampcheck.thresholds]\nevil_twin = \"low\"",
     "thresholds: evil_twin must be a number, got 'low'"),
    ([], "bugdet = \"full\"", "[tool.ampcheck]: unknown key 'bugdet'; expected one of"),
    ([], "[tool.ampcheck.tolerance]\n\"shift_invariant.displacement\" = 0.2",
     "tolerance: unknown check 'shift_invariant'"),
    ([], "seeds = 0", "seeds: expected an integer >= 1, got 0"),
    (["--ampcheck-budget", "huge"], "",
     "--ampcheck-budget: expected one of smoke, standard, medium, full"),
    (["--ampcheck-device", "gpu"], "", "--ampcheck-device: expected auto, cpu, cuda or cuda:N"),
    (["--ampcheck-threshold", "evil_twin"], "", "expected NAME=NUMBER"),
    (["--ampcheck-data", "no/such/dir"], "", "expected mnist, synthetic or a directory"),
])
def test_bad_configuration_is_a_usage_error_with_a_clear_message(project, args, extra, message):
    _pyproject(project, extra)
    project.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = project.runpytest_inprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str().replace("\n", " ")


def test_an_unknown_check_is_rejected_when_the_module_is_collected(project):
    project.makepyfile(test_user=_test_module("[tiny_vae]", '["shift_invariant"]'))
    result = project.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error
    result.stdout.fnmatch_lines(["*unknown check 'shift_invariant'; expected one of*"])


def test_expected_failures_must_name_known_checks_and_models(project):
    project.makepyfile(test_a=_test_module("[tiny_vae]", "None", '{"tiny": {"evil_twin": "x"}}'),
                       test_b=_test_module("[tiny_vae]", "None",
                                           '{"tiny_vae": {"evil_twins": "x"}}'))
    out = project.runpytest_inprocess().stdout.str()
    assert "expected_failed_checks names the model 'tiny', which is not among the models" in out
    assert "expected_failed_checks['tiny_vae']: unknown check 'evil_twins'" in out


# ---------------------------------------------------------------------------- markers, import
def test_the_plugin_registers_its_own_markers_only_and_skips_nothing(project):
    # issue 14 item 4: a guest in every project that installs ampcheck. A subprocess: an
    # in-process run would see the markers this repository registers for itself.
    project.makepyfile(test_marks='''
import pytest

@pytest.mark.cryoem
@pytest.mark.mnist
@pytest.mark.ampcheck_options(shift_transforms=["roll:1"])
def test_ours():
    pass

@pytest.mark.gpu
def test_theirs():
    pass
''')
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=2)  # the project's own gpu test is not skipped by ampcheck
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*'gpu' not found in `markers` configuration option*"])
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "--markers")
    out = result.stdout.str()
    assert "@pytest.mark.cryoem:" in out and "@pytest.mark.mnist:" in out
    assert "@pytest.mark.ampcheck_options(**options):" in out
    assert "@pytest.mark.gpu" not in out and "@pytest.mark.slow" not in out


def test_this_repositorys_conftest_skips_gpu_tests_without_cuda(pytester, monkeypatch):
    import torch

    root = Path(__file__).resolve().parents[1]
    pytester.makeconftest((root / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a CUDA device\n")
    pytester.makepyfile(test_marks="import pytest\n\n@pytest.mark.gpu\ndef test_on_gpu():\n"
                                   "    pass\n\ndef test_anywhere():\n    pass\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = pytester.runpytest_inprocess("--strict-markers", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*needs a CUDA device; none is available here*"])


def test_importing_the_plugin_does_not_import_torch():
    code = "import ampcheck.plugin, sys; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_a_check_that_does_not_apply_to_the_data_skips_with_the_reason_and_no_baseline(project):
    # parametrize_with_checks cannot know at collection that the data lack ground truth: the
    # check's SKIP result becomes a skipped test, with its reason, and leaves no baseline
    _pyproject(project, 'baseline_dir = "baselines"')
    project.makepyfile(test_user='''
import numpy as np
from ampcheck.data.mnist import MnistDataset
from ampcheck.testing import parametrize_with_checks
from tinyvae import tiny_vae


def digits(labels):
    images = MnistDataset.load().images(np.arange(600))
    return MnistDataset(images, labels, source="digits")


@parametrize_with_checks([tiny_vae], data=lambda: digits(None),
                         checks=["heldout_generalisation"])
def test_unlabelled(case, ampcheck_check):
    ampcheck_check.run(case.model, case.check, data=case.data)


@parametrize_with_checks([tiny_vae], data=lambda: digits(np.zeros(600, dtype=int)),
                         checks=["heldout_generalisation"])
def test_one_class(case, ampcheck_check):
    ampcheck_check.run(case.model, case.check, data=case.data)
''')
    result = project.runpytest_inprocess("-rs", "--ampcheck-regen")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines([
        "*heldout_generalisation does not apply to tiny_vae: needs ground truth: use data "
        "with z_continuous or z_class*",
        "*heldout_generalisation does not apply to tiny_vae: the ground truth is constant: "
        "z_class has one class*"])
    assert not (project.path / "baselines").exists()
    assert "ampcheck summary" not in result.stdout.str()
