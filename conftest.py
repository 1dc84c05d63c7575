"""Repository-only test setup: hypothesis profiles, pytester, the GPU skip, the optional
extras' tests, the shared ``ci`` and ``standard`` data sets and ``ampcheck_log``
(ampcheck's log records).

This repository's ``slow``, ``gpu`` and ``extras`` markers are registered in ``pyproject.toml``
(``[tool.pytest.ini_options] markers``) and handled here, not by ampcheck's pytest plugin:
the plugin is a guest in every project that installs ampcheck and acts on its own markers
only (``cryoem``, ``mnist``, ``ampcheck_options``) and the ``--ampcheck-*`` options.
"""

from __future__ import annotations

import logging
import os

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

# "ci" keeps property tests quick on 2 cores; "full" explores more (HYPOTHESIS_PROFILE=full).
settings.register_profile("ci", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("full", max_examples=400, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def ci_set(tmp_path_factory):
    """The embedded ``ci`` synthetic data set (2,000 images of 64 px), generated once."""
    from ampcheck.data.particles import ParticleDataset
    from ampcheck.data.synthetic import SynthConfig, generate

    out = generate(tmp_path_factory.mktemp("ci") / "ci", SynthConfig.preset("ci"),
                   show_progress=False).out
    return ParticleDataset.from_dir(out)


@pytest.fixture(scope="session")
def standard_set(tmp_path_factory):
    """The ``standard`` synthetic data set (1,250 images of 24 px, ``ampcheck run``'s),
    generated once: a ninth of the ``ci`` set's cost per image in a model."""
    from ampcheck.data.particles import ParticleDataset
    from ampcheck.data.synthetic import SynthConfig, generate

    out = generate(tmp_path_factory.mktemp("standard") / "standard",
                   SynthConfig.preset("standard"), show_progress=False).out
    return ParticleDataset.from_dir(out)


@pytest.fixture
def ampcheck_log(caplog):
    """``caplog`` at INFO for the ``ampcheck`` loggers, switched back on first: a test that
    imported cryodrgn directly in this process ran its ``logging.config.dictConfig``, which
    disables every logger that existed then (the adapter's own import keeps them on)."""
    for name, lg in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("ampcheck") and isinstance(lg, logging.Logger):
            lg.disabled = False
    with caplog.at_level(logging.INFO, logger="ampcheck"):
        yield caplog


def pytest_collection_modifyitems(config, items):
    """Skip this repository's ``gpu`` tests, with the reason, where CUDA is absent (torch is
    imported only when such a test was collected)."""
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in gpu:
        item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that skips for want of cryodrgn must be marked ``extras`` (CI runs those once
    the extra is installed); with ``AMPCHECK_REQUIRE_EXTRAS`` set (that CI step), a test
    marked ``extras`` that skipped is a failure: its optional package was meant to be there."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped:
        return
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
    marked = item.get_closest_marker("extras") is not None
    if marked and os.environ.get("AMPCHECK_REQUIRE_EXTRAS"):
        report.outcome = "failed"
        report.longrepr = f"AMPCHECK_REQUIRE_EXTRAS is set, but this test skipped: {reason}"
    elif not marked and "cryodrgn" in reason.lower():
        report.outcome = "failed"
        report.longrepr = (f"skipped for want of cryodrgn ({reason}) but not marked "
                           "@pytest.mark.extras, so CI would never run it")
