"""The report document: ``report.json`` and its array files, built, written, read and validated.

A report directory holds

* ``report.json`` (:func:`report_document`): ``{"profile": {key: verdict}, "checks":
  [CheckResult.to_dict()...], "dataset": {...}, "runs": {...}, "arrays": {key: sha256}}``.
  ``runs["trained"]`` maps each trained run's label to its config, seconds per epoch, images
  per second and loss history; a run made elsewhere is described under its adapter's key
  (``runs["cryodrgn"]``: :func:`ampcheck.adapters.cryodrgn.describe_run`). The pytest
  plugin's ``--ampcheck-report`` is the same document without array files (``"arrays": {}``),
  its checks carrying the test that ran them and their baseline status;
* ``arrays/<key>.npz``: what each check kept for its figures (:attr:`CheckResult.arrays`); a
  result's key is its check's name, or ``check[model]`` for a second model's result of the
  same check (:func:`report_keys`);
* ``report.html``: the page :mod:`ampcheck.render` draws from the two above (``render`` of
  :func:`write_report`, or ``ampcheck report DIR`` at any time).

A report is replaced as a whole, in one step (built beside the directory, then swapped in): an
interrupted or failed write leaves the previous report intact, never a mix of two. Reading a
report imports neither torch nor matplotlib, so that tools and the pytest plugin can read one
without the training loop or the plotting.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .files import atomic_path, read_json, write_json_atomic
from .outdir import staged
from .results import CheckResult, jsonable, result_keys

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
ARRAYS = "arrays"
REPORT_PARTS = (REPORT_JSON, REPORT_HTML, ARRAYS)  # what a new report replaces in its folder


def write_report(out: str | Path, results: Sequence[CheckResult], dataset: dict[str, Any],
                 runs: dict[str, Any], *, render: Callable[[Path], Any] | None = None,
                 over_epochs: dict[str, Any] | None = None) -> Path:
    """Write ``report.json`` and ``arrays/*.npz`` to ``out``, and ``render(folder)`` the
    page from them (:func:`ampcheck.render.render_html`; None: no page); return the path of
    ``report.json``.

    The report is built in a staging folder beside ``out`` and replaces the previous one in one
    step (:func:`ampcheck.outdir.staged`): a failure or a kill leaves the old report whole. Other
    entries of ``out`` (a data set, the user's files) are kept. ``report.json`` records the
    SHA-256 of every array file, so that :func:`load_report` can refuse a mix of two reports.
    ``over_epochs``: the profile over epochs (:func:`ampcheck.epochs.over_epochs_document`),
    written under that top-level key.
    """
    out = Path(out)
    keys = report_keys([(r.check, r.model) for r in results])
    with staged(out, REPORT_PARTS) as stage:
        (stage / ARRAYS).mkdir()
        digests = {}
        for key, r in zip(keys, results, strict=True):
            if r.arrays:
                path = stage / ARRAYS / f"{key}.npz"
                with atomic_path(path) as tmp, open(tmp, "wb") as f:
                    np.savez_compressed(f, **{k: np.asarray(v) for k, v in r.arrays.items()})
                digests[key] = _sha256(path)
        write_json_atomic(stage / REPORT_JSON,
                          report_document(results, dataset, runs, arrays=digests,
                                          over_epochs=over_epochs))
        if render is not None:
            render(stage)
    return out / REPORT_JSON


#: The keys of a report document, each with the type its value must have.
REPORT_KEYS: dict[str, type] = {"profile": dict, "checks": list, "dataset": dict, "runs": dict,
                                "arrays": dict}
#: The keys only some reports have (``check --epoch all``, a list or a stride), and their types.
OPTIONAL_KEYS: dict[str, type] = {"over_epochs": dict}


def report_keys(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """A unique key per ``(check, model)``, in order: :func:`result_keys`, and ``#2``, ``#3``
    ... after a key seen before (a pytest session may run one check on one model in several
    tests, say with other check options)."""
    keys, seen = [], set()
    for key in result_keys(list(pairs)):
        unique, n = key, 1
        while unique in seen:
            n += 1
            unique = f"{key}#{n}"
        seen.add(unique)
        keys.append(unique)
    return keys


def report_document(checks: Sequence[CheckResult | dict[str, Any]], dataset: dict[str, Any],
                    runs: dict[str, Any], *, arrays: dict[str, str] | None = None,
                    over_epochs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``report.json`` document: ``{"profile", "checks", "dataset", "runs", "arrays"}``,
    and ``over_epochs`` when given (the profile over training epochs:
    :func:`ampcheck.epochs.over_epochs_document`).

    Args:
        checks: results, as :class:`CheckResult` or as their ``to_dict()`` (which may carry
            more keys: the plugin adds ``test``, ``baseline``, ``baseline_notes``,
            ``options``); ``profile`` maps each one's key (:func:`report_keys`) to its verdict.
        dataset: what the data set was (free-form facts: ``n``, ``D``, ``apix``, a path).
        runs: how the models were trained: ``budget``, ``seeds``, ``trained`` ({label: run});
            a run's ``seconds`` is its training time.
        arrays: each array file's SHA-256 by key (None or empty: a report without arrays,
            such as the pytest plugin's).
    """
    dicts = [c.to_dict() if isinstance(c, CheckResult) else dict(c) for c in checks]
    keys = report_keys([(str(c.get("check")), str(c.get("model"))) for c in dicts])
    doc = {"profile": {k: c.get("verdict") for k, c in zip(keys, dicts, strict=True)},
           "checks": dicts, "dataset": dict(dataset), "runs": dict(runs),
           "arrays": dict(arrays or {})}
    if over_epochs is not None:
        doc["over_epochs"] = jsonable(over_epochs)
    return doc


def read_report_json(path: str | Path) -> dict[str, Any]:
    """The report document at ``path`` (a ``report.json``, or the plugin's
    ``--ampcheck-report``), validated: an :class:`InputError` that names the file and what is
    wrong with it otherwise. ``dataset``, ``runs`` and ``arrays`` may be absent (older
    reports)."""
    path = Path(path)
    report = read_json(path, "no such report (run `ampcheck run` or `ampcheck check` with "
                             "--out, or pytest with --ampcheck-report, first)", "valid JSON")
    if not isinstance(report, dict) or not {"profile", "checks"} <= set(report):
        raise InputError(f"{path} is not an ampcheck report (expected the keys 'profile' and "
                         "'checks')")
    for key, kind in {**REPORT_KEYS, **OPTIONAL_KEYS}.items():
        if key in report and report[key] is not None and not isinstance(report[key], kind):
            raise InputError(f"{path}: {key!r} must be a JSON "
                             f"{'object' if kind is dict else 'array'}, got "
                             f"{type(report[key]).__name__}")
    return report


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_report(out: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """``(report, arrays)``: the parsed ``report.json`` of ``out`` and ``{check: {name:
    array}}`` from ``out/arrays`` (checks without arrays are absent).

    ``out`` is a report directory, or a report file (:func:`read_report_json`): a file named
    otherwise than ``report.json`` (the plugin's ``--ampcheck-report PATH``) has no arrays,
    and one that lists array files is refused (give its directory).

    A directory whose array files are not exactly those ``report.json`` lists, with the same
    bytes, mixes two reports and is refused (reports written before the list existed are read
    as they are).
    """
    out = Path(out)
    if out.is_file() and out.name != REPORT_JSON:
        report = read_report_json(out)
        if report.get("arrays"):
            raise InputError(f"{out} lists array files, which live in a report directory "
                             f"beside its {REPORT_JSON}; give that directory")
        return report, {}
    if out.is_file():
        out = out.parent
    report = read_report_json(out / REPORT_JSON)
    path = out / REPORT_JSON
    files = {p.stem: p for p in sorted((out / ARRAYS).glob("*.npz"))}
    listed = report.get("arrays")
    if listed is not None:
        if not isinstance(listed, dict):
            raise InputError(f"{path}: 'arrays' must map each array file to its SHA-256")
        problems = [f"{ARRAYS}/{k}.npz is not listed in it"
                    for k in sorted(set(files) - set(listed))]
        problems += [f"{ARRAYS}/{k}.npz, which it lists, is missing" if k not in files else
                     f"{ARRAYS}/{k}.npz differs from the file it lists (damaged, or from another "
                     "report)" for k in sorted(listed)
                     if k not in files or _sha256(files[k]) != listed[k]]
        if problems:
            raise InputError(f"{out} does not hold one whole report: {problems[0]} "
                             f"({len(problems)} such problem(s) against its {REPORT_JSON}); "
                             "write it again with --force")
    arrays = {}
    for key, npz in files.items():
        try:
            with np.load(npz, allow_pickle=False) as f:
                arrays[key] = {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise InputError(f"{npz} is not a readable .npz file ({err})") from None
    return report, arrays
