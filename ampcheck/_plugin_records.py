"""The pytest plugin's records: what each check a test runs leaves, and where it goes.

A record is one check's result with its test, baseline status and notes, check options and
data set, all plain JSON values (:func:`add_record`). It is kept on its test item
(:data:`RECORDS`) and carried on the test's reports (the attribute ``ampcheck_records``, set
by the plugin's ``pytest_runtest_makereport``), so that pytest-xdist's controller gets every
worker's; :class:`ReportMerger` merges them, and the training runs the reports carry
(``ampcheck_training``), into the session of the process that prints the summary. From the
records come the test's "ampcheck metrics" section (:func:`section`), its junitxml properties
(:func:`junit_properties`), the terminal summary (:func:`write_summary`) and the
``--ampcheck-report`` document (:func:`session_report`). A profile over epochs (the
``ampcheck_epochs`` fixture) is recorded and carried the same way (:func:`add_profile`, the
attribute ``ampcheck_profiles``): its test's "ampcheck over epochs" section, junitxml
properties, a summary line and the report's ``runs.over_epochs``.

Torch-free, and matplotlib-free until a report is written: :mod:`ampcheck.report` is imported
by :func:`session_report` only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import pytest

from ._plugin_config import AmpcheckSettings
from .baselines import plain_options
from .kinds import data_kind

#: What the plugin's report adds to each ``CheckResult.to_dict()`` in ``checks``.
REPORT_CHECK_FIELDS = ("test", "baseline", "baseline_notes", "options")
RECORDS = pytest.StashKey[list]()  # this test's records (dicts), in the order they ran
SENT = pytest.StashKey[int]()  # how many of them a report already carries
PROFILES = pytest.StashKey[list]()  # this test's profiles over epochs (dicts)
PROFILES_SENT = pytest.StashKey[int]()


class RecordBook(Protocol):
    """What this module reads and merges into: the session's records, training runs and
    collection order (``ampcheck._plugin_session.AmpcheckSession`` is one). A protocol, so
    that the records never import the session that adds them."""

    settings: AmpcheckSettings
    records: list[dict[str, Any]]  # what the test reports carried, merged
    training: list[dict[str, Any]]  # the training runs they carried
    profiles: list[dict[str, Any]]  # the profiles over epochs they carried
    order: dict[str, int]  # node id -> position in the collection
    started: float  # time.perf_counter() at the session's start


# ---------------------------------------------------------------------------- one record
def add_record(node: pytest.Item, result: Any, baseline: str, notes: list[str],
               options: Mapping[str, Any], data: Any) -> dict[str, Any]:
    """Record ``result`` (a :class:`~ampcheck.checks.CheckResult`) on the test ``node``, with
    its baseline status and notes, the check options it ran with and its data set, and add
    its junitxml properties to the test; returns the record."""
    records = node.stash.setdefault(RECORDS, [])
    record = {"test": node.nodeid, "index": len(records), "result": result.to_dict(),
              "baseline": baseline, "notes": notes, "options": plain_options(options),
              "data": _data_summary(data)}
    records.append(record)
    node.user_properties.extend(junit_properties(record))
    return record


def _data_summary(data: Any) -> dict[str, Any]:
    """What a record says of its data set: what it is, its size and box, its kind."""
    return {"data": repr(data)[:300], "kind": data_kind(data), "n": len(data),
            "D": int(getattr(data, "D", 0)) or None, "apix": getattr(data, "apix", None)}


def _number(x: Any) -> str:
    return "nan" if x is None else f"{x:.4g}"


def _bound(t: Mapping[str, Any]) -> str:
    from ampcheck.results import bound_text

    return bound_text(t)


def _metric(m: Mapping[str, Any]) -> str:
    """``value [lo, hi]``, as :class:`~ampcheck.results.Metric` prints itself."""
    from ampcheck.results import Metric

    return str(Metric.from_dict(m))


def junit_properties(record: dict[str, Any]) -> list[tuple[str, str]]:
    """``ampcheck.<model>.<check>.<field>`` properties of one record, for junitxml."""
    r, t = record["result"], record["result"]["threshold"]
    prefix = f"ampcheck.{r['model']}.{r['check']}"
    props = [(f"{prefix}.verdict", r["verdict"])]
    if t is not None:
        m = r["metrics"][t["metric"]]
        props += [(f"{prefix}.metric", t["metric"]), (f"{prefix}.value", _number(m["value"])),
                  (f"{prefix}.interval", f"[{_number(m['lo'])}, {_number(m['hi'])}]"),
                  (f"{prefix}.threshold", _bound(t))]
    props.append((f"{prefix}.baseline", record["baseline"]))
    return props


def section(records: list[dict[str, Any]]) -> str:
    """The test report's "ampcheck metrics" section: each record's verdict, threshold,
    options, metrics, explanation and baseline notes."""
    lines = []
    for rec in records:
        r, t = rec["result"], rec["result"]["threshold"]
        if t is None:  # a SKIP: its reason only
            lines.append(f"{r['check']} on {r['model']}: {r['verdict']}\n  {r['explanation']}")
            continue
        flags = f" [{', '.join(r['flags'])}]" if r["flags"] else ""
        lines.append(f"{r['check']} on {r['model']}: {r['verdict']}{flags} (seeds "
                     f"{', '.join(map(str, r['seeds']))})")
        lines.append(f"  threshold: {t['metric']} {_bound(t)}")
        if rec["options"]:
            lines.append(f"  options: {rec['options']}")
        width = max(len(k) for k in r["metrics"])
        for k, m in r["metrics"].items():
            mark = "  <- governs" if k == t["metric"] else ""
            lines.append(f"  {k:<{width}}  {_metric(m)}{mark}")
        lines.append(f"  {r['explanation']}")
        lines.extend(f"  {note}" for note in rec["notes"])
    return "\n".join(lines)


# ---------------------------------------------------------------------------- over epochs
def add_profile(node: pytest.Item, model: str, block: Mapping[str, Any]) -> dict[str, Any]:
    """Record a profile over epochs of ``model`` (its ``over_epochs`` block,
    :meth:`~ampcheck.checks.over_epochs.EpochProfile.to_dict`) on the test ``node``, and add
    its junitxml properties; returns the record."""
    from ampcheck.results import jsonable

    profiles = node.stash.setdefault(PROFILES, [])
    record = {"test": node.nodeid, "index": len(profiles), "model": model, **jsonable(block)}
    profiles.append(record)
    node.user_properties.extend(profile_properties(record))
    return record


def _epochs_text(items: list[Mapping[str, Any]]) -> str:
    return ",".join(str(x["epoch"]) for x in items)


def profile_properties(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``ampcheck.<model>.over_epochs.<field>`` properties of a profile, for junitxml: the
    epochs measured, those skipped and the recommended one."""
    prefix = f"ampcheck.{record['model']}.over_epochs"
    return [(f"{prefix}.epochs", _epochs_text(record["epochs"])),
            (f"{prefix}.skipped", _epochs_text(record["skipped"])),
            (f"{prefix}.recommended_epoch", str(record["recommended_epoch"]))]


def profile_section(profiles: list[dict[str, Any]]) -> str:
    """The test report's "ampcheck over epochs" section: each profile as the console prints
    it (:func:`ampcheck.epochs.profile_text`)."""
    from ampcheck.epochs import profile_text

    return "\n\n".join(f"{p['model']}: {profile_text(p)}" for p in profiles)


# ---------------------------------------------------------------------------- the session's
class ReportMerger:
    """Merges what each test report carries into the session (on xdist's controller, the
    reports of every worker): ``pytest_runtest_logreport`` gets no config, so this object,
    registered per config, holds its session."""

    def __init__(self, state: RecordBook):
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.state.records.extend(getattr(report, "ampcheck_records", None) or ())
        self.state.training.extend(getattr(report, "ampcheck_training", None) or ())
        self.state.profiles.extend(getattr(report, "ampcheck_profiles", None) or ())

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if session.items:
            self.state.order = {item.nodeid: i for i, item in enumerate(session.items)}

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist the controller collects nothing; each worker sends its collection."""
        if not self.state.order:
            self.state.order = {nodeid: i for i, nodeid in enumerate(ids)}


def _sorted_records(state: RecordBook, records: list[dict[str, Any]] | None = None
                    ) -> list[dict[str, Any]]:
    """Records (default: the check results'; or the profiles) in the collection's order (then
    in the order each test made them): the same whichever xdist worker ran which test, and
    the order of a serial run."""
    last = len(state.order)
    return sorted(state.records if records is None else records,
                  key=lambda r: (state.order.get(r["test"], last), r["test"], r["index"]))


def _trained(state: RecordBook) -> dict[str, dict[str, Any]]:
    """``{label: run}``, one per trained model and data set, in the order of the tests
    charged with them (a label trained on a second data set gets `` #2``); a model trained on
    the same data on several xdist workers (each has its own cache) is one entry, its
    ``seconds`` summed over them, with ``trainings`` and ``workers``."""
    runs: dict[tuple[str, str | None], dict[str, Any]] = {}
    last = len(state.order)
    for t in sorted(state.training, key=lambda t: (state.order.get(t["test"], last), t["test"],
                                                   t["label"], t["worker"] or "")):
        key = (t["label"], t.get("data"))
        entry = {k: v for k, v in t.items() if k not in ("label", "worker")}
        if key not in runs:
            runs[key] = {**entry, "trainings": 1, "workers": [t["worker"]]}
        else:
            run = runs[key]
            run["trainings"] += 1
            run["seconds"] += t["seconds"]
            run["workers"].append(t["worker"])
    out: dict[str, dict[str, Any]] = {}
    for (label, _), run in runs.items():
        n = sum(k.split(" #")[0] == label for k in out)
        out[label if not n else f"{label} #{n + 1}"] = run
    return out


def session_report(state: RecordBook) -> dict[str, Any]:
    """The ``--ampcheck-report`` document: :func:`ampcheck.report.report_document` of the
    session's results (each with its test, baseline status and notes, and check options),
    its data sets and its training runs (no arrays)."""
    from ampcheck.report import report_document as document

    records = _sorted_records(state)
    checks = [{**r["result"], **dict(zip(REPORT_CHECK_FIELDS, (
        r["test"], r["baseline"], r["notes"], r["options"]), strict=True))} for r in records]
    sets = []
    for r in records:
        if r["data"] not in sets:
            sets.append(r["data"])
    s = state.settings
    dataset = {"data": s.data, "sets": sets}
    runs = {"budget": s.budget, "seeds": list(s.seed_list), "device": s.device,
            "trained": _trained(state),
            "seconds": round(time.perf_counter() - state.started, 1),
            "settings": s.to_dict()}
    if state.profiles:
        runs["over_epochs"] = _sorted_records(state, state.profiles)
    return document(checks, dataset, runs)


def write_summary(tr: Any, state: RecordBook) -> None:
    """The "ampcheck summary" of the terminal: a line per check, one per trained model, the
    configured models no check used, and where the report went."""
    tr.write_sep("=", "ampcheck summary")
    records = _sorted_records(state)
    if records:
        rows = [("check", "model", "verdict", "metric", "value", "threshold", "baseline")]
        for rec in records:
            r, t = rec["result"], rec["result"]["threshold"]
            if t is None:  # a SKIP
                rows.append((r["check"], r["model"], r["verdict"], "-", "-", "-",
                             rec["baseline"]))
                continue
            rows.append((r["check"], r["model"], r["verdict"] + ("*" if r["flags"] else ""),
                         t["metric"], _metric(r["metrics"][t["metric"]]), _bound(t),
                         rec["baseline"]))
        _table(tr, rows)
        if any(rec["result"]["flags"] for rec in records):
            tr.write_line("* flagged (see the test's ampcheck metrics section)")
    profiles = _sorted_records(state, state.profiles)
    if profiles:
        tr.write_line("over epochs (the table and the reason: the test's ampcheck over epochs "
                      "section):")
        rows = [("model", "epochs", "skipped", "recommended", "test")]
        for p in profiles:
            rows.append((p["model"], _epochs_text(p["epochs"]),
                         _epochs_text(p["skipped"]) or "-", str(p["recommended_epoch"]),
                         p["test"]))
        _table(tr, rows)
    trained = _trained(state)
    if trained:
        tr.write_line("training (apart from the checks; charged to the duration of the test "
                      "named):")
        rows = [("model", "variant", "seed", "seconds", "test")]
        for run in trained.values():
            seconds = f"{run['seconds']:.1f}"
            if run["trainings"] > 1:  # the same model on the same data: one per worker
                seconds += f" ({run['trainings']} trainings, one per xdist worker)"
            rows.append((run["model"], run["variant"], str(run["seed"]), seconds,
                         run["test"]))
        _table(tr, rows)
    unused = sorted(state.settings.models - {r["result"]["model"] for r in records})
    if unused and records:
        tr.write_line(f"[tool.ampcheck.models] configures models that no check of this "
                      f"session ran: {', '.join(map(repr, unused))} (checked: "
                      f"{', '.join(sorted({r['result']['model'] for r in records}))})")
    if state.settings.report is not None:
        tr.write_line(f"ampcheck report written to {state.settings.report}")


def _table(tr: Any, rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        tr.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
