"""Rendering: a report directory's ``report.html``, drawn from its document.

The layer above the checks: the page lays out what :mod:`ampcheck.report` reads, and draws
each check's figures as the check declares them (:class:`ampcheck.display.FigureSpec`), so
the document stays free of matplotlib and the renderer free of any check's name.

* :func:`render_html`: write ``report.html`` from ``report.json`` and ``arrays/``;
* :func:`warm_up_embedding`: compile UMAP's numba functions ahead of the first page.
"""

from __future__ import annotations

from .page import render_html
from .plotting import warm_up_embedding

__all__ = ["render_html", "warm_up_embedding"]
