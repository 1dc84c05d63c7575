"""ampcheck's pytest plugin (entry point ``pytest11``): markers, options, fixtures, reports.

Hooks and thin fixtures only; everything heavy (torch, the checks, the data) is imported when
a test first asks for it, so that loading the plugin costs nothing.

Markers: ``cryoem``, ``mnist``, ``gpu`` (skipped, with the reason, where CUDA is absent) and
``slow``.

Fixtures:

* ``ampcheck_check``: ``ampcheck_check.run(model, check, *, data=None, expected=None)`` runs
  one check with the session's settings and cache, records it (test report section "ampcheck
  metrics", terminal summary, ``--ampcheck-report``), compares it with its stored baseline and
  fails the test unless the verdict is PASS (or ``expected``); a check that does not apply to
  the model or the data (a ``SKIP`` result) skips the test with its reason, and is neither
  recorded nor compared with a baseline;
* ``ampcheck_case``: one ``(model, check)`` case per applicable check of the model that
  ``--ampcheck-model module:factory`` returns;
* ``ampcheck_settings``, ``ampcheck_cache``, ``ampcheck_data``: the resolved configuration,
  the session's :class:`~ampcheck.checks.TrainingCache` and data set.

Configuration: the ``--ampcheck-*`` options and ``[tool.ampcheck]`` in the rootdir's
``pyproject.toml``::

    [tool.ampcheck]
    budget = "smoke"            # smoke | standard | medium | full
    seed = 0                    # first training seed
    seeds = 1                   # number of training seeds
    device = "auto"             # auto | cpu | cuda[:N]
    data = "mnist"              # mnist | synthetic | a directory (relative to the rootdir)
    baseline_dir = "ampcheck-baselines"
    [tool.ampcheck.thresholds]
    shift_invariance = 0.3
    [tool.ampcheck.models."my_vae".thresholds]
    shift_invariance = 0.5
    [tool.ampcheck.tolerance]   # baseline drift allowed: atol + rtol * |old|
    rtol = 0.1
    atol = 0.01
    "shift_invariance.displacement" = 0.2          # per metric: an rtol ...
    "evil_twin.memorisation" = {rtol = 0, atol = 0.05}   # ... or both

Precedence, highest first:

* thresholds: ``--ampcheck-threshold NAME=VALUE`` > ``[tool.ampcheck.models."<model>".
  thresholds]`` (the model's name as its results show it) > ``[tool.ampcheck.thresholds]`` >
  ampcheck's defaults (``ampcheck.checks.DEFAULT_THRESHOLDS``);
* budget, seed, seeds, device, data: the command line > ``[tool.ampcheck]`` > the defaults
  (smoke, 0, 1, auto, mnist); a data directory on the command line is relative to the
  current directory, in the file to the rootdir;
* baseline tolerance: a ``"check.metric"`` key > ``rtol``/``atol`` > the defaults (0.1, 0.01).

Unknown keys, thresholds and check names are usage errors.

Baselines: ``<baseline_dir>/<model>/<check>.json`` holds the metrics of the last
``--ampcheck-regen`` run. Without that option a test fails when a metric drifts beyond
``atol + rtol * |old|`` (the configured tolerance; the file records the one it was written
with); a baseline made with another budget or seeds is not compared, and a missing one is
reported, not failed.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ._plugin_config import AmpcheckSettings, add_options, resolve_settings
from .baselines import baseline_path, compare_baseline, write_baseline, write_json_atomic

__all__ = ["AmpcheckSettings", "CheckRunner", "load_model_factory"]

MARKERS = {
    "cryoem": "cryo-EM checks and harnesses (train models; smoke budget unless told otherwise)",
    "mnist": "MNIST-VAE control checks",
    "gpu": "needs a CUDA device (skipped with a reason where there is none)",
    "slow": "paper-scale or long runs",
}


# ---------------------------------------------------------------------------- session state
@dataclass
class Record:
    """One check result of the session, where it came from and its baseline comparison."""

    nodeid: str
    result: Any  # CheckResult
    baseline: str  # ok | drift | new | written | skipped
    notes: list[str]


class AmpcheckSession:
    """What the plugin keeps for a session: settings, cache, data, subjects and results."""

    def __init__(self, config: pytest.Config, settings: AmpcheckSettings):
        self.config, self.settings = config, settings
        self.records: list[Record] = []
        self._cache = None
        self._data = None
        self._subjects: dict[tuple, Any] = {}
        self.cases: list[Any] = []  # the --ampcheck-model cases

    @property
    def cache(self):
        if self._cache is None:
            from ampcheck.checks import TrainingCache

            self._cache = TrainingCache()
        return self._cache

    @property
    def data(self):
        if self._data is None:
            self._data = _load_data(self.settings.data, self.config)
        return self._data

    def subject(self, model: Any, data: Any = None, name: str | None = None):
        """The :class:`~ampcheck.checks.Subject` of ``model`` on ``data`` (default: the
        session's), made once per session so that a user's factory trains once for all the
        checks of its model. A model trained elsewhere is checked with the first seed only."""
        from ampcheck.checks import subject_from
        from ampcheck.testing import model_name

        data = self.data if data is None else data
        name = name or model_name(model)  # the name subject_from would derive
        try:
            hash(model)
            model_key: Any = model
        except TypeError:
            model_key = id(model)
        key = (model_key, id(data), name)
        if key not in self._subjects:
            s = self.settings
            trained = hasattr(model, "encode") and hasattr(model, "recon_loss")
            subject = subject_from(model, data, budget=s.budget,
                                   seeds=s.seed_list[:1] if trained else s.seed_list,
                                   device=s.device, name=name, cache=self.cache)
            self._subjects[key] = (subject, model, data)  # the references keep the ids valid
        return self._subjects[key][0]

    def run(self, model: Any, check: str, data: Any = None, name: str | None = None):
        """``(subject, CheckResult)`` of ``check`` on ``model`` with the session's settings.

        A check that does not apply to the model, or to the data (a ``SKIP`` result, such as
        held-out generalisation on data without ground truth), skips the test with its reason;
        it is never recorded, so no baseline is written or compared for it.
        """
        from ampcheck import checks as C

        (check,) = C.resolve_checks([check])
        subject = self.subject(model, data, name)
        thresholds = C.resolve_thresholds(self.settings.thresholds_for(subject.name))
        settings = C.settings_for(self.settings.budget, thresholds)
        (result,) = C.run_checks(subject, [check], settings)
        if result.verdict == "SKIP":
            pytest.skip(f"{check} does not apply to {subject.name}: {result.explanation}")
        return subject, result


def _load_data(spec: str, config: pytest.Config):
    """The data set named by ``--ampcheck-data`` / ``data``: MNIST (or its offline stand-in),
    the ``ci`` synthetic set (generated once into pytest's cache), or a particle directory."""
    if spec == "mnist":
        from ampcheck.data.mnist import MnistDataset

        return MnistDataset.load()
    from ampcheck.data.particles import ParticleDataset

    if spec != "synthetic":
        return ParticleDataset.from_dir(spec)
    import hashlib

    from ampcheck.data.synthetic import SynthConfig, generate

    cfg = SynthConfig.preset("ci")
    tag = hashlib.sha1(repr(cfg).encode()).hexdigest()[:12]
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    if cache is not None:
        parent = cache.mkdir("ampcheck")
    else:  # pytest's temporary directories (it keeps the last few), else the system's
        factory = getattr(config, "_tmp_path_factory", None)
        parent = factory.mktemp("ampcheck") if factory else Path(tempfile.mkdtemp())
    out = parent / f"synthetic-ci-{tag}"
    if not (out / "manifest.json").is_file():
        generate(out, cfg, force=out.exists(), show_progress=False)
    return ParticleDataset.from_dir(out)


# ---------------------------------------------------------------------------- --ampcheck-model
def load_model_factory(spec: str, rootdir: Path) -> tuple[Any, Any]:
    """Import ``module:factory``, call ``factory()`` and return ``(model, data or None)``.

    Raises :class:`pytest.UsageError` naming the factory when it cannot be imported, is not
    callable, fails, or returns something that is not a model.
    """
    import importlib

    from ampcheck.checks import validate_vae
    from ampcheck.errors import AmpcheckError
    from ampcheck.train import TrainConfig

    where = f"--ampcheck-model {spec}"
    module_name, _, attr = spec.partition(":")
    added = str(rootdir) not in sys.path
    if added:
        sys.path.insert(0, str(rootdir))
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise pytest.UsageError(f"{where}: cannot import module {module_name!r} "
                                f"({type(e).__name__}: {e})") from None
    finally:
        if added:
            sys.path.remove(str(rootdir))
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise pytest.UsageError(f"{where}: module {module_name!r} has no attribute "
                                    f"{attr!r}; expected a function that returns a model")
        factory = getattr(factory, part)
    if not callable(factory):
        raise pytest.UsageError(f"{where}: {attr} is a {type(factory).__name__}, not a "
                                "function; expected a function that takes no arguments")
    try:
        out = factory()
    except Exception as e:
        raise pytest.UsageError(f"{where}: {attr}() raised {type(e).__name__}: {e}") from e
    model, data = out if isinstance(out, tuple) and len(out) == 2 else (out, None)
    expected = ("expected a model (a preset name, a TrainConfig, a factory (train_data, seed) "
                "-> VAE, or a VAE with encode and recon_loss), or a tuple (model, data)")
    if model is None:
        raise pytest.UsageError(f"{where}: {attr}() returned None; {expected}")
    factory_like = callable(model) and not any(
        hasattr(model, a) for a in ("encode", "recon_loss", "parameters"))
    if not isinstance(model, str | TrainConfig) and not factory_like:
        try:
            validate_vae(model, f"the model {attr}() returned")
        except AmpcheckError as e:
            raise pytest.UsageError(f"{where}: {e}") from None
    return model, data


def _model_cases(session: AmpcheckSession) -> list[Any]:
    """One :class:`~ampcheck.testing.Case` per check that applies to the factory's model."""
    from ampcheck.checks import CHECKS, DEFAULT_CHECKS
    from ampcheck.errors import AmpcheckError
    from ampcheck.testing import Case

    model, data = load_model_factory(session.settings.model, Path(session.config.rootpath))
    try:
        subject = session.subject(model, data)
    except AmpcheckError as e:
        raise pytest.UsageError(f"--ampcheck-model {session.settings.model}: {e}") from None
    return [Case(subject.name, model, check, data) for check in DEFAULT_CHECKS
            if CHECKS[check].applies_to(subject)]


# ---------------------------------------------------------------------------- fixtures
_SESSION = pytest.StashKey[AmpcheckSession]()
_RECORDS = pytest.StashKey[list]()


def _session(config: pytest.Config) -> AmpcheckSession:
    return config.stash[_SESSION]


class CheckRunner:
    """The ``ampcheck_check`` fixture: runs checks for one test and records them."""

    def __init__(self, session: AmpcheckSession, node: pytest.Item):
        from ampcheck.testing import Case

        self._session, self._node = session, node
        params = getattr(getattr(node, "callspec", None), "params", {})
        self._cases = [p for p in params.values() if isinstance(p, Case)]

    def run(self, model: Any, check: str | None = None, *, data: Any = None,
            expected: str | Iterable[str] | None = None, name: str | None = None):
        """Run ``check`` on ``model`` and fail the test unless the verdict is PASS (skip it,
        with the reason, when the check does not apply: a ``SKIP`` result).

        Args:
            model: anything :func:`ampcheck.checks.check_vae` accepts, or a
                :class:`~ampcheck.testing.Case` (then ``check``, ``data`` and ``name`` come
                from it).
            check: a check name (``ampcheck.checks.CHECKS``).
            data: the data set (default: the session's, ``ampcheck_data``).
            expected: the verdict(s) that pass the test (default ``"PASS"``), e.g. ``"FAIL"``
                for a negative control.
            name: the model's name in results, thresholds and baselines (default: the name
                of the test's case when ``model`` is its model, else derived from the model).

        Returns:
            The :class:`~ampcheck.checks.CheckResult`.
        """
        __tracebackhide__ = True
        from ampcheck.errors import AmpcheckError
        from ampcheck.testing import Case

        if isinstance(model, Case):
            model, check, data, name = model.model, model.check, model.data, model.name
        elif name is None:  # the test's own case (parametrize_with_checks) names its model
            name = next((c.name for c in self._cases if c.model is model), None)
        if check is None:
            raise TypeError("ampcheck_check.run() needs a check name")
        allowed = {"PASS"} if expected is None else (
            {expected} if isinstance(expected, str) else set(expected))
        if not allowed <= {"PASS", "WARN", "FAIL"}:
            raise ValueError(f"expected must be PASS, WARN or FAIL (or several), got {expected!r}")
        try:
            subject, result = self._session.run(model, check, data, name)
        except AmpcheckError as e:
            pytest.fail(f"ampcheck: {e}", pytrace=False)
        settings = self._session.settings
        path = baseline_path(settings.baseline_dir, subject.name, result.check)
        if settings.regen:
            write_baseline(path, result, settings.tolerance, settings.budget)
            status, notes = "written", [f"baseline written to {path}"]
        else:
            status, notes = compare_baseline(path, result, settings.tolerance, settings.budget)
        record = Record(self._node.nodeid, result, status, notes)
        self._session.records.append(record)
        self._node.stash.setdefault(_RECORDS, []).append(record)
        problems = []
        if result.verdict not in allowed:
            problems.append(f"{result.model}: {result.summary()}\n{result.explanation}")
        if status == "drift":
            problems.append("\n".join(notes))
        if problems:
            pytest.fail("\n".join(problems))
        return result


@pytest.fixture(scope="session")
def ampcheck_settings(request: pytest.FixtureRequest) -> AmpcheckSettings:
    """The session's resolved ampcheck configuration."""
    return _session(request.config).settings


@pytest.fixture(scope="session")
def ampcheck_cache(request: pytest.FixtureRequest):
    """The session's :class:`~ampcheck.checks.TrainingCache` (each variant trains once)."""
    return _session(request.config).cache


@pytest.fixture(scope="session")
def ampcheck_data(request: pytest.FixtureRequest):
    """The session's data set (``--ampcheck-data`` / ``data``; default MNIST)."""
    return _session(request.config).data


@pytest.fixture
def ampcheck_check(request: pytest.FixtureRequest) -> CheckRunner:
    """Run a check: ``ampcheck_check.run(model, "shift_invariance")``."""
    return CheckRunner(_session(request.config), request.node)


@pytest.fixture
def ampcheck_case(request: pytest.FixtureRequest):
    """One ``(model, check)`` case of ``--ampcheck-model`` (skips without that option)."""
    case = getattr(request, "param", None)
    if case is None:
        model = _session(request.config).settings.model
        pytest.skip(f"no check applies to the model of --ampcheck-model {model}" if model
                    else "no model to check: pass --ampcheck-model module:factory")
    return case


# ---------------------------------------------------------------------------- hooks
def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for name, about in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {about}")
    config.stash[_SESSION] = AmpcheckSession(config, resolve_settings(config))


def pytest_report_header(config: pytest.Config) -> str | None:
    s = _session(config).settings
    if not s.configured:
        return None
    return (f"ampcheck: budget {s.budget}, seeds {list(s.seed_list)}, device {s.device}, "
            f"data {s.data}" + (f", model {s.model}" if s.model else "")
            + (", regenerating baselines" if s.regen else ""))


def pytest_sessionstart(session: pytest.Session) -> None:
    state = _session(session.config)
    if state.settings.model is not None:
        state.cases = _model_cases(state)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "ampcheck_case" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        names = names.replace(" ", "").split(",") if isinstance(names, str) else names
        if "ampcheck_case" in names:
            return  # parametrized by the user
    cases = _session(metafunc.config).cases
    if cases:
        metafunc.parametrize("ampcheck_case", cases, ids=[c.id for c in cases], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in gpu:
        item.add_marker(skip)


def _section(records: list[Record]) -> str:
    lines = []
    for rec in records:
        r, t = rec.result, rec.result.threshold
        if t is None:  # a SKIP: its reason only
            lines.append(f"{r.check} on {r.model}: {r.verdict}\n  {r.explanation}")
            continue
        op = ">=" if t.higher_is_better else "<="
        flags = f" [{', '.join(r.flags)}]" if r.flags else ""
        lines.append(f"{r.check} on {r.model}: {r.verdict}{flags} (seeds "
                     f"{', '.join(map(str, r.seeds))})")
        lines.append(f"  threshold: {t.metric} {op} {t.value:g}")
        width = max(len(k) for k in r.metrics)
        for k, m in r.metrics.items():
            mark = "  <- governs" if k == t.metric else ""
            lines.append(f"  {k:<{width}}  {m}{mark}")
        lines.append(f"  {r.explanation}")
        lines.extend(f"  {note}" for note in rec.notes)
    return "\n".join(lines)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    records = item.stash.get(_RECORDS, None)
    if call.when == "call" and records:
        outcome.get_result().sections.append(("ampcheck metrics", _section(records)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(_SESSION, None)
    if state is None or state.settings.report is None:
        return
    results = [{**rec.result.to_dict(), "test": rec.nodeid, "baseline": rec.baseline}
               for rec in state.records]
    settings = state.settings.to_dict()
    if state._data is not None:
        settings["data_set"] = repr(state._data)
    write_json_atomic(state.settings.report, {"results": results, "settings": settings})


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(_SESSION, None)
    if state is None or not state.records:
        return
    rows = [("check", "model", "verdict", "metric", "value", "threshold", "baseline")]
    for rec in state.records:
        r, t = rec.result, rec.result.threshold
        if t is None:  # a SKIP
            rows.append((r.check, r.model, r.verdict, "-", "-", "-", rec.baseline))
            continue
        rows.append((r.check, r.model, r.verdict + ("*" if r.flags else ""), t.metric,
                     str(r.governing), f"{'>=' if t.higher_is_better else '<='} {t.value:g}",
                     rec.baseline))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    tr = terminalreporter
    tr.write_sep("=", "ampcheck summary")
    for row in rows:
        tr.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if any(rec.result.flags for rec in state.records):
        tr.write_line("* flagged (see the test's ampcheck metrics section)")
    if state.settings.report is not None:
        tr.write_line(f"ampcheck report written to {state.settings.report}")
