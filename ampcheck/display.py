"""What the report page shows, declared as data by the code that knows it.

A check declares the figures it wants beside its own code (:class:`FigureSpec`, given to its
:class:`~ampcheck.checks.CheckSpec`); an adapter declares what the page says of the runs it
describes in a report (:func:`register_run_facts`). The renderer (:mod:`ampcheck.render`)
draws each kind of figure (:data:`KINDS`) and lays out every run's facts without knowing a
check or an adapter by name, so that a new check brings its picture without touching it.
This module imports neither torch nor matplotlib: checks and adapters declare without
loading the renderer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: The kinds of figure the renderer draws, and what each reads. Latent maps colour their
#: points by the per-image truth arrays ``truth[z_continuous]`` (else ``truth[z_class]``).
KINDS: dict[str, str] = {
    "pairs": "each image's latent (arrays[0], (n, d)) joined by a line to each transformed "
             "copy's (arrays[1], a pattern such as 'moved[*]', * the copy's name), a panel "
             "per copy titled by metrics[0] as M[copy] (else M); caption fields {embedding} "
             "and {n}",
    "maps": "latent sets (arrays, each (n, d)) side by side, each embedded on its own and "
            "titled by its label; caption fields: the metrics, by name",
    "slices": "central sections (arrays, each (rows, sections, D, D)) of volumes, a column "
              "each titled by its label, rows ordered by the array 'z_continuous'",
    "joint_map": "training and held-out latents (arrays[0], arrays[1]) in one embedding, "
                 "marked by their labels; truth as truth[name] followed by each array's "
                 "bracket ('mu[train]': 'truth[z_class][train]')",
    "gap": "a per-image gap on training against held-out images (arrays[0], arrays[1]; "
           "'gap[train]' is divided by the mean of 'gain[train]'), labelled by the labels; "
           "metrics[0] names the fraction the caption quotes per side, and the threshold's "
           "line when it governs",
    "coloured": "one latent map (arrays[0], (n, d)) drawn once per per-image variable "
                "(arrays[1], a pattern such as 'nuisance[*]', * the variable's name), each "
                "panel coloured by its variable and titled by metrics[0] as M[variable]; "
                "caption fields {embedding} and {n}",
    "draws": "groups of latents (arrays[0], (n, k, d): k draws of each of n items), each "
             "draw joined to its item's mean in one embedding, coloured by truth[...] (n,); "
             "caption fields {embedding}, {n}, {k} and the metrics, by name",
    "inner": "the figures of an inner battery's checks, from arrays named 'check/array', as "
             "each of those checks declares them",
}


@dataclass(frozen=True)
class FigureSpec:
    """One figure a check asks the report page for: its kind (:data:`KINDS`), the arrays of
    the check's result it reads, how the picture labels them, the metrics it quotes, and its
    caption (a template whose ``{field}`` the kind fills in)."""

    kind: str
    arrays: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    caption: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown figure kind {self.kind!r}; expected one of "
                             f"{', '.join(KINDS)}")
        for name in ("arrays", "labels", "metrics"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.labels and len(self.labels) != len(self.arrays):
            raise ValueError(f"a {self.kind} figure has {len(self.arrays)} arrays and "
                             f"{len(self.labels)} labels; expected one label per array")


def number_text(x: Any) -> str:
    """A number as the page writes it: 3 significant digits, thousands separated, ``—``
    for a missing or non-finite one."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return "—"
    if abs(x) >= 1e3:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


class Code(str):
    """A part of a fact that the page shows as code (a path, a file name)."""


#: A fact's text, in parts: :class:`Code` parts are shown as code, the others as text.
Text = tuple[str, ...]


@dataclass(frozen=True)
class RunFacts:
    """What the page's header says of one run a report describes (``runs[key]``): a title,
    facts as ``(label, text)``, an optional table of its files (``files_head`` and
    ``files``, a row of texts each), and the data set's facts that table already shows (not
    repeated among the data's)."""

    title: str
    facts: tuple[tuple[str, Text], ...]
    files_head: tuple[str, ...] = ()
    files: tuple[tuple[Text, ...], ...] = ()
    shown: frozenset[str] = frozenset()


#: ``runs`` key of a report -> what the page says of that run (see :func:`register_run_facts`).
RUN_FACTS: dict[str, Callable[[Mapping[str, Any]], RunFacts]] = {}


def register_run_facts(key: str, facts: Callable[[Mapping[str, Any]], RunFacts]) -> None:
    """Let the page describe ``runs[key]`` of a report (a non-empty JSON object) by
    ``facts(runs[key])``: the adapter that writes such runs registers how they read."""
    RUN_FACTS[key] = facts
