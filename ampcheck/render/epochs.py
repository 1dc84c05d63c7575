"""The page's section on the profile over epochs: one figure of every per-epoch metric and a
table of the same numbers, from the ``over_epochs`` block of ``report.json``.

Each panel is one measure against epoch, training and held-out images side by side (blue and
orange), its intervals as bands, the recommended epoch as a dashed line, and the paper's
threshold as a grey line where the measure has one (the threshold of the check it comes from,
as the report's checks record it, else the default).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from ..display import number_text
from ..epochs import metric_columns
from ..thresholds import DEFAULT_THRESHOLDS
from .figures import SIDE_COLOURS
from .plotting import Json, panels, png
from .text import as_dict, as_list, escape, interval_text, table

#: Panels: ``(title, metric names (a {} for both sides, or a tuple of names), the check whose
#: threshold is drawn)`` (the rotation check's threshold is the shift check's, 0.2).
PANELS = (
    ("amortization gap fraction", "gap_fraction[{}]", "amortization_gap"),
    ("held-out / training reconstruction loss", "loss_ratio", None),
    ("latent displacement under a transform", ("shift_displacement", "rotation_displacement"),
     "shift_invariance"),
    ("latent movement since the previous epoch", "latent_movement[{}]", None),
    ("truth recovery", "*[{}]", None),
    ("AUC-FSC of decoded volumes vs the true maps", "volume_auc_fsc[{}]", None),
)


def _series(block: Json, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xs, vs, los, his = [], [], [], []
    for ep in as_list(block.get("epochs")):
        m = as_dict(as_dict(ep.get("metrics")).get(name))
        if m.get("value") is None:
            continue
        xs.append(ep["epoch"])
        vs.append(m["value"])
        los.append(np.nan if m.get("lo") is None else m["lo"])
        his.append(np.nan if m.get("hi") is None else m["hi"])
    return tuple(np.asarray(a, dtype=float) for a in (xs, vs, los, his))


def _names(block: Json, pattern: str) -> list[tuple[str, str]]:
    """The metrics of a panel, ``(name, label)``."""
    cols = [n for n, _ in metric_columns(block)]
    if isinstance(pattern, tuple):
        return [(n, {"shift_displacement": "1-px shift", "rotation_displacement":
                     "90° rotation"}.get(n, n)) for n in pattern if n in cols]
    if "{}" not in pattern:
        return [(pattern, "")] if pattern in cols else []
    out = []
    for side, label in (("train", "training"), ("heldout", "held-out")):
        for n in cols:
            if n.endswith(f"[{side}]") and (n == pattern.format(side) or (
                    pattern.startswith("*") and n.split("[")[0] not in
                    ("gap_fraction", "latent_movement", "volume_auc_fsc", "recon"))):
                out.append((n, label))
    return out


def _threshold(checks: list[Json], check: str | None) -> float | None:
    if check is None:
        return None
    for c in checks:
        t = as_dict(c.get("threshold"))
        if c.get("check") == check and isinstance(t.get("value"), int | float):
            return float(t["value"])
    t = DEFAULT_THRESHOLDS.get(check)
    return None if t is None else float(t.value)


def epochs_plot(block: Json, checks: list[Json]) -> str | None:
    """The figure (a PNG data URI) of every per-epoch metric; None without epochs."""
    drawn = [(title, names, check) for title, pattern, check in PANELS
             if (names := _names(block, pattern))]
    if not drawn:
        return None
    rec = block.get("recommended_epoch")
    fig, axes = panels(len(drawn), 4.2, 3.0)
    for ax in fig.axes[len(drawn):]:  # the grid's unused cells
        ax.set_axis_off()
    for ax, (title, names, check) in zip(axes, drawn, strict=True):
        for i, (name, label) in enumerate(names):
            x, v, lo, hi = _series(block, name)
            colour = SIDE_COLOURS[i % 2] if label else "0.2"
            if label in ("1-px shift", "90° rotation"):
                colour = ("#6a3d9a", "#33a02c")[i % 2]  # not training/held-out colours
            ax.plot(x, v, marker="o", ms=3, lw=1.4, color=colour,
                    label=label or name.replace("_", " "))
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.fill_between(x[ok], lo[ok], hi[ok], color=colour, alpha=0.2, lw=0)
        if "[" in names[0][0] and names[0][0].split("[")[0] not in ("gap_fraction",):
            title = f"{title} ({names[0][0].split('[')[0]})" if title == "truth recovery" \
                else title
        t = _threshold(checks, check)
        if t is not None:
            ax.axhline(t, color="0.5", lw=1, ls=":", label=f"threshold {t:g}")
        if names[0][0] == "loss_ratio":
            ax.axhline(1.0, color="0.5", lw=1, ls=":", label="equal losses")
        if rec is not None:
            ax.axvline(rec, color="#2e7d32", lw=1.2, ls="--", label=f"recommended ({rec})")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 2.25
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
        ax.legend(fontsize=6.5)
    return png(fig)


def epochs_section(block: Any, checks: list[Json], figure_html) -> str:
    """The section of the page: the recommended epoch and why, the figure, the table
    (value and interval per metric), the epochs skipped; empty without a block."""
    block = as_dict(block)
    if not as_list(block.get("epochs")):
        return ""
    cols = metric_columns(block)
    rec = block.get("recommended_epoch")
    rows = []
    for ep in as_list(block.get("epochs")):
        m = as_dict(ep.get("metrics"))
        cells = [f"<b>{escape(ep['epoch'])} ★</b>" if ep.get("epoch") == rec
                 else escape(ep.get("epoch"))]
        for n, _ in cols:
            d = as_dict(m.get(n))
            ci = interval_text(d)
            cells.append(escape(number_text(d.get("value")))
                         + ("" if ci == "—" else f"<br><small>{escape(ci)}</small>"))
        rows.append(cells)
    uri = epochs_plot(block, checks)
    fig = figure_html(uri, "Every per-epoch measure against epoch: training (blue) and "
                           "held-out (orange) images, 95% intervals as bands, the recommended "
                           "epoch dashed, the paper's thresholds dotted.") if uri else ""
    skipped = "".join(f"<li>epoch {escape(s.get('epoch'))}: {escape(s.get('reason'))}</li>"
                      for s in as_list(block.get("skipped")) if isinstance(s, dict))
    last = as_list(block.get("epochs"))[-1].get("epoch")
    reason = str(block.get("reason", ""))
    reason = reason[:1].upper() + reason[1:]
    return ("<section id='over-epochs'><h2>Over training epochs</h2>"
            f"<p class='explanation'>Recommended epoch: <b>{escape(rec)}</b>. "
            f"{escape(reason)}</p>"
            f"<p class='meta'>The rule: {escape(block.get('rule', ''))}. The checks below are "
            f"those of epoch {escape(last)}, the last measured.</p>{fig}"
            + table(["Epoch", *(escape(label) for _, label in cols)], rows, "epochs")
            + (f"<p>Skipped:</p><ul>{skipped}</ul>" if skipped else "") + "</section>")
