"""report.html in a real browser: headless Chromium lays the page out at 1280 and at 800 px,
and the page's own layout (measured by a script run in it) says that the profile table never
scrolls sideways, that every row's explanation lies inside the window, and, at 1280 px, that
no table scrolls, the 13 columns of a profile over 12 epochs included. A screenshot of each
width is kept in the test's folder.

The page is the main job's report when ``AMPCHECK_MAIN_REPORT`` names its ``report.json`` (CI,
after ``make run``), else a report of the same shape made here. Skipped, with the reason, where
no Chromium is installed (Debian's package ``chromium``; CI installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_report import DATASET, runs

from ampcheck import report as rp
from ampcheck.render import render_html
from ampcheck.results import CheckResult, Metric, Threshold

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                               "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium here: apt-get install chromium to run the browser "
                             "layout test")

#: Run in the page once it has loaded: the widths that say whether anything overflows.
MEASURE = """<script>window.addEventListener('load', () => {
  const W = document.documentElement.clientWidth;
  const tables = [...document.querySelectorAll('table')].map(t => ({
    cls: t.className, scroll: t.parentElement.scrollWidth, client: t.parentElement.clientWidth}));
  const rows = [...document.querySelectorAll('table.profile > tbody > tr')].map(r => ({
    check: r.firstElementChild.textContent,
    right: r.lastElementChild.getBoundingClientRect().right}));
  const out = document.createElement('pre');
  out.id = 'layout';
  out.textContent = JSON.stringify({width: W, page: document.documentElement.scrollWidth,
                                    tables, rows});
  document.body.appendChild(out);
});</script>"""

#: The main job's profile (README, "What it finds"): its metrics, models and explanations.
PROFILE = [
    ("shift_invariance", "cryoem:base", "FAIL", "displacement", 0.69, 0.66, 0.71, 0.2, False,
     "shifted images (roll(0,1)) move 0.69 of the typical inter-image distance in latent space: "
     "the encoder is not invariant"),
    ("evil_twin", "cryoem:base", "FAIL", "memorisation", 0.67, 0.63, 0.71, 0.5, False,
     "an encoder fed a fixed other image or noise gives its decoder 67% of what the image "
     "itself gives: it memorises"),
    ("vlt_equivalence", "cryoem:base", "FAIL", "fit_ratio", 0.75, 0.71, 0.79, 0.8, True,
     "the lookup table fits its training images better: the encoder's latents give its decoder "
     "75% of what the table's give theirs, so the encoder gives up 25% of a per-image table's "
     "fit; the volumes decoded from each match the true maps with AUC-FSC 0.57 (table) and 0.58 "
     "(encoder)"),
    ("amortization_gap", "cryoem:base", "FAIL", "gap_fraction", 1.14, 1.01, 1.28, 0.5, False,
     "the encoder misses 114% of what per-image optimisation reaches"),
    ("heldout_generalisation", "cryoem:invariant", "WARN", "recovery_drop", 0.6, -0.11, 0.87,
     0.2, False, "training latents recover the truth too poorly (r2_linear 0.05) for "
     "generalisation to be judged"),
    ("mnist_control", "mnist (scikit-learn digits)", "PASS", "recovery_drop", -0.06, -0.13,
     0.01, 0.2, False, "the classic MNIST VAE passes held-out generalisation (AMI 0.44 on "
     "training images, 0.50 on held-out ones)"),
]


def _battery() -> list[CheckResult]:
    out = []
    for check, model, verdict, metric, value, lo, hi, bound, higher, text in PROFILE:
        flags = ("uninformative",) if verdict == "WARN" else ()
        out.append(CheckResult(check, model, verdict, {metric: Metric(value, higher, lo, hi)},
                               Threshold(metric, bound, higher, "why"), text, flags, (0,),
                               {}, {}))
    return [*out, CheckResult.skipped("rotation_invariance", "cryoem:invariant",
                                      "needs ground truth: use data with z_continuous or "
                                      "z_class", (0,))]


#: The per-epoch metrics of a profile over 12 epochs (every column the page's table can have).
EPOCH_METRICS = ("gap_fraction[train]", "gap_fraction[heldout]", "loss_ratio",
                 "shift_displacement", "rotation_displacement", "latent_movement[train]",
                 "latent_movement[heldout]", "r2_linear[train]", "r2_linear[heldout]",
                 "volume_auc_fsc[train]", "volume_auc_fsc[heldout]")


def _over_epochs() -> dict:
    """The ``over_epochs`` block of a 12-epoch profile, intervals of five-digit ends."""
    from ampcheck.epochs import over_epochs_document

    rng = np.random.default_rng(0)
    epochs = []
    for e in range(1, 13):
        metrics = {}
        for name in EPOCH_METRICS:
            v = float(rng.uniform(0.1, 1.3))
            metrics[name] = Metric(v, False, v - 0.123456, v + 0.0987654)
        epochs.append((e, metrics, {}))
    return over_epochs_document(epochs, 7, "held-out inference gets worse at epoch 8 while "
                                           "the training fit holds")


def _page(tmp_path: Path) -> Path:
    """A copy of the report page with :data:`MEASURE` in it (the report made here has a
    profile over 12 epochs, whose table must fit too)."""
    main = os.environ.get("AMPCHECK_MAIN_REPORT")
    if main:
        html = Path(main).with_name("report.html").read_text(encoding="utf-8")
    else:
        rp.write_report(tmp_path / "report", _battery(), DATASET, runs(), render=render_html,
                        over_epochs=_over_epochs())
        html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    page = tmp_path / "measured.html"
    page.write_text(html.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    return page


def _chromium(page: Path, width: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", f"--window-size={width},800",
                           "--virtual-time-budget=10000", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("width", [1280, 800])
def test_the_profile_reads_without_scrolling_sideways(tmp_path, width):
    page = _page(tmp_path)
    dom = _chromium(page, width, "--dump-dom")
    found = re.search(r"<pre id=\"layout\">(.*?)</pre>", dom.stdout, flags=re.S)
    assert found, dom.stderr[-2000:]
    layout = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert layout["width"] == width
    profile = [t for t in layout["tables"] if "profile" in t["cls"].split()]
    assert profile and all(t["scroll"] <= t["client"] for t in profile), profile
    assert layout["rows"] and all(r["right"] <= width for r in layout["rows"]), layout["rows"]
    if width >= 1280:  # at a desktop width no table of the page scrolls
        wide = [t for t in layout["tables"] if t["scroll"] > t["client"]]
        assert not wide, wide
        if not os.environ.get("AMPCHECK_MAIN_REPORT"):  # the page made here: 12 epochs
            assert [t for t in layout["tables"] if t["cls"] == "epochs"], layout["tables"]
        assert layout["page"] <= width
    shot = tmp_path / f"report-{width}.png"
    _chromium(page, width, f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000
    print(f"{width} px: profile {profile[0]['client']} px wide, rows end at "
          f"{max(r['right'] for r in layout['rows']):.0f} px; screenshot {shot} "
          f"({shot.stat().st_size:,} bytes)")
