"""Which epochs to measure, which one to recommend, and how a report records them (torch-free).

* :func:`parse_epochs`: the text of ``--epoch`` (``N``, ``all``, a list ``2,4,8``, a stride
  ``2:12:2`` from 2 to 12 inclusive) as an :class:`EpochSelection`, which
  :meth:`EpochSelection.select` resolves against the epochs a run saved;
* :func:`recommend_epoch`: the truth-free rule (below) on the per-epoch metrics;
* :func:`over_epochs_document`: the ``over_epochs`` block of ``report.json``, and
  :func:`profile_text`: what the console prints of it;
* :func:`compare_epochs`: whether a metric at one epoch is no worse than at another, intervals
  considered as the rule considers them (a CI regression check's assertion).

The rule, on the epochs measured, in order. An epoch *counts* when its decoder uses the
latent (its ``amortization_gap`` is not flagged ``no_fit``: before that the gap means
nothing). Epoch ``e`` shows *damage* when, against some earlier counted epoch ``m``, its
held-out gap fraction or its held-out/training reconstruction-loss ratio is worse with
intervals apart (``lo_e > hi_m``), while its training gap fraction is not worse than epoch
``m``'s with intervals apart (the training fit holds or improves: the encoder serves its
training images better than new ones, the paper's lookup table in the making). The
recommended epoch is the latest counted epoch before the first damaged one whose held-out gap
fraction is not worse, intervals apart, than the best one before the damage: the longest
training that the held-out images show no cost for. Without damage, that is the latest
counted epoch whose held-out gap is not worse than the best; without a counted epoch there
is no recommendation (``None``). The README lists its failure modes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, InputError
from .results import Metric

__all__ = ["COLUMNS", "DAMAGE", "RULE", "EpochComparison", "EpochSelection", "compare_epochs",
           "epoch_table_text", "metric_columns", "over_epochs_document", "parse_epochs",
           "profile_text", "recommend_epoch"]

#: The metrics whose significant rise marks damage (worse held-out inference), and the
#: training-side metric that must not rise with it.
DAMAGE = ("gap_fraction[heldout]", "loss_ratio")
TRAINING_FIT = "gap_fraction[train]"
#: The rule in one line, as reports quote it.
RULE = ("the latest epoch whose decoder uses the latent, before held-out inference first "
        "gets worse with the training fit holding (held-out gap fraction or held-out/training "
        "loss ratio above an earlier epoch's, intervals apart), and whose held-out gap "
        "fraction is not worse, intervals apart, than the best before it")


@dataclass(frozen=True)
class EpochSelection:
    """The epochs ``--epoch`` asks for: ``every`` saved one, a ``listed`` set, or a
    ``stride`` ``(first, last, step)``; ``single`` is a plain ``N`` (the single-epoch
    path)."""

    text: str
    every: bool = False
    listed: tuple[int, ...] = ()
    stride: tuple[int, int, int] | None = None

    @property
    def single(self) -> int | None:
        """The epoch of a plain ``N``; None for ``all``, a list or a stride."""
        if re.fullmatch(r"\s*\d+\s*", self.text):
            return self.listed[0]
        return None

    def select(self, saved: Iterable[int], where: str) -> list[int]:
        """The epochs to measure among ``saved`` (those a run kept), in order. A listed
        epoch that was not saved is an error naming it and the saved ones (``where``: the
        run); a stride takes the saved epochs on it, and must meet at least one."""
        saved = sorted(set(int(e) for e in saved))
        have = _ranges(saved) or "none"
        if not saved:
            raise InputError(f"{where}: no numbered weights saved, so no epoch to measure "
                             "(cryodrgn train_vae keeps weights.N.pkl with --checkpoint N; "
                             "ampcheck train keeps checkpoint.N.pt with --checkpoint-every N)")
        if self.every:
            return saved
        if self.stride is not None:
            first, last, step = self.stride
            chosen = [e for e in saved if first <= e <= last and (e - first) % step == 0]
            if not chosen:
                raise InputError(f"{where}: no saved epoch on the stride {self.text}; epochs "
                                 f"saved: {have}")
            return chosen
        missing = [e for e in self.listed if e not in saved]
        if missing:
            raise InputError(f"{where}: no weights for epoch(s) "
                             f"{', '.join(map(str, missing))} of --epoch {self.text}; epochs "
                             f"saved: {have}")
        return sorted(set(self.listed))


def parse_epochs(text: str) -> EpochSelection:
    """``--epoch``'s value: ``N``, ``all``, ``A,B,C`` or ``FIRST:LAST[:STEP]`` (epochs are
    1-based); a ConfigError that shows the accepted forms otherwise."""
    t = str(text).strip()
    forms = "expected N, all, a list such as 2,4,8, or a stride FIRST:LAST[:STEP] such as 2:12:2"
    if t == "all":
        return EpochSelection(t, every=True)
    try:
        parts = [int(p) for p in t.split(":" if ":" in t else ",")]
    except ValueError:
        raise ConfigError(f"--epoch {text!r}: {forms}") from None
    if ":" in t:
        if len(parts) not in (2, 3):
            raise ConfigError(f"--epoch {text!r}: {forms}")
        first, last, step = (*parts, 1) if len(parts) == 2 else parts
        if first < 1 or last < first or step < 1:
            raise ConfigError(f"--epoch {text}: a stride runs from a first epoch >= 1 to a "
                              f"last >= it, in steps >= 1; {forms}")
        return EpochSelection(t, stride=(first, last, step))
    listed = tuple(parts)
    if any(e < 1 for e in listed):
        raise ConfigError(f"--epoch {text}: epochs count from 1; {forms}")
    return EpochSelection(t, listed=listed)


def _ranges(epochs: Sequence[int]) -> str:
    """``1-4, 6, 8-9``: sorted epochs with runs of consecutive ones shortened."""
    out, start = [], None
    for i, e in enumerate(epochs):
        if start is None:
            start = e
        if i + 1 == len(epochs) or epochs[i + 1] != e + 1:
            out.append(str(start) if start == e else f"{start}-{e}")
            start = None
    return ", ".join(out)


# ---------------------------------------------------------------------------- the rule
def _bounds(m: Metric | None) -> tuple[float, float] | None:
    """``(lo, hi)`` of a metric (its value twice without an interval); None when absent or
    not finite."""
    if m is None or not math.isfinite(m.value):
        return None
    lo = m.lo if not math.isnan(m.lo) else m.value  # an infinite end stays: unbounded
    hi = m.hi if not math.isnan(m.hi) else m.value
    return lo, hi


def _worse(a: Metric | None, b: Metric | None) -> bool:
    """Whether ``a`` is worse than ``b`` with intervals apart, in ``a``'s direction (the
    rule's metrics are all lower-is-better); False when either is absent or not finite."""
    x, y = _bounds(a), _bounds(b)
    if x is None or y is None:
        return False
    return x[1] < y[0] if a.higher_is_better else x[0] > y[1]


@dataclass(frozen=True, repr=False)
class EpochComparison:
    """The answer of :func:`compare_epochs`: true when the metric at ``epoch`` is no worse
    than at ``than_epoch``; ``message`` says both values and why (it is also its ``repr``,
    so that a failing ``assert`` under pytest shows it)."""

    name: str
    epoch: int
    than_epoch: int
    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return self.message

    __str__ = __repr__


def compare_epochs(name: str, at: tuple[int, Metric], than: tuple[int, Metric]
                   ) -> EpochComparison:
    """Whether metric ``name`` at epoch ``at[0]`` (value ``at[1]``) is no worse than at
    epoch ``than[0]``: worse means worse with intervals apart, as the recommended epoch's rule
    decides it (:func:`_worse`, in the metric's own direction); a value that is not finite
    cannot be judged no worse (false, and the message says so). A metric without an interval
    (the AUC-FSC of a few volumes) is compared by its values alone, and the message says that
    its noise is not accounted for."""
    (e, m), (e0, m0) = at, than
    way = "higher" if m.higher_is_better else "lower"
    both = f"{name} at epoch {e}: {m}; at epoch {e0}: {m0} ({way} is better)"
    if _bounds(m) is None or _bounds(m0) is None:
        return EpochComparison(name, e, e0, False, f"cannot compare, a value is not finite: "
                                                   f"{both}")
    if any(math.isnan(x.lo) or math.isnan(x.hi) for x in (m, m0)):
        worse = m.value < m0.value if m.higher_is_better else m.value > m0.value
        return EpochComparison(name, e, e0, not worse,
                               f"{'worse' if worse else 'no worse'} by value, without an "
                               f"interval (its noise not accounted for): {both}")
    if _worse(m, m0):
        return EpochComparison(name, e, e0, False, f"worse, intervals apart: {both}")
    how = "better, intervals apart" if _worse(m0, m) else "no worse, the intervals overlap"
    return EpochComparison(name, e, e0, True, f"{how}: {both}")


def recommend_epoch(epochs: Sequence[tuple[int, Mapping[str, Metric], Sequence[str]]]
                    ) -> tuple[int | None, str]:
    """``(epoch, reason)`` by the module's rule from ``(epoch, metrics, flags)`` per measured
    epoch (flags: those of its ``amortization_gap``); ``(None, reason)`` when no epoch counts.
    """
    counted = [(e, m) for e, m, flags in sorted(epochs, key=lambda x: x[0])
               if "no_fit" not in flags and _bounds(m.get(DAMAGE[0])) is not None]
    if not counted:
        return None, ("no measured epoch's decoder uses the latent yet (every amortization gap "
                      "is flagged no_fit, or none was measured): train longer")
    damaged, cause = None, ""
    for i, (e, m) in enumerate(counted):
        for e0, m0 in counted[:i]:
            holds = not _worse(m.get(TRAINING_FIT), m0.get(TRAINING_FIT))
            rose = [k for k in DAMAGE if _worse(m.get(k), m0.get(k))]
            if rose and holds:
                damaged, cause = e, f"{rose[0]} {m[rose[0]].value:.3g} at epoch {e} above " \
                                    f"{m0[rose[0]].value:.3g} at epoch {e0}"
                break
        if damaged is not None:
            break
    before = [(e, m) for e, m in counted if damaged is None or e < damaged]
    if not before:  # the first counted epoch is damaged: cannot happen (nothing before it)
        return None, f"damage from the first epoch that counts ({cause})"
    best_e, best = min(before, key=lambda x: x[1][DAMAGE[0]].value)
    pick = max(e for e, m in before if not _worse(m.get(DAMAGE[0]), best.get(DAMAGE[0])))
    g = dict(before)[pick][DAMAGE[0]].value
    if damaged is None:
        why = (f"no epoch shows held-out damage; epoch {pick} is the latest whose held-out gap "
               f"fraction ({g:.3g}) is not worse, intervals apart, than the best "
               f"({best[DAMAGE[0]].value:.3g}, epoch {best_e})")
    else:
        why = (f"held-out inference gets worse at epoch {damaged} ({cause}) while the training "
               f"fit holds; epoch {pick} is the latest before it whose held-out gap fraction "
               f"({g:.3g}) is not worse than the best ({best[DAMAGE[0]].value:.3g}, epoch "
               f"{best_e})")
    return pick, why


# ---------------------------------------------------------------------------- the document
def over_epochs_document(epochs: Sequence[tuple[int, Mapping[str, Metric], Mapping[str, Any]]],
                         recommended: int | None, reason: str, *,
                         skipped: Mapping[int, str] | None = None,
                         extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``over_epochs`` block of ``report.json``: ``{"epochs": [{"epoch": N, "metrics":
    {name: Metric.to_dict()}, **info}, ...], "recommended_epoch": K, "reason": "...",
    "rule": RULE, "skipped": [{"epoch": N, "reason": "..."}], **extra}`` (``info``: each
    epoch's verdicts and flags; ``skipped``: epochs whose weights could not be read)."""
    return {"epochs": [{"epoch": int(e), "metrics": {k: v.to_dict() for k, v in m.items()},
                        **dict(info)} for e, m, info in epochs],
            "recommended_epoch": recommended, "reason": reason, "rule": RULE,
            "skipped": [{"epoch": int(e), "reason": r} for e, r in (skipped or {}).items()],
            **dict(extra or {})}


#: The per-epoch metrics in the order tables and figures show them: ``(name, short label)``;
#: a ``{}`` in a name stands for ``train`` and ``heldout``, side by side. Truth recovery is
#: whatever measure the data allowed (``r2_linear``, ``ami``): :func:`metric_columns`.
COLUMNS = (("gap_fraction[{}]", "gap fraction"), ("loss_ratio", "held-out/train loss"),
           ("shift_displacement", "shift displ."), ("rotation_displacement", "rot. displ."),
           ("latent_movement[{}]", "latent movement"), ("*[{}]", "truth recovery"),
           ("volume_auc_fsc[{}]", "AUC-FSC vs truth"))


def metric_columns(block: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(metric name, label)`` of every per-epoch metric present in an ``over_epochs``
    block, in :data:`COLUMNS` order, ``[train]`` before ``[heldout]``."""
    names = list(dict.fromkeys(k for ep in block.get("epochs", [])
                               for k in (ep.get("metrics") or {})))
    known = {"gap_fraction", "latent_movement", "volume_auc_fsc", "recon"}
    out = []
    for pattern, label in COLUMNS:
        for side, short in (("train", "train"), ("heldout", "held-out")):
            if "{}" not in pattern:
                if pattern in names and (pattern, label) not in out:
                    out.append((pattern, label))
                continue
            for n in names:
                base = n.split("[")[0]
                is_truth = pattern.startswith("*") and base not in known
                if n.endswith(f"[{side}]") and (is_truth or n == pattern.format(side)):
                    out.append((n, f"{label} ({short})"))
    return out


def profile_text(block: Mapping[str, Any]) -> str:
    """What the console prints of an ``over_epochs`` block: a heading, the table
    (:func:`epoch_table_text`) and ``Recommended epoch: K (reason)``."""
    return (f"Amortization profile over {len(block['epochs'])} epoch(s):\n"
            f"{epoch_table_text(block)}\n"
            f"Recommended epoch: {block['recommended_epoch']} ({block['reason']})")


def epoch_table_text(block: Mapping[str, Any]) -> str:
    """The per-epoch table of an ``over_epochs`` block as plain text (the console's): one
    row per epoch, the value of every metric, ``*`` beside the recommended epoch."""
    cols = metric_columns(block)
    head = ["epoch", *(n.replace("gap_fraction", "gap").replace("latent_movement", "moved")
                       .replace("volume_auc_fsc", "auc_fsc").replace("_displacement", "_displ")
                       for n, _ in cols)]
    rows = []
    for ep in block.get("epochs", []):
        mark = "*" if ep["epoch"] == block.get("recommended_epoch") else " "
        values = []
        for n, _ in cols:
            v = (ep["metrics"].get(n) or {}).get("value")
            values.append("-" if v is None else f"{v:.3g}")
        rows.append([f"{ep['epoch']}{mark}", *values])
    for s in block.get("skipped", []):
        rows.append([f"{s['epoch']}", f"skipped: {s['reason']}"])
    widths = [max(len(r[i]) for r in [head, *rows] if i < len(r) and len(r) == len(head))
              for i in range(len(head))]
    lines = ["  " + "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    for r in rows:
        if len(r) == len(head):
            lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
        else:
            lines.append("  " + r[0].rjust(widths[0]) + "  " + r[1])
    return "\n".join(lines)
