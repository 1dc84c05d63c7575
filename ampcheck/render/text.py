"""The page's text: escaping, numbers, intervals, tables; tolerant of hand-edited reports."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from ..display import Code, number_text

Json = dict[str, Any]


def escape(x: Any) -> str:
    return html.escape(str(x), quote=True)


def as_dict(x: Any) -> Json:
    """``x`` if it is a dict, else empty: a hand-edited or older report must still render."""
    return x if isinstance(x, dict) else {}


def as_list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def duration_text(seconds: Any) -> str | None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return None
    return f"{seconds / 60:.1f} min ({seconds:,.0f} s)" if seconds >= 120 else f"{seconds:.1f} s"


def interval_text(m: Json) -> str:
    lo, hi = number_text(m.get("lo")), number_text(m.get("hi"))
    if (m.get("lo") is None) != (m.get("hi") is None):  # JSON's null for an infinite end
        lo, hi = ("−∞" if m.get("lo") is None else lo), ("∞" if m.get("hi") is None else hi)
    return "—" if "—" in (lo, hi) else f"[{lo}, {hi}]"


def metric_text(metrics: Json, name: str) -> str:
    """``value [lo, hi]`` of one metric as plain text (plot titles use it too)."""
    m = as_dict(metrics.get(name))
    ci = interval_text(m)
    return number_text(m.get("value")) + ("" if ci == "—" else f" {ci}")


def parts_html(parts: Sequence[str]) -> str:
    """A fact's text (:data:`ampcheck.display.Text`): :class:`~ampcheck.display.Code` parts
    as code, the others escaped."""
    return "".join(f"<code>{escape(p)}</code>" if isinstance(p, Code) else escape(p)
                   for p in parts)


def table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> str:
    """A table of already-escaped cells that scrolls sideways rather than overflowing."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div class='scroll'><table class='{cls}'><thead><tr>{th}</tr></thead><tbody>" \
           f"{body}</tbody></table></div>"
