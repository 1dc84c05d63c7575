"""The figures of the page: each check's, as it declares them, and the training losses.

A check's figures are its own declaration (``CHECKS[name].figures``, a tuple of
:class:`~ampcheck.display.FigureSpec`), never guessed from its arrays' names; each kind of
:data:`~ampcheck.display.KINDS` is one drawing function here, ``(spec, arrays, check) ->
(data URI, caption)``, or None where the arrays do not allow it (an older or partial report).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..checks import CHECKS
from ..display import FigureSpec, number_text
from .plotting import (
    GREY,
    MAX_POINTS,
    SEED,
    Arrays,
    Colour,
    Json,
    embed,
    latents,
    legend,
    panels,
    png,
    style,
    subsample,
    truth,
    vector,
    what,
)
from .text import as_dict, as_list, metric_text

Plot = tuple[str, str] | None  # (PNG data URI, caption)

MAX_SLICE_ROWS = 6
LINK = "#7b3294"  # the purple of the paper's Figs 10-11 lines joining an image to its copy
SIDE_COLOURS = ("#4c72b0", "#dd8452")  # training, held-out


def declared(check: str) -> tuple[FigureSpec, ...]:
    """The figures registered check ``check`` declares (none for a check not registered)."""
    spec = CHECKS.get(check)
    return spec.figures if spec is not None else ()


def figures(a: Arrays, c: Json, check: str | None = None) -> list[tuple[str, str]]:
    """``(data URI, caption)`` of each figure that check ``c`` (its result as JSON, named
    ``check`` or by its ``check``) declares and its arrays ``a`` allow, in order."""
    out = []
    for spec in declared(str(c.get("check")) if check is None else check):
        if spec.kind == "inner":
            out += inner(spec, a, c)
        elif (fig := DRAW[spec.kind](spec, a, c)) is not None:
            out.append(fig)
    return out


def fill(template: str, metrics: Json, **fields: Any) -> str:
    """``template`` with each ``{name}`` filled in: a field the kind gives, else the metric of
    that name as ``value [lo, hi]``."""
    return re.sub(r"\{([^{}]+)\}", lambda m: str(fields[m.group(1)]) if m.group(1) in fields
                  else metric_text(metrics, m.group(1)), template)


def _bracket(name: str) -> str:
    """``[train]`` of ``mu[train]``: what tells a side's arrays apart."""
    return name[name.index("["):] if "[" in name else ""


def pairs(spec: FigureSpec, a: Arrays, c: Json) -> Plot:
    """Figs 10-11 of the paper: each image joined to its transformed copy, a panel each."""
    metrics, model = as_dict(c.get("metrics")), str(c.get("model"))
    head, _, tail = spec.arrays[1].partition("*")
    mu = latents(a.get(spec.arrays[0]))
    moved = {k[len(head):len(k) - len(tail)]: m for k, v in a.items()
             if mu is not None and k.startswith(head) and k.endswith(tail)
             and len(k) >= len(head) + len(tail)
             and (m := latents(v)) is not None and m.shape == mu.shape}
    if not moved:
        return None
    idx = subsample(len(mu))
    emb, method = embed([mu[idx], *(m[idx] for m in moved.values())])
    colour = Colour([truth(a, "", idx, len(mu))], model)
    fig, axes = panels(len(moved))
    size = float(np.clip(3000 / len(idx), 5, 14))  # smaller markers where there are many
    metric = spec.metrics[0] if spec.metrics else None
    for ax, name, xy in zip(axes, moved, emb[1:], strict=True):
        ax.add_collection(LineCollection(np.stack([emb[0], xy], axis=1), colors=LINK,
                                         linewidths=0.5, alpha=0.3))
        points = ax.scatter(*emb[0].T, s=size, marker="o", **colour.kw(0))
        ax.scatter(*xy.T, s=size * 1.3, marker="x", linewidths=0.7, **colour.kw(0))
        shift = "—"
        if metric is not None:  # the copy's own metric, else the check's (the governing one)
            key = f"{metric}[{name}]"
            shift = metric_text(metrics, key if key in metrics else metric)
        style(ax, method, name + ("" if shift == "—" else f": {metric} {shift}"))
    legend(fig, [("original image", {"marker": "o", "ls": "", "color": GREY}),
                 ("transformed copy", {"marker": "x", "ls": "", "color": GREY}),
                 ("image ↔ its copy", {"color": LINK})])
    colour.colourbar(fig, points, axes)
    joint = what(method, mu.shape[1], ", fitted jointly on the originals and their copies")
    return png(fig), fill(spec.caption, metrics, embedding=joint, n=len(idx))


def coloured(spec: FigureSpec, a: Arrays, c: Json) -> Plot:
    """One latent map, a panel per per-image variable, each coloured by its variable."""
    metrics = as_dict(c.get("metrics"))
    head, _, tail = spec.arrays[1].partition("*")
    mu = latents(a.get(spec.arrays[0]))
    values = {k[len(head):len(k) - len(tail)]: w for k, v in a.items()
              if mu is not None and k.startswith(head) and k.endswith(tail)
              and len(k) >= len(head) + len(tail) and (w := vector(v)) is not None
              and len(w) == len(mu)}
    if not values:
        return None
    idx = subsample(len(mu))
    (xy,), method = embed([mu[idx]])
    fig, axes = panels(len(values))
    metric = spec.metrics[0] if spec.metrics else None
    for ax, (name, v) in zip(axes, values.items(), strict=True):
        points = ax.scatter(*xy.T, s=10, c=v[idx], cmap="twilight" if name == "in_plane"
                            else "viridis")
        fig.colorbar(points, ax=ax, shrink=0.85, pad=0.02)
        key = f"{metric}[{name}]"
        title = name if metric is None or key not in metrics else \
            f"{name}: {metric} {metric_text(metrics, key)}"
        style(ax, method, title)
    return png(fig), fill(spec.caption, metrics, embedding=what(method, mu.shape[1]),
                          n=len(idx))


def draws(spec: FigureSpec, a: Arrays, c: Json) -> Plot:
    """Each item's draws joined to their mean, in one embedding (the noise draws of one
    particle, as the invariance figures join an image to its copy)."""
    metrics, model = as_dict(c.get("metrics")), str(c.get("model"))
    x = a.get(spec.arrays[0])
    if x is None or np.ndim(x) != 3 or not np.size(x):
        return None
    x = np.asarray(x, dtype=float)
    n, k, d = x.shape
    centre = x.mean(axis=1)
    emb, method = embed([x.reshape(n * k, d), centre])
    pts, mid = emb[0].reshape(n, k, 2), emb[1]
    colour = Colour([truth(a, "", np.arange(n), n)], model)
    fig, (ax,) = panels(1)
    segments = np.stack([np.repeat(mid, k, axis=0), pts.reshape(n * k, 2)], axis=1)
    ax.add_collection(LineCollection(segments, colors=LINK, linewidths=0.5, alpha=0.4))
    kw = colour.kw(0)
    if "c" in kw:
        ax.scatter(*pts.reshape(n * k, 2).T, s=12, marker="x", linewidths=0.7,
                   **{**kw, "c": np.repeat(kw["c"], k)})
    else:
        ax.scatter(*pts.reshape(n * k, 2).T, s=12, marker="x", linewidths=0.7, **kw)
    points = ax.scatter(*mid.T, s=30, marker="o", edgecolors="black", linewidths=0.5, **kw)
    style(ax, method, what(method, d, ", fitted jointly on the draws and their means"))
    legend(fig, [("noise draw", {"marker": "x", "ls": "", "color": GREY}),
                 ("the particle's mean", {"marker": "o", "ls": "", "color": GREY}),
                 ("draw ↔ mean", {"color": LINK})])
    colour.colourbar(fig, points, ax)
    return png(fig), fill(spec.caption, metrics, embedding=what(method, d), n=n, k=k)


def maps(spec: FigureSpec, a: Arrays, c: Json) -> Plot:
    """Latent sets side by side (the encoder's beside the lookup table's), each embedded on
    its own."""
    metrics, model = as_dict(c.get("metrics")), str(c.get("model"))
    blocks = [(label, latents(a.get(k))) for k, label in
              zip(spec.arrays, spec.labels or spec.arrays, strict=True)]
    if not blocks or any(mu is None for _, mu in blocks):
        return None
    fig, axes = panels(len(blocks))
    for ax, (label, mu) in zip(axes, blocks, strict=True):
        idx = subsample(len(mu))
        (xy,), method = embed([mu[idx]])
        colour = Colour([truth(a, "", idx, len(mu))], model)
        points = ax.scatter(*xy.T, s=10, **colour.kw(0))
        style(ax, method, f"{label}: {what(method, mu.shape[1])}")
    colour.colourbar(fig, points, axes)
    return png(fig), fill(spec.caption, metrics)


def slices(spec: FigureSpec, a: Arrays, c: Json) -> Plot:
    """Central sections of volumes: a row per image (from low to high ``z_continuous``), a
    column per source."""
    vols = [(label, np.asarray(a[k], dtype=float)) for k, label in
            zip(spec.arrays, spec.labels or spec.arrays, strict=True) if np.ndim(a.get(k)) == 4]
    if not vols or len({v.shape[1:] for _, v in vols}) != 1:
        return None
    n = min(len(v) for _, v in vols)
    z = np.ravel(a.get("z_continuous", [])).astype(float)
    z = z if len(z) == n else np.full(n, np.nan)
    order = np.argsort(z[:MAX_SLICE_ROWS], kind="stable")  # rows from low to high z
    k, sections = len(order), "zyx"[:vols[0][1].shape[1]]
    if not k or not sections:
        return None
    fig = Figure(figsize=(1.15 * len(vols) * len(sections) + 0.9, 1.2 * k + 0.7),
                 layout="constrained")
    for s, sub in enumerate(fig.subfigures(1, len(sections), squeeze=False)[0]):
        sub.suptitle(f"central {sections[s]}-section", fontsize=10)
        axes = sub.subplots(k, len(vols), squeeze=False)
        for row, col in np.ndindex(k, len(vols)):
            (label, v), i = vols[col], order[row]
            finite = v[i][np.isfinite(v[i])]
            lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0, 1)  # per volume
            ax = axes[row, col]
            ax.imshow(v[i, s], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=9)
            if s == col == 0:
                ax.set_ylabel(f"z = {z[i]:.2f}" if np.isfinite(z[i]) else f"image {i + 1}")
    return png(fig), fill(spec.caption, as_dict(c.get("metrics")))


def joint_map(spec: FigureSpec, a: Arrays, c: Json) -> Plot:
    """Training and held-out images in one latent map (distinct markers)."""
    (tk, hk), (tl, hl) = spec.arrays[:2], (spec.labels or spec.arrays)[:2]
    train, held = latents(a.get(tk)), latents(a.get(hk))
    if train is None or held is None or train.shape[1] != held.shape[1]:
        return None
    it, ih = subsample(len(train)), subsample(len(held), MAX_POINTS // 2)
    (xt, xh), method = embed([train[it], held[ih]])
    colour = Colour([truth(a, _bracket(tk), it, len(train)),
                     truth(a, _bracket(hk), ih, len(held))], str(c.get("model")))
    fig, (ax,) = panels(1)
    ax.scatter(*xt.T, s=10, marker="o", alpha=0.7, **colour.kw(0))
    points = ax.scatter(*xh.T, s=34, marker="^", edgecolors="black", linewidths=0.5,
                        **colour.kw(1))
    legend(fig, [(f"{tl} ({len(it)})", {"marker": "o", "ls": "", "color": GREY}),
                 (f"{hl} ({len(ih)})", {"marker": "^", "ls": "", "color": GREY,
                                        "markeredgecolor": "black"})])
    style(ax, method, what(method, train.shape[1], " (one fit)"))
    colour.colourbar(fig, points, ax)
    return png(fig), fill(spec.caption, as_dict(c.get("metrics")))


def gap(spec: FigureSpec, a: Arrays, c: Json) -> Plot:
    """The amortization gap image by image, training against held-out images: each image's
    gap divided by its side's mean gain (so a side's mean is its fraction, ``metrics[0]``),
    or the raw gap when a side gained nothing; quartile boxes, means, the threshold."""
    metrics, threshold = as_dict(c.get("metrics")), as_dict(c.get("threshold"))
    names, labels = spec.arrays[:2], (spec.labels or spec.arrays)[:2]
    gaps = [vector(a.get(k)) for k in names]
    if any(g is None or not np.isfinite(g).any() for g in gaps):
        return None  # no held-out images: nothing to compare
    scale = []
    for k, g in zip(names, gaps, strict=True):
        gain = vector(a.get("gain" + _bracket(k)))
        ok = gain is not None and len(gain) == len(g) and np.isfinite(gain).any()
        scale.append(float(np.nanmean(gain)) if ok else float("nan"))
    normalised = all(np.isfinite(v) and v > 0 for v in scale)
    ys = [g / s if normalised else g for g, s in zip(gaps, scale, strict=True)]
    ys = [y[np.isfinite(y)] for y in ys]
    fig = Figure(figsize=(5.8, 4.4), layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(SEED)
    for i, (y, colour) in enumerate(zip(ys, SIDE_COLOURS, strict=True)):
        ax.boxplot([y], positions=[i], widths=0.5, showfliers=False, whis=(0, 100),
                   medianprops={"color": "black", "lw": 1.5},
                   boxprops={"color": colour}, whiskerprops={"color": colour},
                   capprops={"color": colour})
        idx = subsample(len(y))
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(idx)), y[idx], s=16, color=colour,
                   alpha=0.6, edgecolors="none", zorder=3)
        ax.scatter([i + 0.33], [y.mean()], marker="D", s=40, color="black", zorder=4)
        ax.annotate(number_text(float(y.mean())), (i + 0.33, y.mean()), xytext=(0, 7),
                    textcoords="offset points", ha="center", fontsize=8.5)
    t = threshold.get("value")
    fraction = spec.metrics[0] if spec.metrics else None
    if normalised:
        ax.axhline(0, color=GREY, lw=0.8)
        ax.axhline(1, color=GREY, lw=0.8, ls=":")
        if isinstance(t, int | float) and threshold.get("metric") == fraction:
            ax.axhline(t, color="#c62828", lw=1.2, ls="--")
    ax.set_xticks(range(len(ys)), [f"{label}\n({len(y)} images)"
                                   for label, y in zip(labels, ys, strict=True)])
    ax.set_xlim(-0.6, len(ys) - 0.4)
    ax.set_ylabel(f"gap / its side's mean gain (as {fraction})" if normalised
                  else "gap (ELBO units)")
    ax.set_title("amortization gap per image", fontsize=10)
    ax.grid(alpha=0.25, axis="y")
    entries = [("image", {"marker": "o", "ls": "", "color": GREY}),
               ("mean", {"marker": "D", "ls": "", "color": "black"}),
               ("median, quartiles, range", {"marker": "s", "ls": "", "mfc": "none",
                                             "color": "black"})]
    if normalised and isinstance(t, int | float):
        entries.append((f"threshold {number_text(t)}", {"color": "#c62828", "ls": "--"}))
    fig.legend([Line2D([], [], **kw) for _, kw in entries], [e for e, _ in entries],
               loc="outside lower center", ncols=2, fontsize=8.5, frameon=False)
    quoted = [f"{fraction}{_bracket(k)} {metric_text(metrics, f'{fraction}{_bracket(k)}')}"
              for k in names]
    return png(fig), _gap_caption(ys, quoted, t if normalised else None, normalised)


def _gap_caption(ys: list[np.ndarray], quoted: list[str], t: Any, normalised: bool) -> str:
    """What the gap figure shows, in words, from its numbers (``ys``: training, held-out;
    ``quoted``: each side's fraction, named, as ``name value [lo, hi]``)."""
    if not normalised:
        return ("Each point is one image's amortization gap (ELBO units): what optimising its "
                "own posterior adds to the encoder's. Per-image optimisation gained nothing "
                "over one constant posterior on at least one side, so the gaps are not "
                "normalised; training and held-out images are on separate strips.")
    text = ("Each point is one image's amortization gap (what optimising its own posterior "
            "adds to the encoder's ELBO) divided by the mean over its side of what the "
            "optimum gains over one constant posterior: 0 is the image's own optimum, 1 (dotted) "
            "no better than a constant. Boxes: median and quartiles; diamonds: means, which are "
            f"{quoted[0]} and {quoted[1]}")
    m = [float(y.mean()) for y in ys]
    if not isinstance(t, int | float):
        return text + "."
    text += f"; dashed: the threshold {number_text(t)}. "
    train_over, held_over = (v > t for v in m)
    if held_over and not train_over:
        return text + ("Only the held-out images' mean lies above the threshold: the encoder "
                       "infers well the images it trained on and not new ones, as a lookup "
                       "table of its training set would.")
    if held_over and train_over:
        near = " (means near 1: on average no better than one constant posterior)" \
            if min(m) > 0.8 else ""
        return text + ("Both means lie above the threshold: the encoder falls short of each "
                       f"image's optimum even on the images it trained on{near}.")
    if train_over:
        return text + ("The training images' mean lies above the threshold and the held-out "
                       "images' below it.")
    return text + ("Both means lie within the threshold: the encoder's inference carries "
                   "over to images it did not train on.")


def inner(spec: FigureSpec, a: Arrays, c: Json) -> list[tuple[str, str]]:
    """The figures of the checks of an inner battery (the MNIST control's), from its arrays
    ``check/name``, each as that check declares them, with the inner check's own result."""
    groups: dict[str, Arrays] = {}
    for k, v in a.items():
        if "/" in k:
            prefix, rest = k.split("/", 1)
            groups.setdefault(prefix, {})[rest] = v
    profile = as_dict(as_dict(c.get("details")).get("profile"))
    out = []
    for name, sub in groups.items():
        sub_c = as_dict(profile.get(name)) or {"model": str(c.get("model"))}
        out += [(uri, f"{name}: {cap}") for uri, cap in figures(sub, sub_c, name)]
    return out


#: How each kind of figure is drawn (``inner`` is drawn by :func:`inner`, figure by figure).
DRAW: dict[str, Callable[[FigureSpec, Arrays, Json], Plot]] = {
    "pairs": pairs, "maps": maps, "slices": slices, "joint_map": joint_map, "gap": gap,
    "coloured": coloured, "draws": draws}


# ----------------------------------------------------------------------------- training

def loss_series(run: Json) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and losses: each epoch's within-epoch curve spread evenly over that epoch
    (ending at its number), or the epoch's mean loss where there is no curve."""
    xs: list[float] = []
    ys: list[float] = []
    for h in (as_dict(h) for h in as_list(run.get("history"))):
        if isinstance(h.get("epoch"), int | float):
            curve = [np.nan if v is None else float(v) for v in as_list(h.get("curve"))] or \
                [np.nan if h.get("loss") is None else float(h["loss"])]
            xs += list(h["epoch"] - 1 + (np.arange(len(curve)) + 1) / len(curve))
            ys += curve
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def loss_plot(trained: dict[str, Json]) -> str | None:
    """A panel per data set (the label's first part): their losses differ in scale."""
    groups: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for label, run in trained.items():
        x, y = loss_series(run)
        if np.isfinite(y).any():
            head, _, rest = label.partition("/")
            groups.setdefault(head, []).append((rest or head, x, y))
    if not groups:
        return None
    fig, axes = panels(len(groups), 5.4, 3.8)
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
    return png(fig)
