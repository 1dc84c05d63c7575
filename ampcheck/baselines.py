"""Regression baselines: a check's metrics stored once, compared on every later run.

A baseline is ``<directory>/<model>/<check>.json``::

    {"check": "shift_invariance", "model": "my_vae", "budget": "smoke", "seeds": [0],
     "options": {"shift_transforms": ["roll:1", "roll:3"]},
     "metrics": {"displacement": 0.83, ...},
     "tolerance": {"displacement": {"rtol": 0.1, "atol": 0.01}, ...}}

A metric has drifted when ``|new - old| > atol + rtol * |old|`` (a metric that was finite and
is now NaN, or the reverse, or that is gone, has drifted too). The tolerance is the one
configured now (:class:`Tolerance`); the file records the one it was written with, for people
reading a diff. A baseline made with another budget, other seeds or other check options
(``options``; absent in older files: none) measures something else and is not compared.
Files are written atomically (a temporary file, then a rename).

Importing this module does not import torch (the pytest plugin loads it).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import write_json_atomic

__all__ = ["DEFAULT_ATOL", "DEFAULT_RTOL", "Tolerance", "baseline_path", "compare_baseline",
           "plain_options", "write_baseline", "write_json_atomic"]

DEFAULT_RTOL, DEFAULT_ATOL = 0.1, 0.01


@dataclass(frozen=True)
class Tolerance:
    """How far a metric may drift from its baseline: ``atol + rtol * |old|``.

    ``per_key`` maps ``"check.metric"`` to its own ``(rtol, atol)``.
    """

    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    per_key: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def of(self, check: str, metric: str) -> tuple[float, float]:
        """``(rtol, atol)`` of ``check``'s ``metric``."""
        return self.per_key.get(f"{check}.{metric}", (self.rtol, self.atol))

    def to_dict(self) -> dict[str, Any]:
        return {"rtol": self.rtol, "atol": self.atol,
                **{k: {"rtol": r, "atol": a} for k, (r, a) in self.per_key.items()}}


def baseline_path(directory: str | os.PathLike, model: str, check: str) -> Path:
    """``directory/<model, made safe for a file name>/<check>.json``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model).strip("._") or "model"
    return Path(directory) / safe / f"{check}.json"


def plain_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check options as JSON values (a value JSON cannot hold, such as a data set, as its
    ``repr``), so that a stored stamp compares equal to the same options given again."""
    return json.loads(json.dumps(dict(options or {}), default=repr, sort_keys=True))


def _value(metric: Any) -> float | None:
    return float(metric.value) if math.isfinite(metric.value) else None


def write_baseline(path: Path, result: Any, tolerance: Tolerance, budget: str,
                   options: Mapping[str, Any] | None = None) -> None:
    """Store ``result``'s (a :class:`~ampcheck.checks.CheckResult`) metrics at ``path``, with
    the budget, seeds and check ``options`` it was made with."""
    tol = {k: dict(zip(("rtol", "atol"), tolerance.of(result.check, k), strict=True))
           for k in result.metrics}
    write_json_atomic(path, {"check": result.check, "model": result.model, "budget": budget,
                             "seeds": list(result.seeds), "options": plain_options(options),
                             "metrics": {k: _value(m) for k, m in result.metrics.items()},
                             "tolerance": tol})


def compare_baseline(path: Path, result: Any, tolerance: Tolerance, budget: str,
                     options: Mapping[str, Any] | None = None) -> tuple[str, list[str]]:
    """``(status, notes)`` of ``result`` against the baseline at ``path``.

    ``status`` is ``ok``, ``drift`` (the notes list each drifted metric: old, new and the
    tolerance), ``new`` (no baseline yet) or ``skipped`` (made with another budget, seeds or
    check options).
    An unreadable baseline counts as drift: a broken file must not pass silently. A baseline
    that stores the governing metric a second time under its transform's name
    (``displacement[roll(0,1)]`` beside ``displacement``, as older files of the invariance
    checks do) is compared on the governing metric alone.
    """
    if not path.is_file():
        return "new", [f"no baseline at {path} (run with --ampcheck-regen to write one)"]
    try:
        old = json.loads(path.read_text())
        before_all = {str(k): v for k, v in old["metrics"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return "drift", [f"cannot read the baseline {path} ({type(e).__name__}: {e})"]
    now_stamp = {"budget": budget, "seeds": list(result.seeds),
                 "options": plain_options(options)}
    made = {k: old.get(k, {} if k == "options" else v) for k, v in now_stamp.items()}
    if made != now_stamp:
        return "skipped", [f"baseline {path} was made with {made}, this run is {now_stamp}: "
                           "not compared"]
    governs = getattr(result.threshold, "metric", None)
    transform = (result.details or {}).get("governing_transform")
    twice = f"{governs}[{transform}]" if governs and transform else None
    drift = []
    for name, before in before_all.items():
        if name == twice and name not in result.metrics:
            continue  # the governing metric, compared under its own name
        metric = result.metrics.get(name)
        now = None if metric is None else _value(metric)
        if metric is None:
            drift.append(f"  {name}: {before} -> missing from this run's metrics")
            continue
        if before is not None and (isinstance(before, bool)
                                   or not isinstance(before, int | float)):
            drift.append(f"  {name}: the baseline holds {before!r}, not a number")
            continue
        if before is None or now is None:
            if (before is None) != (now is None):
                drift.append(f"  {name}: {before} -> {now} (not finite)")
            continue
        rtol, atol = tolerance.of(result.check, name)
        allowed = atol + rtol * abs(float(before))
        change = abs(now - float(before))
        if not change <= allowed:
            drift.append(f"  {name}: {float(before):.6g} -> {now:.6g} (|change| {change:.3g} > "
                         f"tolerance {allowed:.3g} = {atol:g} + {rtol:g} * |old|)")
    if drift:
        return "drift", [f"metrics drifted from the baseline {path}:", *drift]
    return "ok", [f"within tolerance of the baseline {path} ({len(before_all)} metrics)"]
