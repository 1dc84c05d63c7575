"""Repository-only test setup: hypothesis profiles and pytester.

Markers, the GPU skip and the ``--ampcheck-*`` options come from ampcheck's own pytest plugin
(``ampcheck/plugin.py``, registered through the ``pytest11`` entry point).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

# "ci" keeps property tests quick on 2 cores; "full" explores more (HYPOTHESIS_PROFILE=full).
settings.register_profile("ci", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("full", max_examples=400, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
