"""ampcheck's pytest plugin (entry point ``pytest11``): markers, options, fixtures, reports.

Hooks and thin fixtures only (the options and ``[tool.ampcheck]`` are read in
``ampcheck._plugin_config``, the session state and the check runner live in
``ampcheck._plugin_session``, the records, summary and report in ``ampcheck._plugin_records``);
everything heavy (torch, the checks, the data) is imported when a test first asks for it, so
that loading the plugin costs nothing.

The plugin is a guest in every project that installs ampcheck: it registers and acts on its
own markers only, ``cryoem`` and ``mnist`` (the tests ``parametrize_with_checks`` and
``--ampcheck-model`` generate carry the marker of their data kind, so ``pytest -m cryoem``
selects them) and ``ampcheck_options(**options)`` (check options for the checks a test
runs), and touches no test it did not make.

Fixtures:

* ``ampcheck_check``: ``ampcheck_check.run(model, check, *, data=None, expected=None,
  options=None)`` runs one check with the session's settings and cache, records it (test
  report section "ampcheck metrics", junitxml properties, terminal summary,
  ``--ampcheck-report``), compares it with its stored baseline and fails the test unless the
  verdict is PASS (or ``expected``) and no metric drifted; a check that does not apply to
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
    [tool.ampcheck.options]     # check options (ampcheck.checks.OPTIONS)
    shift_transforms = ["roll:1", "roll:3"]
    [tool.ampcheck.models."my_vae".thresholds]
    shift_invariance = 0.5
    [tool.ampcheck.models."my_vae".options]
    rotation_transforms = ["rot90:1", "rot90:2"]
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
* check options: ``ampcheck_check.run(options=...)`` > the test's ``ampcheck_options``
  marker > ``parametrize_with_checks(options=...)`` > ``[tool.ampcheck.models."<model>".
  options]`` > ``[tool.ampcheck] options`` > the check's defaults;
* baseline tolerance: a ``"check.metric"`` key > ``rtol``/``atol`` > the defaults (0.1, 0.01).

Unknown keys, thresholds, check options and check names are usage errors. So is a model name
under ``[tool.ampcheck.models]`` that no collected case (``parametrize_with_checks``,
``--ampcheck-model``) has; that is decided when collection ends, and only when every ampcheck
test collected is such a case and no path narrowed the collection: a test that calls
``ampcheck_check.run`` on a model of its own names it only when it runs, so then the terminal
summary lists the configured models that no check of the session used instead.

Baselines: ``<baseline_dir>/<model>/<check>.json`` holds the metrics of the last
``--ampcheck-regen`` run. Without that option a test fails when a metric drifts beyond
``atol + rtol * |old|`` (the configured tolerance; the file records the one it was written
with), whatever the verdict: an expected failure (xfail) whose metrics drifted is reported as
failed, not xfailed, since a regression check must see the change; a baseline made with
another budget, seeds or check options is not compared, and a missing one is reported, not
failed.

Results travel on the test reports (the attribute ``ampcheck_records``, plain JSON values),
so pytest-xdist's controller sees every worker's: it alone prints the summary and writes
``--ampcheck-report`` (the ``report.json`` schema of :func:`ampcheck.report.report_document`,
without arrays). Each check adds the junitxml properties ``ampcheck.<model>.<check>.<field>``
(verdict, metric, value, interval, threshold, baseline). Training is timed apart: each model
trained in the session (a factory's call per seed, or a run ampcheck trains) is one line of
the summary and one ``runs.trained`` entry of the report, charged to the test that first
needed it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ._plugin_config import AmpcheckSettings, add_options, check_options, resolve_settings
from ._plugin_records import RECORDS, SENT, ReportMerger, section, session_report, write_summary
from ._plugin_records import REPORT_CHECK_FIELDS as REPORT_CHECK_FIELDS
from ._plugin_session import (
    DATA_CACHE_KEY,
    OPTIONS_MARKER,
    SESSION,
    AmpcheckSession,
    CheckRunner,
    data_cache_dir,
    item_cases,
    load_model_factory,
    model_cases,
    session_kind,
    session_of,
)

__all__ = ["AmpcheckSettings", "CheckRunner", "load_model_factory"]

MARKERS = {
    "cryoem": "cryo-EM amortization checks (ampcheck marks the tests it generates on "
              "particle data)",
    "mnist": "MNIST amortization checks (ampcheck marks the tests it generates on digits)",
    f"{OPTIONS_MARKER}(**options)": "check options (ampcheck.checks.OPTIONS) for the "
                                    "ampcheck checks this test runs",
}


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def ampcheck_settings(request: pytest.FixtureRequest) -> AmpcheckSettings:
    """The session's resolved ampcheck configuration."""
    return session_of(request.config).settings


@pytest.fixture(scope="session")
def ampcheck_cache(request: pytest.FixtureRequest):
    """The session's :class:`~ampcheck.checks.TrainingCache` (each variant trains once)."""
    return session_of(request.config).cache


@pytest.fixture(scope="session")
def ampcheck_data(request: pytest.FixtureRequest):
    """The session's data set (``--ampcheck-data`` / ``data``; default MNIST)."""
    return session_of(request.config).data


@pytest.fixture
def ampcheck_check(request: pytest.FixtureRequest) -> CheckRunner:
    """Run a check: ``ampcheck_check.run(model, "shift_invariance")``."""
    return CheckRunner(session_of(request.config), request.node)


@pytest.fixture
def ampcheck_case(request: pytest.FixtureRequest):
    """One ``(model, check)`` case of ``--ampcheck-model`` (skips without that option)."""
    case = getattr(request, "param", None)
    if case is None:
        model = session_of(request.config).settings.model
        pytest.skip(f"no check applies to the model of --ampcheck-model {model}" if model
                    else "no model to check: pass --ampcheck-model module:factory")
    return case


# ---------------------------------------------------------------------------- hooks
def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for name, about in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {about}")
    state = AmpcheckSession(config, resolve_settings(config))
    config.stash[SESSION] = state
    config.pluginmanager.register(ReportMerger(state), "ampcheck-report-merger")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """pytest-xdist's controller: without pytest's cache (which they share anyway) its
    workers share its temporary data cache, so that they make the synthetic data set once."""
    if getattr(node.config, "cache", None) is None:
        node.workerinput[DATA_CACHE_KEY] = str(data_cache_dir(node.config))


def pytest_report_header(config: pytest.Config) -> str | None:
    s = session_of(config).settings
    if not s.configured:
        return None
    return (f"ampcheck: budget {s.budget}, seeds {list(s.seed_list)}, device {s.device}, "
            f"data {s.data}" + (f", model {s.model}" if s.model else "")
            + (", regenerating baselines" if s.regen else "")
            + (" (smoke: a test suite's budget, minutes on a CPU, whose cryo-EM latents are "
               "not informative yet; --ampcheck-budget standard for verdicts to act on)"
               if s.budget == "smoke" else ""))


def pytest_sessionstart(session: pytest.Session) -> None:
    state = session_of(session.config)
    state.started = time.perf_counter()
    if state.settings.model is not None:
        state.cases = model_cases(state)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "ampcheck_case" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        names = names.replace(" ", "").split(",") if isinstance(names, str) else names
        if "ampcheck_case" in names:
            return  # parametrized by the user
    cases = session_of(metafunc.config).cases
    if cases:
        metafunc.parametrize("ampcheck_case", cases, ids=[c.id for c in cases], indirect=True)


def _narrowed(config: pytest.Config) -> bool:
    """Whether the command line chose what to collect (paths, node ids, ``--lf``,
    ``--sw``): then cases defined elsewhere are not collected, and so not known."""
    return (config.args_source == pytest.Config.ArgsSource.ARGS
            or bool(getattr(config.option, "lf", False))
            or bool(getattr(config.option, "stepwise", False)))


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect: they select by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each ampcheck case with its data kind, check the ``ampcheck_options`` markers,
    and refuse ``[tool.ampcheck.models]`` names that no collected case has."""
    state = session_of(config)
    settings = state.settings
    cased = [item for item in items if item_cases(item)]
    for item in cased:
        if not any(item.get_closest_marker(k) for k in ("cryoem", "mnist")):
            kind = next((c.kind for c in item_cases(item) if c.kind), None)
            item.add_marker(kind or session_kind(settings))
    for item in items:
        for mark in item.iter_markers(OPTIONS_MARKER):
            where = f"{item.nodeid}: @pytest.mark.{OPTIONS_MARKER}"
            try:
                if mark.args:
                    raise pytest.UsageError(f"{where} takes options as keywords, e.g. "
                                            "shift_transforms=['roll:1']; got the positional "
                                            f"argument(s) {mark.args!r}")
                check_options(mark.kwargs, where)
            except pytest.UsageError as e:
                _usage_error(config, items, str(e))
                return
    configured = settings.models
    if not configured:
        return
    known = {c.name for c in state.cases} | {c.name for item in cased for c in item_cases(item)}
    unknown = sorted(configured - known)
    direct = [item for item in items if item not in cased
              and "ampcheck_check" in getattr(item, "fixturenames", ())
              and "ampcheck_case" not in getattr(item, "fixturenames", ())]
    if unknown and not direct and not _narrowed(config):
        path = Path(config.rootpath) / "pyproject.toml"
        _usage_error(config, items, f"{path} [tool.ampcheck] models: unknown model "
                                    f"{unknown[0]!r}; expected one of the models of the "
                                    f"collected checks: {', '.join(sorted(known)) or '(none)'}")


def _usage_error(config: pytest.Config, items: list[pytest.Item], message: str) -> None:
    """Stop the run at collection with ``message``: a usage error; on a pytest-xdist worker
    (where an exception at collection would crash the worker) a collection error, which the
    controller shows and stops on, and no test runs."""
    if not hasattr(config, "workerinput"):
        raise pytest.UsageError(message)
    config.hook.pytest_collectreport(report=pytest.CollectReport(
        "pyproject.toml", "failed", f"ERROR: {message}", []))
    items.clear()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # outermost: after the xfail handling
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    state = item.config.stash.get(SESSION, None)
    records = item.stash.get(RECORDS, [])
    sent = item.stash.get(SENT, 0)
    if records[sent:]:  # carried by the report, so that xdist's controller gets them
        report.ampcheck_records = [dict(r) for r in records[sent:]]
        item.stash[SENT] = len(records)
    if state is not None:
        state.note_trained()  # what a fixture trained outside a check
        if state.pending_training:
            report.ampcheck_training = [{**t, "test": item.nodeid, "worker": state.worker}
                                        for t in state.pending_training]
            state.pending_training.clear()
    if call.when != "call" or not records:
        return
    report.sections.append(("ampcheck metrics", section(records)))
    drifted = [r for r in records if r["baseline"] == "drift"]
    if drifted and hasattr(report, "wasxfail") and not report.failed:
        # an expected failure (or a non-strict xpass) must not hide a regression
        report.outcome = "failed"
        reason = report.wasxfail
        del report.wasxfail
        if report.longrepr is None:
            report.longrepr = "\n".join(n for r in drifted for n in r["notes"])
        report.sections.append(("ampcheck drift", f"expected to fail ({reason}), but its "
                                "metrics drifted from the baseline: failed"))


def _summary_owner(config: pytest.Config) -> AmpcheckSession | None:
    """The session state where the summary and the report belong: not on an xdist worker
    (its records travel to the controller on the test reports)."""
    if hasattr(config, "workerinput"):
        return None
    return config.stash.get(SESSION, None)


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = _summary_owner(session.config)
    if state is None or state.settings.report is None:
        return
    from .files import write_json_atomic

    write_json_atomic(state.settings.report, session_report(state))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = _summary_owner(config)
    if state is None or not (state.records or state.training):
        return
    write_summary(terminalreporter, state)
