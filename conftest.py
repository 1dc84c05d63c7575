"""Repository-only test setup: hypothesis profiles, pytester and the shared ``ci`` data set.

Markers, the GPU skip and the ``--ampcheck-*`` options come from ampcheck's own pytest plugin
(``ampcheck/plugin.py``, registered through the ``pytest11`` entry point).
"""

from __future__ import annotations

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
