"""ampcheck's pytest plugin (entry point ``pytest11``): markers, options, fixtures, reports.

Hooks and thin fixtures only: the options and ``[tool.ampcheck]`` are read in
``ampcheck._plugin_config``, the session state and the check runner live in
``ampcheck._plugin_session``, the records, summary and report in ``ampcheck._plugin_records``.
Everything heavy (torch, the checks, the data) is imported when a test first asks for it, so
that loading the plugin costs nothing. The plugin is a guest in every project that installs
ampcheck: it acts on its own markers (:data:`MARKERS`) only, touches no test it did not make,
and carries its results on the test reports (``ampcheck_records``), so that pytest-xdist's
controller and junitxml see every worker's.

The reference for users (markers, fixtures, options, ``[tool.ampcheck]`` keys and their
precedence, baselines, the report) is the README's "For plugin users" section.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ._plugin_config import AmpcheckSettings, add_options, check_options, resolve_settings
from ._plugin_records import (
    PROFILES,
    PROFILES_SENT,
    RECORDS,
    SENT,
    ReportMerger,
    profile_section,
    section,
    session_report,
    write_summary,
)
from ._plugin_records import REPORT_CHECK_FIELDS as REPORT_CHECK_FIELDS
from ._plugin_session import (
    DATA_CACHE_KEY,
    OPTIONS_MARKER,
    SESSION,
    AmpcheckSession,
    CheckRunner,
    EpochRunner,
    data_cache_dir,
    item_cases,
    load_model_factory,
    model_cases,
    session_kind,
    session_of,
)

__all__ = ["AmpcheckSettings", "CheckRunner", "EpochRunner", "load_model_factory"]

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
def ampcheck_epochs(request: pytest.FixtureRequest) -> EpochRunner:
    """Measure a profile over epochs: ``profile = ampcheck_epochs(models, data,
    train_indices=...)`` (:func:`ampcheck.check_epochs` with the session's settings)."""
    return EpochRunner(session_of(request.config), request.node)


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
              and {"ampcheck_check", "ampcheck_epochs"} & set(getattr(item, "fixturenames", ()))
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
    profiles = item.stash.get(PROFILES, [])
    # carried by the report, so that xdist's controller gets them
    for made, sent_key, attr in ((records, SENT, "ampcheck_records"),
                                 (profiles, PROFILES_SENT, "ampcheck_profiles")):
        sent = item.stash.get(sent_key, 0)
        if made[sent:]:
            setattr(report, attr, [dict(r) for r in made[sent:]])
            item.stash[sent_key] = len(made)
    if state is not None:
        state.note_trained()  # what a fixture trained outside a check
        if state.pending_training:
            report.ampcheck_training = [{**t, "test": item.nodeid, "worker": state.worker}
                                        for t in state.pending_training]
            state.pending_training.clear()
    if call.when != "call":
        return
    if profiles:
        report.sections.append(("ampcheck over epochs", profile_section(profiles)))
    if not records:
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
    if state is None or not (state.records or state.training or state.profiles):
        return
    write_summary(terminalreporter, state)
