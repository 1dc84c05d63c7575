"""The report page: one self-contained HTML file drawn from a report directory.

:func:`render_html` reads ``report.json`` and its arrays (:func:`ampcheck.report.load_report`)
and writes ``report.html``: the header (models, data, the runs a report describes), the
amortization profile, a section per check with its metrics, details and figures
(:mod:`ampcheck.render.figures`), the training runs and a reading guide. Images are embedded
as PNG data URIs and nothing is fetched, so the page can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from .. import __version__
from .. import adapters as _guests  # noqa: F401  (each registers what the page says of its runs)
from ..display import RUN_FACTS, RunFacts, number_text
from ..files import atomic_path
from ..report import REPORT_HTML, load_report
from ..results import bound_text, result_keys
from .epochs import epochs_section
from .figures import figures, loss_plot
from .plotting import Arrays, Json
from .text import (
    as_dict,
    as_list,
    duration_text,
    escape,
    interval_text,
    parts_html,
    table,
)

_VERDICT_COLOURS = {"PASS": "#1a7f37", "WARN": "#b06d00", "FAIL": "#c62828",
                    "SKIP": "#6e7781"}  # grey: the check did not run


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
    checks = [c for c in as_list(report.get("checks")) if isinstance(c, dict)]
    anchors = _anchors(checks)
    keys = result_keys([(str(c.get("check")), str(c.get("model"))) for c in checks])
    sections = "".join(_check_section(c, arrays.get(k, {}), a)
                       for c, a, k in zip(checks, anchors, keys, strict=True))
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
            "content='width=device-width, initial-scale=1'><title>ampcheck amortization report"
            f"</title><style>{_CSS}</style></head><body>{_header(report, checks)}"
            f"{epochs_section(report.get('over_epochs'), checks, _figure_html)}"
            f"<h2 id='profile'>Amortization profile</h2>{_profile_table(checks, anchors)}"
            f"{sections}{_training_section(as_dict(report.get('runs')))}{_FOOTER}</body></html>\n")


def _bound(t: Json) -> str:
    """``≤ 0.2`` or ``≥ 0.8``: which side of the threshold passes."""
    return bound_text(t, symbols=True, number=number_text)


def _skipped(c: Json) -> bool:
    """A check that did not run (verdict ``SKIP``): no metrics, no threshold, no plots."""
    return c.get("verdict") == "SKIP"


def _badge(verdict: Any) -> str:
    colour = _VERDICT_COLOURS.get(str(verdict), "#666")
    return f"<span class='badge' style='background:{colour}'>{escape(verdict)}</span>"


def _anchors(checks: list[Json]) -> list[str]:
    """One unique, id-safe anchor per check."""
    slugs = ["check-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(c.get("check", ""))) for c in checks]
    return [s if slugs.index(s) == i else f"{s}-{i}" for i, s in enumerate(slugs)]



# ----------------------------------------------------------------------------- page parts

def _header(report: Json, checks: list[Json]) -> str:
    runs, data = as_dict(report.get("runs")), as_dict(report.get("dataset"))
    models = sorted({str(c["model"]) for c in checks if c.get("model") is not None})
    names = {"n": "images", "D": "box (px)", "apix": "Å/pixel", "snr": "SNR"}
    described = [fn(run) for key, fn in RUN_FACTS.items() if (run := as_dict(runs.get(key)))]
    shown = set().union(*(d.shown for d in described))  # the data facts their tables show
    facts = [(names.get(k, k), v) for k, v in data.items()
             if not isinstance(v, dict | list) and k not in shown]
    facts += [("budget", runs.get("budget")), ("training seeds", runs.get("seeds")),
              ("total time", duration_text(runs.get("seconds"))), ("ampcheck", __version__)]
    chips = "".join(f"<div><span>{escape(k)}</span>{escape(v)}</div>" for k, v in facts
                    if v is not None)
    models_li = "".join(f"<li><code>{escape(m)}</code></li>" for m in models) or "<li>—</li>"
    return ("<header><h1>ampcheck: does the encoder really amortize inference?</h1><p class="
            "'lead'>Quantitative checks of whether a VAE's encoder has learned an inference map "
            "that generalises: invariant to nuisance transforms, no better at memorising "
            "arbitrary inputs than at encoding, as good as free per-image latents, and as good "
            "on held-out images (after a cryo-EM case study of cryoDRGN).</p><div class='facts'>"
            f"<h3>Models</h3><ul>{models_li}</ul>{''.join(map(_run_facts, described))}"
            f"<h3>Data and run</h3><div class='chips'>{chips}</div></div></header>")


def _run_facts(facts: RunFacts) -> str:
    """What the page says of one run a report describes: its facts, then its files."""
    pairs = "".join(f"<dt>{escape(k)}</dt><dd>{parts_html(v)}</dd>" for k, v in facts.facts)
    rows = [[parts_html(cell) for cell in row] for row in facts.files]
    files = table([escape(h) for h in facts.files_head], rows, "files") if rows else ""
    return f"<h3>{escape(facts.title)}</h3><dl>{pairs}</dl>{files}"


def _profile_table(checks: list[Json], anchors: list[str], linked: bool = True) -> str:
    """One row per check: the check (and model), its verdict, the governing metric with its
    interval and the side of the threshold that passes, and what the verdict means, its flags
    first. Four columns, the last one wrapping, so that nothing scrolls sideways at 800 px."""
    if not checks:
        return "<p class='note'>This report holds no check results.</p>"
    rows = []
    several = len({str(c.get("model")) for c in checks}) > 1  # name each row's model then
    for c, a in zip(checks, anchors, strict=True):
        t, name = as_dict(c.get("threshold")), escape(c.get("check", "?"))
        model = f"<br><small>{escape(c.get('model'))}</small>" if several else ""
        check = (f"<a href='#{a}'>{name}</a>" if linked else name) + model
        if _skipped(c):  # not run: the reason is the whole story
            rows.append([check, _badge("SKIP"), "—",
                         f"<span class='skip'>{escape(c.get('explanation', ''))}</span>"])
            continue
        metric = escape(t.get("metric", "?"))
        m = as_dict(as_dict(c.get("metrics")).get(t.get("metric")))
        ci = interval_text(m)  # spans keep "name = value" and "[lo, hi]" whole when a cell wraps
        value = escape(number_text(m.get("value")))
        governing = (f"<span class='nw'><code>{metric}</code> = {value}"
                     "</span>" + ("" if ci == "—" else f" <span class='nw'>{escape(ci)}</span>")
                     + f"<br><small class='nw'>pass when {escape(_bound(t))}</small>")
        flags = "".join(f"<span class='flag'>{escape(f)}</span> " for f in as_list(c.get("flags")))
        rows.append([check, _badge(c.get("verdict")), governing,
                     flags + escape(c.get("explanation", ""))])
    return table(["Check", "Verdict", "Governing metric [95% CI]", "What it means"], rows,
                  "profile")


def _metrics_table(c: Json) -> str:
    governing = as_dict(c.get("threshold")).get("metric")
    star = " <b title='decides the verdict'>★</b>"
    rows = [[f"<code>{escape(name)}</code>" + (star if name == governing else ""),
             escape(number_text(m.get("value"))), escape(interval_text(m)),
             "higher ↑" if m.get("higher_is_better") else "lower ↓"]
            for name, m in ((n, as_dict(m)) for n, m in as_dict(c.get("metrics")).items())]
    return table(["Metric (★ decides)", "Value", "95% interval", "Better"], rows, "metrics")


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
            items.append((k, ", ".join(number_text(x) if isinstance(x, float) else str(x)
                                       for x in v)))
        elif isinstance(v, dict | list):
            text = json.dumps(v, default=str)
            items.append((k, text if len(text) < 300 else text[:299] + "…"))
        else:
            items.append((k, number_text(v) if isinstance(v, float) else v))
    pairs = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items)
    return (f"<dl>{pairs}</dl>" if pairs else "") + profile


def _check_section(c: Json, arrays: Arrays, anchor: str) -> str:
    if _skipped(c):
        return _skipped_section(c, anchor)
    t, flags = as_dict(c.get("threshold")), ", ".join(map(str, as_list(c.get("flags"))))
    figs = "".join(_figure_html(uri, cap) for uri, cap in figures(arrays, c))
    tables = _metrics_table(c) + _details(as_dict(c.get("details")))
    meta = f"model <code>{escape(c.get('model'))}</code> · seeds " \
           f"{escape(', '.join(map(str, as_list(c.get('seeds')))))}" + \
           (f" · flags <b>{escape(flags)}</b>" if flags else "")
    return (f"<section id='{anchor}'><h2>{escape(c.get('check', '?'))} {_badge(c.get('verdict'))}"
            f"</h2><p class='meta'>{meta}</p><p class='explanation'>"
            f"{escape(c.get('explanation', ''))}</p><p><b>Pass when {escape(t.get('metric', '?'))} "
            f"{escape(_bound(t))}.</b> {escape(t.get('rationale', ''))}</p><div class='body'>"
            f"<div class='tables'>{tables}</div>{figs}</div>"
            "<p class='top'><a href='#profile'>↑ profile</a></p></section>")


def _skipped_section(c: Json, anchor: str) -> str:
    """A check that did not run: its badge, model and reason (no metrics, no plots)."""
    details = _details({k: v for k, v in as_dict(c.get("details")).items() if k == "profile"})
    return (f"<section id='{anchor}'><h2>{escape(c.get('check', '?'))} {_badge('SKIP')}</h2>"
            f"<p class='meta'>model <code>{escape(c.get('model'))}</code> · not run</p>"
            f"<p class='explanation skip'>Skipped: {escape(c.get('explanation', ''))}</p>{details}"
            "<p class='top'><a href='#profile'>↑ profile</a></p></section>")


def _figure_html(uri: str, caption: str) -> str:
    """A figure no wider than its PNG (width read from the PNG header) that may shrink a
    little, so that a one-panel figure sits beside the metrics table on a laptop screen."""
    width = int.from_bytes(base64.b64decode(uri.split(",", 1)[1][:32])[16:20], "big")
    return (f"<figure style='flex:1 1 {width * 3 // 4}px;max-width:{width}px'>"
            f"<img src='{uri}' width='{width}' "
            f"alt='{escape(caption)}'><figcaption>{escape(caption)}</figcaption></figure>")


def _training_section(runs: Json) -> str:
    trained = {str(k): v for k, v in as_dict(runs.get("trained")).items() if isinstance(v, dict)}
    if not trained:
        return ""
    rows = [[f"<code>{escape(label)}</code>", escape(r.get("images", "—")),
             escape(r.get("epochs", "—")), escape(number_text(r.get("seconds_per_epoch"))),
             escape(number_text(r.get("images_per_second"))), escape(number_text(r.get("loss")))]
            for label, r in trained.items()]
    uri = loss_plot(trained)
    fig = _figure_html(uri, "Training loss (means over consecutive batches) against epochs.") \
        if uri else ""
    return ("<section id='training'><h2>Training runs</h2>" + fig +
            table(["Run", "Images", "Epochs", "Seconds / epoch", "Images / s", "Final loss"],
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
table.epochs{font-size:13px}table.epochs th{white-space:normal;vertical-align:bottom}
table.epochs th,table.epochs td{padding:.3rem .4rem}table.epochs small{font-size:11px}
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
