"""The figures' matplotlib toolkit: PNG data URIs, latent embeddings, colouring by truth.

Drawn by Agg on :class:`matplotlib.figure.Figure` (no pyplot, no global state); every random
choice is seeded (:data:`SEED`), so that a report renders to the same bytes every time.
"""

from __future__ import annotations

import base64
import io
import math
import re
import sys
import warnings
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from threadpoolctl import threadpool_limits

Json = dict[str, Any]
Arrays = dict[str, np.ndarray]

MAX_POINTS = 1000  # originals per latent plot: enough to see the structure, quick to embed
DPI = 110
SEED = 0
GREY = "0.4"


def png(fig: Figure) -> str:
    """The figure as a base64 PNG data URI, drawn by Agg (no pyplot, no global state)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def latents(x: Any) -> np.ndarray | None:
    """``x`` as an ``(n, d)`` float array, or ``None`` when absent, empty or misshapen."""
    if x is None or np.ndim(x) not in (1, 2) or not np.size(x):
        return None
    return np.asarray(x, dtype=float).reshape(len(x), -1)


def subsample(n: int, cap: int = MAX_POINTS) -> np.ndarray:
    """Seeded, sorted indices of at most ``cap`` of ``n`` items (the same on every render)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(SEED).choice(n, cap, replace=False))


def embed(blocks: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
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
        keep_compiled("umap", "pynndescent")
        fit = umap.UMAP(n_neighbors=min(15, int(ok.sum()) - 1), random_state=SEED, n_jobs=1)
        # numba's OpenMP layer, started by the first fit, sets the process's OpenMP threads
        # to the number of cores, torch's among them where torch's libgomp is the one loaded:
        # the limit's exit restores every OpenMP library's own count.
        with warnings.catch_warnings(), threadpool_limits(1, user_api="openmp"):
            warnings.simplefilter("ignore")  # small or collapsed latents make UMAP chatty
            y[ok], method = fit.fit_transform(x[ok]), "UMAP"
    return np.split(y, np.cumsum([len(b) for b in blocks])[:-1]), method


def keep_compiled(*packages: str) -> int:
    """Have numba keep the compiled code of the loaded ``packages``' jitted functions on disk,
    as ``@njit(cache=True)`` does; returns how many functions it newly applies to.

    UMAP compiles about a hundred functions on its first fit in every process (20 s or so of
    one core, most of a small report's rendering); pynndescent caches only some of its own.
    numba stores the code beside each package's sources (``__pycache__``), or in its user-wide
    cache where that is read-only, keyed by the source file and the machine, so that every
    later process loads it in a second or two (where neither can be written, nothing changes:
    every process compiles). The same machine code either way: the embedding, and so the
    report, are identical.
    """
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    n = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for f in list(vars(module).values()):
            if isinstance(f, Dispatcher) and isinstance(getattr(f, "_cache", None), NullCache):
                try:  # no cache=True yet
                    f.enable_caching()
                except RuntimeError:  # nowhere writable to keep it: compile as before
                    return n
                n += 1
    return n


def warm_up_embedding() -> None:
    """Compile UMAP's numba functions now (a fit of 40 random 8-D points, as :func:`embed`
    calls it): 20 s or so of one core that the first report otherwise spends, done by
    ``ampcheck run`` while its models train in other processes."""
    x = np.random.default_rng(SEED).normal(size=(40, 8)).astype(np.float32)
    embed([x])


def what(method: str, d: int, joint: str = "") -> str:
    """What the axes of an embedding are, for titles and captions."""
    return f"raw {d}-D latents" if method == "z" else \
        f"{'UMAP' if method == 'UMAP' else 'PCA'} of the {d}-D latents{joint}"


def truth(a: Arrays, suffix: str, idx: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """``{name: values[idx]}`` of the per-image truths ``truth[name]<suffix>`` of length n."""
    out = {}
    for k, v in a.items():
        m = re.fullmatch(r"truth\[([^\]]+)\]" + re.escape(suffix), k)
        if m and np.ndim(v) == 1 and len(v) == n:
            out[m.group(1)] = np.asarray(v, dtype=float)[idx]
    return out


class Colour:
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


def panels(n: int, width: float = 4.6, height: float = 4.1) -> tuple[Figure, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols + 1.0, height * rows + 0.5), layout="constrained")
    axes = list(np.ravel(fig.subplots(rows, cols, squeeze=False)))
    for ax in axes[n:]:  # a last row that is not full leaves no empty frames
        ax.remove()
    return fig, axes[:n]


def style(ax: Any, method: str, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("z₁" if method == "z" else f"{method} 1")
    ax.set_ylabel("z₂" if method == "z" else f"{method} 2")
    ax.grid(alpha=0.25)


def legend(fig: Figure, entries: list[tuple[str, Json]]) -> None:
    """A legend under the panels from grey proxies (the real markers are coloured by truth)."""
    fig.legend([Line2D([], [], **kw) for _, kw in entries], [t for t, _ in entries],
               loc="outside lower center", ncols=len(entries), fontsize=9, frameon=False)


def vector(x: Any) -> np.ndarray | None:
    """``x`` as a 1-D float array, or ``None`` when absent, empty or not 1-D."""
    if x is None or np.ndim(x) != 1 or not np.size(x):
        return None
    return np.asarray(x, dtype=float)
