"""Reports: ``report.json`` for machines, ``report.html`` for people, the arrays between them.

A report directory holds

* ``report.json``: ``{"profile": {key: verdict}, "checks": [CheckResult.to_dict()...],
  "dataset": {...}, "runs": {...}, "arrays": {key: sha256}}`` (:func:`report_document`);
  ``runs["trained"]`` maps each trained run's label to its config, seconds per epoch, images
  per second and loss history. A report of ``ampcheck check --cryodrgn`` has
  ``runs["cryodrgn"]``: the run's ``run_dir``, ``weights`` and the ``epoch`` they are from
  (``epoch_requested``: ``--epoch``, None for the last), ``cryodrgn_version`` and
  ``command``, its ``architecture`` (``encoder`` and ``decoder`` layers and width,
  ``zdim``, ``pe_type``, ``pe_dim``, ``domain``, ``activation``, ``D``), its
  ``preprocessing`` (``window``, ``window_r``, ``invert_data``, ``norm``, ``ctf``,
  ``translations``, ``do_pose_sgd``), ``beta``, ``trained_on`` (the particle files its
  ``config.yaml`` records) and ``files`` (those checked: ``particles``, ``poses``, ``ctf``,
  ``ind``, ``datadir``, ``heldout_ind``), as
  :func:`ampcheck.adapters.cryodrgn.describe_run` gives them; the HTML page shows it in its
  header. The pytest plugin's ``--ampcheck-report`` is the same document
  without array files (``"arrays": {}``); its checks carry the test that ran them and their
  baseline status, and ``runs["trained"]`` each run's training seconds;
* ``arrays/<key>.npz``: what each check kept for plots (:attr:`CheckResult.arrays`); a
  result's key is its check's name, or ``check[model]`` for a second model's result of the
  same check (:func:`~ampcheck.results.result_keys`). ``amortization_gap`` keeps each sampled
  image's gap and gain (``gap[train]``, ``gain[train]``, ``gap[heldout]``, ``gain[heldout]``),
  drawn as the gap per image on training against held-out images;
* ``report.html``: one self-contained page (images embedded), rendered from the two above, so
  ``ampcheck report DIR`` can re-render it at any time.

A report is replaced as a whole, in one step (built beside the directory, then swapped in): an
interrupted or failed write leaves the previous report intact, never a mix of two.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import re
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from . import __version__
from .errors import InputError
from .files import atomic_path, read_json, write_json_atomic
from .outdir import staged
from .results import CheckResult, result_keys

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
ARRAYS = "arrays"
REPORT_PARTS = (REPORT_JSON, REPORT_HTML, ARRAYS)  # what a new report replaces in its folder


def write_report(out: str | Path, results: Sequence[CheckResult], dataset: dict[str, Any],
                 runs: dict[str, Any], *, html: bool = True) -> Path:
    """Write ``report.json``, ``arrays/*.npz`` and (``html``) ``report.html`` to ``out``;
    return the path of ``report.json``.

    The report is built in a staging folder beside ``out`` and replaces the previous one in one
    step (:func:`ampcheck.outdir.staged`): a failure or a kill leaves the old report whole. Other
    entries of ``out`` (a data set, the user's files) are kept. ``report.json`` records the
    SHA-256 of every array file, so that :func:`load_report` can refuse a mix of two reports.
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
                          report_document(results, dataset, runs, arrays=digests))
        if html:
            render_html(stage)
    return out / REPORT_JSON


#: The keys of a report document, each with the type its value must have.
REPORT_KEYS: dict[str, type] = {"profile": dict, "checks": list, "dataset": dict, "runs": dict,
                                "arrays": dict}


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
                    runs: dict[str, Any], *, arrays: dict[str, str] | None = None
                    ) -> dict[str, Any]:
    """The ``report.json`` document: ``{"profile", "checks", "dataset", "runs", "arrays"}``.

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
    return {"profile": {k: c.get("verdict") for k, c in zip(keys, dicts, strict=True)},
            "checks": dicts, "dataset": dict(dataset), "runs": dict(runs),
            "arrays": dict(arrays or {})}


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
    for key, kind in REPORT_KEYS.items():
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


# ----------------------------------------------------------------------------- the HTML page

Json = dict[str, Any]
Arrays = dict[str, np.ndarray]
Plot = tuple[str, str] | None  # (PNG data URI, caption)

MAX_POINTS = 1000  # originals per latent plot: enough to see the structure, quick to embed
MAX_SLICE_ROWS = 6
DPI = 110
_SEED = 0
_VERDICT_COLOURS = {"PASS": "#1a7f37", "WARN": "#b06d00", "FAIL": "#c62828",
                    "SKIP": "#6e7781"}  # grey: the check did not run
_LINK = "#7b3294"  # the purple of the paper's Figs 10-11 lines joining an image to its copy
_GREY = "0.4"


def render_html(out: str | Path) -> Path:
    """Render ``out/report.html`` from ``out/report.json`` and ``out/arrays``; return its path.

    The page is built in memory, then written atomically: a failed render leaves any previous
    ``report.html`` untouched.
    """
    out = Path(out)
    report, arrays = load_report(out)
    page = _page(report, arrays)
    with atomic_path(out / REPORT_HTML) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out / REPORT_HTML


def _page(report: Json, arrays: dict[str, Arrays]) -> str:
    checks = [c for c in _list(report.get("checks")) if isinstance(c, dict)]
    anchors = _anchors(checks)
    keys = result_keys([(str(c.get("check")), str(c.get("model"))) for c in checks])
    sections = "".join(_check_section(c, arrays.get(k, {}), a)
                       for c, a, k in zip(checks, anchors, keys, strict=True))
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            "content='width=device-width, initial-scale=1'><title>ampcheck amortization report"
            f"</title><style>{_CSS}</style></head><body>{_header(report, checks)}"
            f"<h2 id='profile'>Amortization profile</h2>{_profile_table(checks, anchors)}"
            f"{sections}{_training_section(_dict(report.get('runs')))}{_FOOTER}</body></html>\n")


# ----------------------------------------------------------------------------- text

def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _dict(x: Any) -> Json:
    """``x`` if it is a dict, else empty: a hand-edited or older report must still render."""
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _fmt(x: Any) -> str:
    """A number to 3 significant digits; ``—`` for a missing or non-finite one."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return "—"
    if abs(x) >= 1e3:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _duration(seconds: Any) -> str | None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return None
    return f"{seconds / 60:.1f} min ({seconds:,.0f} s)" if seconds >= 120 else f"{seconds:.1f} s"


def _interval(m: Json) -> str:
    lo, hi = _fmt(m.get("lo")), _fmt(m.get("hi"))
    return "—" if "—" in (lo, hi) else f"[{lo}, {hi}]"


def _metric_text(metrics: Json, name: str) -> str:
    """``value [lo, hi]`` of one metric as plain text (plot titles use it too)."""
    m = _dict(metrics.get(name))
    ci = _interval(m)
    return _fmt(m.get("value")) + ("" if ci == "—" else f" {ci}")


def _bound(t: Json) -> str:
    """``≤ 0.2`` or ``≥ 0.8``: which side of the threshold passes."""
    return f"{'≥' if t.get('higher_is_better') else '≤'} {_fmt(t.get('value'))}"



def _skipped(c: Json) -> bool:
    """A check that did not run (verdict ``SKIP``): no metrics, no threshold, no plots."""
    return c.get("verdict") == "SKIP"


def _badge(verdict: Any) -> str:
    colour = _VERDICT_COLOURS.get(str(verdict), "#666")
    return f"<span class='badge' style='background:{colour}'>{_e(verdict)}</span>"


def _anchors(checks: list[Json]) -> list[str]:
    """One unique, id-safe anchor per check."""
    slugs = ["check-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(c.get("check", ""))) for c in checks]
    return [s if slugs.index(s) == i else f"{s}-{i}" for i, s in enumerate(slugs)]


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> str:
    """A table of already-escaped cells that scrolls sideways rather than overflowing."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div class='scroll'><table class='{cls}'><thead><tr>{th}</tr></thead><tbody>" \
           f"{body}</tbody></table></div>"


# ----------------------------------------------------------------------------- page parts

def _header(report: Json, checks: list[Json]) -> str:
    runs, data = _dict(report.get("runs")), _dict(report.get("dataset"))
    models = sorted({str(c["model"]) for c in checks if c.get("model") is not None})
    names = {"n": "images", "D": "box (px)", "apix": "Å/pixel", "snr": "SNR"}
    cryodrgn = _dict(runs.get("cryodrgn"))
    shown = set(_dict(cryodrgn.get("files"))) | {"path"} if cryodrgn else set()  # its table
    facts = [(names.get(k, k), v) for k, v in data.items()
             if not isinstance(v, dict | list) and k not in shown]
    facts += [("budget", runs.get("budget")), ("training seeds", runs.get("seeds")),
              ("total time", _duration(runs.get("seconds"))), ("ampcheck", __version__)]
    chips = "".join(f"<div><span>{_e(k)}</span>{_e(v)}</div>" for k, v in facts if v is not None)
    models_li = "".join(f"<li><code>{_e(m)}</code></li>" for m in models) or "<li>—</li>"
    return ("<header><h1>ampcheck: does the encoder really amortize inference?</h1><p class="
            "'lead'>Quantitative checks of whether a VAE's encoder has learned an inference map "
            "that generalises: invariant to nuisance transforms, no better at memorising "
            "arbitrary inputs than at encoding, as good as free per-image latents, and as good "
            "on held-out images (after a cryo-EM case study of cryoDRGN).</p><div class='facts'>"
            f"<h3>Models</h3><ul>{models_li}</ul>{_cryodrgn_facts(cryodrgn)}"
            f"<h3>Data and run</h3><div class='chips'>{chips}</div></div></header>")


def _cryodrgn_facts(run: Json) -> str:
    """The cryoDRGN run a report checked (``runs["cryodrgn"]``): its directory, the epoch of
    its weights, its architecture and preprocessing from ``config.yaml``, and the particle
    files, those checked beside those the run recorded; empty for other reports."""
    if not run:
        return ""
    arch, pre = _dict(run.get("architecture")), _dict(run.get("preprocessing"))
    enc, dec = _dict(arch.get("encoder")), _dict(arch.get("decoder"))

    def val(x: Any) -> str:
        return "—" if x is None else _fmt(x) if isinstance(x, float) else str(x)

    def yes(key: str, text: str) -> str:
        return {True: text, False: f"no {text}"}.get(pre.get(key), f"{text}: ?")

    epoch = run.get("epoch")
    asked = run.get("epoch_requested")
    weights = Path(str(run.get("weights") or "?")).name
    at = (f"epoch {epoch}" if epoch is not None else "epoch unknown") + \
        (" (the last)" if asked is None else "")
    window = f"window r = {val(pre.get('window_r'))}" if pre.get("window") else \
        yes("window", "window")
    norm = pre.get("norm")
    rows = [
        ("run directory", f"<code>{_e(run.get('run_dir', '?'))}</code>"),
        ("weights", f"<code>{_e(weights)}</code>: {_e(at)}"),
        ("trained by", _e(f"cryoDRGN {val(run.get('cryodrgn_version'))}")),
        ("architecture", _e(
            f"encoder {val(enc.get('layers'))} × {val(enc.get('width'))} "
            f"({val(enc.get('mode'))}, mask radius {val(enc.get('mask_radius'))}), decoder "
            f"{val(dec.get('layers'))} × {val(dec.get('width'))}, zdim {val(arch.get('zdim'))}, "
            f"positional encoding {val(arch.get('pe_type'))}"
            + ("" if arch.get("pe_dim") is None else f" ({val(arch.get('pe_dim'))})")
            + f", {val(arch.get('domain'))} domain, {val(arch.get('activation'))}, "
              f"D = {val(arch.get('D'))} px")),
        ("preprocessing", _e(
            f"{window}, {'inverted' if pre.get('invert_data') else 'uninverted'} contrast, "
            f"norm {_norm_text(norm)}, "
            f"{yes('ctf', 'CTF')}, {yes('translations', 'translations')}, "
            f"{'pose SGD' if pre.get('do_pose_sgd') else 'no pose SGD'}; "
            f"KL weight β = {val(run.get('beta'))}")),
    ]
    checked, trained = _dict(run.get("files")), _dict(run.get("trained_on"))
    keys = [k for k in ("particles", "poses", "ctf", "ind", "heldout_ind", "datadir")
            if checked.get(k) is not None or trained.get(k) is not None]
    labels = {"heldout_ind": "held-out ind"}
    files = _table(["File", "Checked here", "Recorded in config.yaml"],
                   [[_e(labels.get(k, k)),
                     *(f"<code>{_e(f[k])}</code>" if f.get(k) is not None else "—"
                       for f in (checked, trained))] for k in keys], "files") if keys else ""
    pairs = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f"<h3>cryoDRGN run</h3><dl>{pairs}</dl>{files}"


def _norm_text(norm: Any) -> str:
    """cryoDRGN's ``norm`` ``[mean, std]`` of the Hartley images, in words."""
    ok = isinstance(norm, list) and len(norm) == 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in norm)
    return f"mean {norm[0]:.4g}, std {norm[1]:.4g}" if ok else "—"


def _profile_table(checks: list[Json], anchors: list[str], linked: bool = True) -> str:
    """One row per check: the check (and model), its verdict, the governing metric with its
    interval and the side of the threshold that passes, and what the verdict means, its flags
    first. Four columns, the last one wrapping, so that nothing scrolls sideways at 800 px."""
    if not checks:
        return "<p class='note'>This report holds no check results.</p>"
    rows = []
    several = len({str(c.get("model")) for c in checks}) > 1  # name each row's model then
    for c, a in zip(checks, anchors, strict=True):
        t, name = _dict(c.get("threshold")), _e(c.get("check", "?"))
        model = f"<br><small>{_e(c.get('model'))}</small>" if several else ""
        check = (f"<a href='#{a}'>{name}</a>" if linked else name) + model
        if _skipped(c):  # not run: the reason is the whole story
            rows.append([check, _badge("SKIP"), "—",
                         f"<span class='skip'>{_e(c.get('explanation', ''))}</span>"])
            continue
        metric = _e(t.get("metric", "?"))
        m = _dict(_dict(c.get("metrics")).get(t.get("metric")))
        ci = _interval(m)  # spans keep "name = value" and "[lo, hi]" whole when a cell wraps
        governing = (f"<span class='nw'><code>{metric}</code> = {_e(_fmt(m.get('value')))}"
                     "</span>" + ("" if ci == "—" else f" <span class='nw'>{_e(ci)}</span>")
                     + f"<br><small class='nw'>pass when {_e(_bound(t))}</small>")
        flags = "".join(f"<span class='flag'>{_e(f)}</span> " for f in _list(c.get("flags")))
        rows.append([check, _badge(c.get("verdict")), governing,
                     flags + _e(c.get("explanation", ""))])
    return _table(["Check", "Verdict", "Governing metric [95% CI]", "What it means"], rows,
                  "profile")


def _metrics_table(c: Json) -> str:
    governing = _dict(c.get("threshold")).get("metric")
    star = " <b title='decides the verdict'>★</b>"
    rows = [[f"<code>{_e(name)}</code>" + (star if name == governing else ""),
             _e(_fmt(m.get("value"))), _e(_interval(m)),
             "higher ↑" if m.get("higher_is_better") else "lower ↓"]
            for name, m in ((n, _dict(m)) for n, m in _dict(c.get("metrics")).items())]
    return _table(["Metric (★ decides)", "Value", "95% interval", "Better"], rows, "metrics")


def _details(details: Json) -> str:
    """Scalars and lists of scalars as a list; the MNIST control's inner profile as a table;
    anything else as compact JSON."""
    items, profile = [], ""
    for k, v in details.items():
        if k == "profile" and isinstance(v, dict) and all(isinstance(d, dict) and "verdict" in d
                                                          for d in v.values()):
            inner = list(v.values())
            profile = "<h4>Inner profile</h4>" + _profile_table(inner, _anchors(inner), False)
        elif isinstance(v, list) and all(isinstance(x, str | int | float) for x in v):
            items.append((k, ", ".join(_fmt(x) if isinstance(x, float) else str(x) for x in v)))
        elif isinstance(v, dict | list):
            text = json.dumps(v, default=str)
            items.append((k, text if len(text) < 300 else text[:299] + "…"))
        else:
            items.append((k, _fmt(v) if isinstance(v, float) else v))
    pairs = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    return (f"<dl>{pairs}</dl>" if pairs else "") + profile


def _check_section(c: Json, arrays: Arrays, anchor: str) -> str:
    if _skipped(c):
        return _skipped_section(c, anchor)
    t, flags = _dict(c.get("threshold")), ", ".join(map(str, _list(c.get("flags"))))
    figs = "".join(_figure_html(uri, cap) for uri, cap in _figures(arrays, c))
    tables = _metrics_table(c) + _details(_dict(c.get("details")))
    meta = f"model <code>{_e(c.get('model'))}</code> · seeds " \
           f"{_e(', '.join(map(str, _list(c.get('seeds')))))}" + \
           (f" · flags <b>{_e(flags)}</b>" if flags else "")
    return (f"<section id='{anchor}'><h2>{_e(c.get('check', '?'))} {_badge(c.get('verdict'))}"
            f"</h2><p class='meta'>{meta}</p><p class='explanation'>"
            f"{_e(c.get('explanation', ''))}</p><p><b>Pass when {_e(t.get('metric', '?'))} "
            f"{_e(_bound(t))}.</b> {_e(t.get('rationale', ''))}</p><div class='body'>"
            f"<div class='tables'>{tables}</div>{figs}</div>"
            "<p class='top'><a href='#profile'>↑ profile</a></p></section>")


def _skipped_section(c: Json, anchor: str) -> str:
    """A check that did not run: its badge, model and reason (no metrics, no plots)."""
    details = _details({k: v for k, v in _dict(c.get("details")).items() if k == "profile"})
    return (f"<section id='{anchor}'><h2>{_e(c.get('check', '?'))} {_badge('SKIP')}</h2>"
            f"<p class='meta'>model <code>{_e(c.get('model'))}</code> · not run</p>"
            f"<p class='explanation skip'>Skipped: {_e(c.get('explanation', ''))}</p>{details}"
            "<p class='top'><a href='#profile'>↑ profile</a></p></section>")


def _figure_html(uri: str, caption: str) -> str:
    """A figure no wider than its PNG (width read from the PNG header) that may shrink a
    little, so that a one-panel figure sits beside the metrics table on a laptop screen."""
    width = int.from_bytes(base64.b64decode(uri.split(",", 1)[1][:32])[16:20], "big")
    return (f"<figure style='flex:1 1 {width * 3 // 4}px;max-width:{width}px'>"
            f"<img src='{uri}' width='{width}' "
            f"alt='{_e(caption)}'><figcaption>{_e(caption)}</figcaption></figure>")


# ----------------------------------------------------------------------------- figures

def _figures(a: Arrays, c: Json) -> list[tuple[str, str]]:
    """``(data URI, caption)`` of every plot the arrays of check ``c`` allow, chosen by the
    arrays' names; inner checks' arrays (``inner/name``, as the MNIST control keeps them) are
    plotted with the inner check's own result."""
    metrics, model = _dict(c.get("metrics")), str(c.get("model"))
    figs = [f for plot in _PLOTS if (f := plot(a, metrics, model)) is not None]
    if (f := _gap_plot(a, metrics, _dict(c.get("threshold")))) is not None:
        figs.append(f)
    inner: dict[str, Arrays] = {}
    for k, v in a.items():
        if "/" in k:
            prefix, rest = k.split("/", 1)
            inner.setdefault(prefix, {})[rest] = v
    profile = _dict(_dict(c.get("details")).get("profile"))
    for name, sub in inner.items():
        sub_c = _dict(profile.get(name)) or {"model": model}
        figs += [(uri, f"{name}: {cap}") for uri, cap in _figures(sub, sub_c)]
    return figs


def _png(fig: Figure) -> str:
    """The figure as a base64 PNG data URI, drawn by Agg (no pyplot, no global state)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _latents(x: Any) -> np.ndarray | None:
    """``x`` as an ``(n, d)`` float array, or ``None`` when absent, empty or misshapen."""
    if x is None or np.ndim(x) not in (1, 2) or not np.size(x):
        return None
    return np.asarray(x, dtype=float).reshape(len(x), -1)


def _subsample(n: int, cap: int = MAX_POINTS) -> np.ndarray:
    """Seeded, sorted indices of at most ``cap`` of ``n`` items (the same on every render)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(_SEED).choice(n, cap, replace=False))


def _embed(blocks: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
    """2-D coordinates of each block of latents from one joint fit, and the method: the raw
    latents when zdim ≤ 2, else UMAP (PCA when there are too few points for UMAP)."""
    x = np.concatenate(blocks)
    ok = np.isfinite(x).all(axis=1)
    y, d = np.full((len(x), 2), np.nan), x.shape[1]
    if d <= 2:
        y[:, :d], y[:, d:], method = x, 0.0, "z"
    elif ok.sum() < 20:
        xc = x[ok] - x[ok].mean(axis=0)
        pcs = np.linalg.svd(xc, full_matrices=False)[2][:2]
        y[ok, :len(pcs)], method = xc @ pcs.T, "PC"
    else:
        with warnings.catch_warnings():  # "Tensorflow not installed": we use no ParametricUMAP
            warnings.simplefilter("ignore")
            import umap  # numba's import and first JIT cost seconds: only when needed

        fit = umap.UMAP(n_neighbors=min(15, int(ok.sum()) - 1), random_state=_SEED, n_jobs=1)
        with warnings.catch_warnings():  # small or collapsed latents make UMAP chatty
            warnings.simplefilter("ignore")
            y[ok], method = fit.fit_transform(x[ok]), "UMAP"
    return np.split(y, np.cumsum([len(b) for b in blocks])[:-1]), method


def warm_up_embedding() -> None:
    """Compile UMAP's numba functions now (a fit of 40 random 8-D points, as :func:`_embed`
    calls it): 20 s or so of one core that the first report otherwise spends, done by
    ``ampcheck run`` while its models train in other processes."""
    x = np.random.default_rng(_SEED).normal(size=(40, 8)).astype(np.float32)
    _embed([x])


def _what(method: str, d: int, joint: str = "") -> str:
    """What the axes of an embedding are, for titles and captions."""
    return f"raw {d}-D latents" if method == "z" else \
        f"{'UMAP' if method == 'UMAP' else 'PCA'} of the {d}-D latents{joint}"


def _truth(a: Arrays, suffix: str, idx: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """``{name: values[idx]}`` of the per-image truths ``truth[name]<suffix>`` of length n."""
    out = {}
    for k, v in a.items():
        m = re.fullmatch(r"truth\[([^\]]+)\]" + re.escape(suffix), k)
        if m and np.ndim(v) == 1 and len(v) == n:
            out[m.group(1)] = np.asarray(v, dtype=float)[idx]
    return out


class _Colour:
    """One colouring by ground truth shared by every block of a figure (one colour bar): the
    continuous conformation if known, else the class, else a single colour."""

    def __init__(self, truths: list[dict[str, np.ndarray]], model: str) -> None:
        self.values: list[np.ndarray] | None = None
        self.ticks: tuple[np.ndarray, list[str]] | None = None
        key = next((k for k in ("z_continuous", "z_class") if all(k in t for t in truths)), "")
        values = [t[key] for t in truths] if key else []
        seen = np.unique(np.concatenate(values)) if values else np.zeros(0)
        seen = seen[np.isfinite(seen)]
        if key == "z_class" and 0 < len(seen) <= 20:  # a discrete palette and one tick a class
            self.cmap = ListedColormap(colormaps["tab10" if len(seen) <= 10 else "tab20"]
                                       .colors[:len(seen)])
            self.norm = BoundaryNorm(np.arange(len(seen) + 1) - 0.5, len(seen))
            self.values = [np.where(np.isfinite(v), np.searchsorted(seen, v), np.nan)
                           for v in values]
            self.ticks = (np.arange(len(seen)), [f"{c:g}" for c in seen])
        elif len(seen):
            self.cmap, self.values = colormaps["viridis"], values
            self.norm = Normalize(float(seen.min()), float(seen.max()))
        self.label = "true conformation z" if key == "z_continuous" else \
            "digit" if model.startswith("mnist") else "true class"

    def kw(self, i: int) -> Json:
        """Scatter keyword arguments for block ``i``."""
        if self.values is None:
            return {"color": "#4c72b0"}
        return {"c": self.values[i], "cmap": self.cmap, "norm": self.norm}

    def colourbar(self, fig: Figure, mappable: Any, axes: Any) -> None:
        if self.values is not None:
            bar = fig.colorbar(mappable, ax=axes, label=self.label, shrink=0.85, pad=0.02)
            if self.ticks is not None:
                bar.set_ticks(self.ticks[0], labels=self.ticks[1])


def _panels(n: int, width: float = 4.6, height: float = 4.1) -> tuple[Figure, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols + 1.0, height * rows + 0.5), layout="constrained")
    return fig, list(np.ravel(fig.subplots(rows, cols, squeeze=False)))[:n]


def _style(ax: Any, method: str, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("z₁" if method == "z" else f"{method} 1")
    ax.set_ylabel("z₂" if method == "z" else f"{method} 2")
    ax.grid(alpha=0.25)


def _legend(fig: Figure, entries: list[tuple[str, Json]]) -> None:
    """A legend under the panels from grey proxies (the real markers are coloured by truth)."""
    fig.legend([Line2D([], [], **kw) for _, kw in entries], [t for t, _ in entries],
               loc="outside lower center", ncols=len(entries), fontsize=9, frameon=False)


def _invariance_plot(a: Arrays, metrics: Json, model: str) -> Plot:
    """Figs 10-11 of the paper: each image joined to its transformed copy, a panel each."""
    mu = _latents(a.get("mu"))
    moved = {k[6:-1]: m for k, v in a.items() if mu is not None and k.startswith("moved[")
             and (m := _latents(v)) is not None and m.shape == mu.shape}
    if not moved:
        return None
    idx = _subsample(len(mu))
    emb, method = _embed([mu[idx], *(m[idx] for m in moved.values())])
    colour = _Colour([_truth(a, "", idx, len(mu))], model)
    fig, axes = _panels(len(moved))
    size = float(np.clip(3000 / len(idx), 5, 14))  # smaller markers where there are many
    for ax, name, xy in zip(axes, moved, emb[1:], strict=True):
        ax.add_collection(LineCollection(np.stack([emb[0], xy], axis=1), colors=_LINK,
                                         linewidths=0.5, alpha=0.3))
        points = ax.scatter(*emb[0].T, s=size, marker="o", **colour.kw(0))
        ax.scatter(*xy.T, s=size * 1.3, marker="x", linewidths=0.7, **colour.kw(0))
        # the governing transform's is "displacement" alone (older reports hold both)
        key = f"displacement[{name}]"
        shift = _metric_text(metrics, key if key in metrics else "displacement")
        _style(ax, method, name + ("" if shift == "—" else f": displacement {shift}"))
    _legend(fig, [("original image", {"marker": "o", "ls": "", "color": _GREY}),
                  ("transformed copy", {"marker": "x", "ls": "", "color": _GREY}),
                  ("image ↔ its copy", {"color": _LINK})])
    colour.colourbar(fig, points, axes)
    what = _what(method, mu.shape[1], ", fitted jointly on the originals and their copies")
    return _png(fig), (f"{what} ({len(idx)} images); a thin line joins each image to its "
                       "transformed copy. Short lines mean an invariant encoder.")


def _vlt_latent_plot(a: Arrays, metrics: Json, model: str) -> Plot:
    """The encoder's latents beside the lookup table's, each embedded on its own."""
    blocks = {k: _latents(a.get(f"mu[{k}]")) for k in ("encoder", "vlt")}
    if any(b is None for b in blocks.values()):
        return None
    fig, axes = _panels(2)
    titles = {"encoder": "encoder μ (amortized)", "vlt": "VLT (per-image table)"}
    for ax, (k, mu) in zip(axes, blocks.items(), strict=True):
        idx = _subsample(len(mu))
        (xy,), method = _embed([mu[idx]])
        colour = _Colour([_truth(a, "", idx, len(mu))], model)
        points = ax.scatter(*xy.T, s=10, **colour.kw(0))
        _style(ax, method, f"{titles[k]}: {_what(method, mu.shape[1])}")
    colour.colourbar(fig, points, axes)
    return _png(fig), ("The encoder's latents beside the lookup table's free latents (CKA "
                       f"{_metric_text(metrics, 'cka')}, 10-NN overlap "
                       f"{_metric_text(metrics, 'knn_overlap@10')}).")


def _slices_plot(a: Arrays, metrics: Json, model: str) -> Plot:
    """Central sections of true and decoded volumes: a row per image, a column per source
    (vlt_equivalence: truth, encoder, VLT; the invariance checks: the volume at an image's
    latent and at its transformed copy's)."""
    names = {"truth": "truth", "encoder": "encoder", "vlt": "VLT", "image": "at μ(x)",
             "moved": "at μ(T x)"}
    vols = {k: np.asarray(a[f"slices[{k}]"], dtype=float) for k in names
            if np.ndim(a.get(f"slices[{k}]")) == 4}
    if not vols or len({v.shape[1:] for v in vols.values()}) != 1:
        return None
    n = min(len(v) for v in vols.values())
    z = np.ravel(a.get("z_continuous", [])).astype(float)
    z = z if len(z) == n else np.full(n, np.nan)
    order = np.argsort(z[:MAX_SLICE_ROWS], kind="stable")  # rows from low to high z
    k, sections = len(order), "zyx"[:next(iter(vols.values())).shape[1]]
    if not k or not sections:
        return None
    fig = Figure(figsize=(1.15 * len(vols) * len(sections) + 0.9, 1.2 * k + 0.7),
                 layout="constrained")
    for s, sub in enumerate(fig.subfigures(1, len(sections), squeeze=False)[0]):
        sub.suptitle(f"central {sections[s]}-section", fontsize=10)
        axes = sub.subplots(k, len(vols), squeeze=False)
        for row, col in np.ndindex(k, len(vols)):
            (name, v), i = list(vols.items())[col], order[row]
            finite = v[i][np.isfinite(v[i])]
            lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0, 1)  # per volume
            ax = axes[row, col]
            ax.imshow(v[i, s], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(names[name], fontsize=9)
            if s == col == 0:
                ax.set_ylabel(f"z = {z[i]:.2f}" if np.isfinite(z[i]) else f"image {i + 1}")
    if "moved" in vols:
        return _png(fig), ("Central sections of the volumes decoded at each image's latent "
                           "μ(x) and at its transformed copy's μ(T x) (T: the check's governing "
                           "transform): an invariant encoder gives the same volume twice. Each "
                           "volume is scaled to its own 1-99.5 percentile range.")
    return _png(fig), ("Central sections of the true volume nearest each image's conformation "
                       "and of the volumes decoded at its encoder and VLT latents, each volume "
                       "scaled to its own 1-99.5 percentile range.")


def _heldout_plot(a: Arrays, metrics: Json, model: str) -> Plot:
    """Training and held-out images in one latent map (distinct markers)."""
    train, held = _latents(a.get("mu[train]")), _latents(a.get("mu[heldout]"))
    if train is None or held is None or train.shape[1] != held.shape[1]:
        return None
    it, ih = _subsample(len(train)), _subsample(len(held), MAX_POINTS // 2)
    (xt, xh), method = _embed([train[it], held[ih]])
    colour = _Colour([_truth(a, "[train]", it, len(train)),
                      _truth(a, "[heldout]", ih, len(held))], model)
    fig, (ax,) = _panels(1)
    ax.scatter(*xt.T, s=10, marker="o", alpha=0.7, **colour.kw(0))
    points = ax.scatter(*xh.T, s=34, marker="^", edgecolors="black", linewidths=0.5,
                        **colour.kw(1))
    _legend(fig, [(f"training ({len(it)})", {"marker": "o", "ls": "", "color": _GREY}),
                  (f"held-out ({len(ih)})", {"marker": "^", "ls": "", "color": _GREY,
                                             "markeredgecolor": "black"})])
    _style(ax, method, _what(method, train.shape[1], " (one fit)"))
    colour.colourbar(fig, points, ax)
    return _png(fig), ("Training and held-out images in one latent map: held-out images should "
                       "land among the training images of the same truth.")


def _vector(x: Any) -> np.ndarray | None:
    """``x`` as a 1-D float array, or ``None`` when absent, empty or not 1-D."""
    if x is None or np.ndim(x) != 1 or not np.size(x):
        return None
    return np.asarray(x, dtype=float)


_SIDES = {"train": ("training", "#4c72b0"), "heldout": ("held-out", "#dd8452")}


def _gap_plot(a: Arrays, metrics: Json, threshold: Json) -> Plot:
    """The amortization gap image by image, training against held-out images: each image's
    gap divided by its side's mean gain (so a side's mean is its ``gap_fraction``), or the raw
    gap when a side gained nothing; quartile boxes, means, the threshold."""
    gaps = {k: _vector(a.get(f"gap[{k}]")) for k in _SIDES}
    if any(g is None or not np.isfinite(g).any() for g in gaps.values()):
        return None  # no held-out images: nothing to compare
    scale = {}
    for k, g in gaps.items():
        gain = _vector(a.get(f"gain[{k}]"))
        ok = gain is not None and len(gain) == len(g) and np.isfinite(gain).any()
        scale[k] = float(np.nanmean(gain)) if ok else float("nan")
    normalised = all(np.isfinite(v) and v > 0 for v in scale.values())
    ys = {k: (g / scale[k] if normalised else g) for k, g in gaps.items()}
    ys = {k: y[np.isfinite(y)] for k, y in ys.items()}
    fig = Figure(figsize=(5.8, 4.4), layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(_SEED)
    for i, (k, y) in enumerate(ys.items()):
        colour = _SIDES[k][1]
        ax.boxplot([y], positions=[i], widths=0.5, showfliers=False, whis=(0, 100),
                   medianprops={"color": "black", "lw": 1.5},
                   boxprops={"color": colour}, whiskerprops={"color": colour},
                   capprops={"color": colour})
        idx = _subsample(len(y))
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(idx)), y[idx], s=16, color=colour,
                   alpha=0.6, edgecolors="none", zorder=3)
        ax.scatter([i + 0.33], [y.mean()], marker="D", s=40, color="black", zorder=4)
        ax.annotate(_fmt(float(y.mean())), (i + 0.33, y.mean()), xytext=(0, 7),
                    textcoords="offset points", ha="center", fontsize=8.5)
    t = threshold.get("value")
    if normalised:
        ax.axhline(0, color=_GREY, lw=0.8)
        ax.axhline(1, color=_GREY, lw=0.8, ls=":")
        if isinstance(t, int | float) and threshold.get("metric") == "gap_fraction":
            ax.axhline(t, color="#c62828", lw=1.2, ls="--")
    ax.set_xticks(range(len(ys)), [f"{_SIDES[k][0]}\n({len(y)} images)"
                                   for k, y in ys.items()])
    ax.set_xlim(-0.6, len(ys) - 0.4)
    ax.set_ylabel("gap / its side's mean gain (as gap_fraction)" if normalised
                  else "gap (ELBO units)")
    ax.set_title("amortization gap per image", fontsize=10)
    ax.grid(alpha=0.25, axis="y")
    entries = [("image", {"marker": "o", "ls": "", "color": _GREY}),
               ("mean", {"marker": "D", "ls": "", "color": "black"}),
               ("median, quartiles, range", {"marker": "s", "ls": "", "mfc": "none",
                                             "color": "black"})]
    if normalised and isinstance(t, int | float):
        entries.append((f"threshold {_fmt(t)}", {"color": "#c62828", "ls": "--"}))
    fig.legend([Line2D([], [], **kw) for _, kw in entries], [e for e, _ in entries],
               loc="outside lower center", ncols=2, fontsize=8.5, frameon=False)
    return _png(fig), _gap_caption(ys, metrics, t if normalised else None, normalised)


def _gap_caption(ys: dict[str, np.ndarray], metrics: Json, t: Any, normalised: bool) -> str:
    """What the gap figure shows, in words, from its numbers."""
    frac = {k: _metric_text(metrics, f"gap_fraction[{k}]") for k in ys}
    if not normalised:
        return ("Each point is one image's amortization gap (ELBO units): what optimising its "
                "own posterior adds to the encoder's. Per-image optimisation gained nothing "
                "over one constant posterior on at least one side, so the gaps are not "
                "normalised; training and held-out images are on separate strips.")
    text = ("Each point is one image's amortization gap (what optimising its own posterior "
            "adds to the encoder's ELBO) divided by the mean over its side of what the "
            "optimum gains over one constant posterior: 0 is the image's own optimum, 1 (dotted) "
            "no better than a constant. Boxes: median and quartiles; diamonds: means, which are "
            f"gap_fraction[train] {frac['train']} and gap_fraction[heldout] {frac['heldout']}")
    m = {k: float(y.mean()) for k, y in ys.items()}
    if not isinstance(t, int | float):
        return text + "."
    text += f"; dashed: the threshold {_fmt(t)}. "
    over = {k: v > t for k, v in m.items()}
    if over["heldout"] and not over["train"]:
        return text + ("Only the held-out images' mean lies above the threshold: the encoder "
                       "infers well the images it trained on and not new ones, as a lookup "
                       "table of its training set would.")
    if over["heldout"] and over["train"]:
        near = " (means near 1: on average no better than one constant posterior)" \
            if min(m.values()) > 0.8 else ""
        return text + ("Both means lie above the threshold: the encoder falls short of each "
                       f"image's optimum even on the images it trained on{near}.")
    if over["train"]:
        return text + ("The training images' mean lies above the threshold and the held-out "
                       "images' below it.")
    return text + ("Both means lie within the threshold: the encoder's inference carries "
                   "over to images it did not train on.")


_PLOTS: tuple[Callable[[Arrays, Json, str], Plot], ...] = (
    _invariance_plot, _vlt_latent_plot, _slices_plot, _heldout_plot)


# ----------------------------------------------------------------------------- training

def _loss_series(run: Json) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and losses: each epoch's within-epoch curve spread evenly over that epoch
    (ending at its number), or the epoch's mean loss where there is no curve."""
    xs: list[float] = []
    ys: list[float] = []
    for h in (_dict(h) for h in _list(run.get("history"))):
        if isinstance(h.get("epoch"), int | float):
            curve = [np.nan if v is None else float(v) for v in _list(h.get("curve"))] or \
                [np.nan if h.get("loss") is None else float(h["loss"])]
            xs += list(h["epoch"] - 1 + (np.arange(len(curve)) + 1) / len(curve))
            ys += curve
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def _loss_plot(trained: dict[str, Json]) -> str | None:
    """A panel per data set (the label's first part): their losses differ in scale."""
    groups: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for label, run in trained.items():
        x, y = _loss_series(run)
        if np.isfinite(y).any():
            head, _, rest = label.partition("/")
            groups.setdefault(head, []).append((rest or head, x, y))
    if not groups:
        return None
    fig, axes = _panels(len(groups), 5.4, 3.8)
    for ax, (name, lines) in zip(axes, groups.items(), strict=True):
        for label, x, y in lines:
            ax.plot(x, y, marker="." if len(x) < 30 else None, lw=1.3, label=label)
        y = np.concatenate([y for _, _, y in lines])
        y = y[np.isfinite(y)]
        if y.min() > 0 and y.max() / y.min() > 10:  # a steep early drop would hide the rest
            ax.set_yscale("log")
        title = {"cryoem": "cryo-EM", "mnist": "MNIST"}.get(name, name)
        ax.set(xlabel="epoch", ylabel="training loss", title=f"{title} runs")
        ax.grid(alpha=0.25)
        ax.legend(fontsize=8)
    return _png(fig)


def _training_section(runs: Json) -> str:
    trained = {str(k): v for k, v in _dict(runs.get("trained")).items() if isinstance(v, dict)}
    if not trained:
        return ""
    rows = [[f"<code>{_e(label)}</code>", _e(r.get("images", "—")), _e(r.get("epochs", "—")),
             _e(_fmt(r.get("seconds_per_epoch"))), _e(_fmt(r.get("images_per_second"))),
             _e(_fmt(r.get("loss")))] for label, r in trained.items()]
    uri = _loss_plot(trained)
    fig = _figure_html(uri, "Training loss (means over consecutive batches) against epochs.") \
        if uri else ""
    return ("<section id='training'><h2>Training runs</h2>" + fig +
            _table(["Run", "Images", "Epochs", "Seconds / epoch", "Images / s", "Final loss"],
                   rows, "runs") + "</section>")


_FOOTER = """<footer><h2>How to read the verdicts</h2><ul><li>Each check is decided by one
<b>governing metric</b> against a threshold with a written rationale; intervals are 95%
intervals from resampling half the images, centred on the value, pooled over training
seeds.</li><li><b>PASS</b>: the value and its whole interval lie
on the good side of the threshold; <b>FAIL</b>: all on the bad side; <b>WARN</b>: the interval
straddles the threshold, so this budget cannot tell; <b>SKIP</b>: the check does not apply to
this model or data (the reason says what it needs), so it was not run.</li><li>The flag
<b>uninformative</b>: the latents carry too little about the data (collapsed, or no better than
chance at recovering the truth) for the check to mean anything. A constant encoder is perfectly
invariant, so such a PASS is reported as WARN. So is a ratio whose reference has not learned
(a lookup table, an evil twin's baseline, whose latents give its decoder far less than the other
side's), never PASS or FAIL. The flag <b>no_fit</b>: the model's own decoder makes no
measurable use of the latents, the guard that needs no ground truth.</li><li>The budget
sets how far training went, and verdicts depend on it: <code>standard</code> (the default) is
informative on small images in minutes on a CPU, <code>smoke</code> is for test suites only;
re-run with <code>--budget full</code> (the paper's training, for a GPU) and several seeds
before drawing conclusions.</li></ul></footer>"""

_CSS = """
body{font:15px/1.5 system-ui,sans-serif;color:#1d1d1f;max-width:1180px;margin:0 auto;padding:0 2rem}
h1{font-size:1.7rem;margin:.2rem 0 .4rem}h3{font-size:1rem;margin:.3rem 0}h4{margin:1rem 0 .4rem}
h2{font-size:1.3rem;margin:2.2rem 0 .6rem;padding-bottom:.25rem;border-bottom:2px solid #e4e4e8}
.lead{color:#444;max-width:60rem}.facts{background:#f6f7f9;padding:.6rem 1.2rem;border-radius:8px}
.facts ul{margin:0 0 .4rem;padding-left:1.1rem}.chips{display:flex;flex-wrap:wrap;gap:.3rem 1.8rem}
.chips span{color:#666;margin-right:.45rem}.scroll{overflow-x:auto;margin:.6rem 0}
table{border-collapse:collapse;width:100%;font-size:14px}th{background:#f6f7f9;white-space:nowrap}
th,td{border-bottom:1px solid #e4e4e8;padding:.35rem .55rem;text-align:left;vertical-align:top}
tbody tr:nth-child(even){background:#fbfbfc}table.metrics{width:auto;min-width:50%}
table.metrics td,table.profile td:nth-child(2),.nw{white-space:nowrap}
table.profile td:first-child{overflow-wrap:anywhere;min-width:8rem}
table.profile td:nth-child(3){min-width:12rem}table.profile td:last-child{width:55%}
.flag{display:inline-block;background:#fff3cd;color:#7a5200;border-radius:4px;font-size:.8rem;
 padding:0 .35rem;margin-right:.2rem}
.badge{display:inline-block;color:#fff;font-weight:700;font-size:.8rem;padding:.1rem .5rem;
 border-radius:999px;vertical-align:middle}h2 .badge{font-size:.75rem;margin-left:.4rem}
.meta{color:#555;margin:.1rem 0}.explanation{font-size:1.05rem}.note{color:#666}dt{color:#555}
dl{display:grid;grid-template-columns:max-content auto;gap:.1rem 1rem;margin:.6rem 0;font-size:14px}
dd{margin:0}.body{display:flex;flex-wrap:wrap;align-items:flex-start;gap:0 2rem}
.tables{flex:1 1 500px;min-width:min-content}figure{margin:1rem auto;text-align:center}
figure img{max-width:100%;height:auto}figcaption{color:#555;font-size:13px;margin:.3rem auto 0}
code{font:13px ui-monospace,monospace;background:#f3f3f5;padding:0 .2rem;border-radius:3px}
a{color:#1f5fbf}.top{text-align:right;font-size:13px}footer{margin-top:2.5rem;font-size:14px}
.skip{color:#57606a}"""
