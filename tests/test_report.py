"""The HTML report: one self-contained page from ``report.json`` and ``arrays/*.npz``, each
check's figures as the check declares them."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from ampcheck import report as rp
from ampcheck.errors import InputError
from ampcheck.render import figures as rf
from ampcheck.render import render_html
from ampcheck.results import CheckResult, Metric, Threshold

PNG = b"\x89PNG\r\n\x1a\n"
URI = "data:image/png;base64,"
DATASET = {"path": "/data/synthetic", "n": 40, "D": 8, "apix": 6.0, "snr": 0.1, "seed": 0}


def result(check: str, verdict: str = "FAIL", arrays=None, *, value: float = 0.9,
           model: str = "cryoem:base", details=None, explanation: str | None = None,
           extra=None) -> CheckResult:
    """A fake result whose governing metric is ``score`` (lower is better, pass at 0.2)."""
    metrics = {"score": Metric(value, False, value - 0.1, value + 0.1), **(extra or {})}
    return CheckResult(check, model, verdict, metrics, Threshold("score", 0.2, False, "why"),
                       explanation or f"{check} explained", details=details or {},
                       arrays=arrays or {})


def latents(n: int = 40, d: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def history(epochs: int, start: float) -> list[dict]:
    return [{"epoch": e, "loss": start / e, "recon": start / e, "kl": 0.1, "seconds": 1.0,
             "images": 40, "curve": [start / e * (1 + 0.1 * j) for j in range(3, 0, -1)]}
            for e in range(1, epochs + 1)]


def runs() -> dict:
    trained = {f"{data}/{variant}/base/seed0": {
        "images": 40, "epochs": 3, "seconds_per_epoch": 0.5, "images_per_second": 80.0,
        "loss": 1.0, "recon": 1.0, "history": history(3, scale)}
        for data, scale in (("cryoem", 0.7), ("mnist", 500.0)) for variant in ("vae", "vlt")}
    trained["cryoem/vae/base/seed0"]["history"][1].pop("curve")  # per-epoch loss only
    return {"budget": "smoke", "seeds": 1, "seconds": 12.5, "trained": trained}


def battery() -> list[CheckResult]:
    """One result of each kind the page plots, 2-D latents (fast: no UMAP)."""
    rng = np.random.default_rng(1)
    mu, z = latents(), rng.uniform(size=40)
    cls = rng.integers(0, 3, size=40)
    slices = {f"slices[{k}]": rng.normal(size=(3, 3, 8, 8)) for k in ("truth", "encoder", "vlt")}
    inner = result("shift_invariance", model="mnist").to_dict()
    return [
        result("shift_invariance", arrays={"mu": mu, "moved[roll(0,1)]": mu + 0.5,
                                           "moved[rot90(1)]": -mu, "truth[z_continuous]": z,
                                           "slices[image]": slices["slices[encoder]"],
                                           "slices[moved]": slices["slices[vlt]"]},
               extra={"displacement[rot90(1)]": Metric(0.9, False)}),
        result("evil_twin", "WARN", value=0.3, details={"twin_encoder": "large", "n": 40}),
        result("vlt_equivalence", "PASS", value=0.1, arrays={
            "mu[encoder]": mu, "mu[vlt]": latents(seed=2), "truth[z_class]": cls,
            "z_continuous": z[:3], **slices}),
        result("heldout_generalisation", arrays={
            "mu[train]": mu, "mu[heldout]": latents(10, seed=3), "truth[z_class][train]": cls,
            "truth[z_class][heldout]": cls[:10]}),
        result("mnist_control", "PASS", value=0.0, model="mnist",
               details={"profile": {"shift_invariance": inner}},
               arrays={"shift_invariance/mu": mu, "shift_invariance/moved[roll(0,1)]": mu * 2,
                       "shift_invariance/truth[z_class]": cls}),
    ]


EXPECTED_PNGS = 2 + 0 + 2 + 1 + 1 + 1  # the checks above in order, then the loss curves


def pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(re.escape(URI) + r"([A-Za-z0-9+/=]+)", page)]


class Links(HTMLParser):
    """Every id, and every src / href, of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "id":
                self.ids.add(value)
            elif name in ("src", "href"):
                self.refs.append(value)


def render(tmp_path: Path, results, dataset=None, run_info=None) -> str:
    rp.write_report(tmp_path, results, DATASET if dataset is None else dataset,
                    runs() if run_info is None else run_info, render=render_html)
    return (tmp_path / "report.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    return render(tmp_path_factory.mktemp("report"), battery())


def test_page_names_every_check_with_its_verdict(page):
    for r in battery():
        row = re.search(rf"<a href='#check-{r.check}'>{r.check}</a>(?:<br><small>"
                        rf"{r.model}</small>)?</td><td>(.*?)</td>", page)
        assert row and f">{r.verdict}</span>" in row.group(1), r.check
        assert f"id='check-{r.check}'" in page
    assert "Amortization profile" in page and "ampcheck" in page and "/data/synthetic" in page


def test_page_embeds_one_valid_png_per_figure(page):
    images = pngs(page)
    assert len(images) == EXPECTED_PNGS
    assert all(img.startswith(PNG) and len(img) > 1000 for img in images)


def test_page_is_self_contained(page):
    links = Links()
    links.feed(page)
    assert links.refs, "the profile links to each section"
    for ref in links.refs:
        assert ref.startswith("data:image/png;base64,") or ref[1:] in links.ids, ref
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_invariance_checks_show_the_volumes_at_an_image_and_at_its_copy(page):
    section = page[page.index("id='check-shift_invariance'"):page.index("id='check-evil_twin'")]
    assert "decoded at each image&#x27;s latent μ(x) and at its transformed copy&#x27;s" \
        in section
    assert len(pngs(section)) == 2  # the latent map and the volumes


def test_invariance_panels_name_each_transforms_displacement(monkeypatch):
    titles = []
    monkeypatch.setattr(rf, "style", lambda ax, method, title: titles.append(title))
    mu = latents()
    metrics = {"displacement": Metric(0.7, False, 0.6, 0.8).to_dict(),  # roll(0,1) governs
               "displacement[rot90(1)]": Metric(0.9, False, 0.85, 0.95).to_dict()}
    pairs = rf.declared("shift_invariance")[0]
    assert rf.pairs(pairs, {"mu": mu, "moved[roll(0,1)]": mu + 0.5, "moved[rot90(1)]": -mu},
                    {"metrics": metrics, "model": "m"}) is not None
    assert titles == ["roll(0,1): displacement 0.7 [0.6, 0.8]",
                      "rot90(1): displacement 0.9 [0.85, 0.95]"]


def test_page_shows_training_runs_and_reading_guide(page):
    assert "Training runs" in page and "mnist/vlt/base/seed0" in page
    assert "uninformative" in page and "How to read" in page
    assert "Inner profile" in page  # the MNIST control's own profile table


def test_text_is_escaped(tmp_path):
    page = render(tmp_path, [result("shift_invariance", explanation="<script>x & y</script>")],
                  dataset={"path": "<b>odd</b>"}, run_info={})
    assert "<script>" not in page and "&lt;script&gt;x &amp; y&lt;/script&gt;" in page
    assert "&lt;b&gt;odd&lt;/b&gt;" in page


def test_missing_arrays_nan_metrics_and_unknown_checks_render(tmp_path):
    results = battery() + [
        result("brand_new_check", "WARN", value=float("nan"), arrays={"foo": np.ones(3)},
               extra={"other": Metric(float("inf"), True)}),
        result("half_heldout", arrays={"mu[train]": latents()}),  # no held-out latents
        result("bad_shift", arrays={"mu": latents(), "moved[x]": latents(5)}),  # n differs
    ]
    rp.write_report(tmp_path, results, {}, {"trained": {"x": {"history": None}}})
    report = json.loads((tmp_path / "report.json").read_text())
    for npz in (tmp_path / "arrays").glob("vlt*.npz"):  # a report whose VLT kept no arrays
        npz.unlink()
        del report["arrays"][npz.stem]
    (tmp_path / "report.json").write_text(json.dumps(report))
    page = render_html(tmp_path).read_text(encoding="utf-8")
    assert "brand_new_check" in page and "<code>score</code> = —" in page
    assert len(pngs(page)) == EXPECTED_PNGS - 3  # no VLT plots, no loss curves
    assert len(set(re.findall(r"id='([^']+)'", page))) == len(re.findall(r"id='", page))


def test_empty_report_renders(tmp_path):
    page = render(tmp_path, [], dataset={}, run_info={})
    assert "no check results" in page and not pngs(page)


def test_interrupted_render_leaves_the_old_page(tmp_path, monkeypatch):
    render(tmp_path, battery()[:2])
    before = (tmp_path / "report.html").read_bytes()

    def broken(fig):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(rf, "png", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        render_html(tmp_path)
    assert (tmp_path / "report.html").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays", "report.html", "report.json"]


def test_high_dimensional_latents_are_embedded_with_umap(tmp_path):
    mu = latents(60, 8)
    z = np.linspace(0, 1, 60)
    page = render(tmp_path, [result("shift_invariance", arrays={
        "mu": mu, "moved[roll(0,1)]": mu + 0.1, "truth[z_continuous]": z})], run_info={})
    assert "UMAP of the 8-D latents" in page
    assert [img[:8] for img in pngs(page)] == [PNG]


def test_an_embedding_leaves_the_processs_openmp_threads_as_they_were():
    # numba's OpenMP layer, started by UMAP's first fit in a process, set the threads of the
    # libgomp that torch had loaded to the number of cores: every later test in that pytest
    # worker trained with two threads on a core of its own (3 to 8 times the CPU time).
    code = ("import torch, numpy as np\n"
            "from ampcheck.render.plotting import embed\n"
            "_, method = embed([np.random.default_rng(0).normal(size=(60, 8))])\n"
            "print(method, torch.get_num_threads())\n")
    # one thread from the environment, as `make test` gives its workers (torch then follows
    # OpenMP's count; a torch.set_num_threads call would have kept its own)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["UMAP", "1"], done.stdout


def test_load_report_explains_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="no such report"):
        rp.load_report(tmp_path / "missing")
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        rp.load_report(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"checks": []}))
    with pytest.raises(InputError, match="not an ampcheck report"):
        render_html(tmp_path)


def test_loss_curves_spread_each_epochs_points_over_that_epoch():
    x, y = rf.loss_series({"history": [
        {"epoch": 1, "loss": 2.0, "curve": [3.0, 2.0, 1.0]},
        {"epoch": 2, "loss": 0.5},  # no curve: the epoch's mean, at its end
        {"epoch": 3, "loss": None, "curve": []}, "junk"]})
    np.testing.assert_allclose(x, [1 / 3, 2 / 3, 1, 2, 3])
    np.testing.assert_allclose(y[:4], [3, 2, 1, 0.5])
    assert np.isnan(y[4])


def test_result_keys_tell_a_second_models_results_apart():
    from ampcheck.results import result_keys

    pairs = [("shift_invariance", "cryoem:base"), ("evil_twin", "cryoem:base"),
             ("shift_invariance", "cryoem:invariant"), ("mnist_control", "mnist")]
    assert result_keys(pairs) == ["shift_invariance", "evil_twin",
                                  "shift_invariance[cryoem:invariant]", "mnist_control"]


def test_two_models_results_of_one_check_keep_their_own_verdicts_and_plots(tmp_path):
    # the main job checks the cryoDRGN-style VAE and, as its positive control, the invariant
    # encoder: one check name, two results, neither may overwrite the other
    base, inv = latents(), latents(seed=5)
    results = [
        result("shift_invariance", "FAIL", arrays={"mu": base, "moved[roll(0,1)]": base + 1}),
        result("shift_invariance", "PASS", value=0.0, model="cryoem:invariant",
               arrays={"mu": inv, "moved[roll(0,1)]": inv}),
    ]
    page = render(tmp_path, results, run_info={})
    report, arrays = rp.load_report(tmp_path)
    assert report["profile"] == {"shift_invariance": "FAIL",
                                 "shift_invariance[cryoem:invariant]": "PASS"}
    np.testing.assert_array_equal(arrays["shift_invariance"]["mu"], base)
    np.testing.assert_array_equal(arrays["shift_invariance[cryoem:invariant]"]["mu"], inv)
    assert len(pngs(page)) == 2  # one latent map each
    assert "cryoem:invariant</small>" in page  # the profile names each row's model


def test_skipped_checks_show_a_grey_badge_and_their_reason_without_plots(tmp_path):
    reason = "needs ground truth: use data with z_continuous or z_class"
    skipped = CheckResult.skipped("heldout_generalisation", "cryoem:base", reason)
    inner = {"heldout_generalisation": skipped.to_dict(),
             "shift_invariance": result("shift_invariance", model="mnist").to_dict()}
    results = [battery()[0], skipped,
               CheckResult.skipped("heldout_generalisation", "cryoem:invariant", "<odd> & why"),
               CheckResult.skipped("mnist_control", "mnist", "no digits",
                                   details={"profile": inner})]
    page = render(tmp_path, results, run_info={})
    report, arrays = rp.load_report(tmp_path)
    assert report["profile"] == {"shift_invariance": "FAIL", "heldout_generalisation": "SKIP",
                                 "heldout_generalisation[cryoem:invariant]": "SKIP",
                                 "mnist_control": "SKIP"}
    assert [CheckResult.from_dict(c) for c in report["checks"]][1:] == results[1:]
    assert set(arrays) == {"shift_invariance"}
    row = re.search(r"<a href='#check-heldout_generalisation'>heldout_generalisation</a>.*?"
                    r"</tr>", page)
    assert row and "background:#6e7781'>SKIP</span>" in row.group(0) and reason in row.group(0)
    assert f"Skipped: {reason}" in page and "Skipped: &lt;odd&gt; &amp; why" in page
    assert "Inner profile" in page  # the skipped MNIST control still shows its battery
    assert len(pngs(page)) == 2  # the shift check's latents and volumes; none for the skips
    section = page[page.index("id='check-heldout_generalisation'"):]
    section = section[:section.index("</section>")]
    assert "Pass when" not in section and "<table" not in section


# ----------------------------------------------------------------------------- cryoDRGN runs
def cryodrgn_runs() -> dict:
    """``runs`` of an ``ampcheck check --cryodrgn`` report, as ``describe_run`` gives it."""
    files = {"particles": "/proj/stack.128.mrcs", "poses": "/proj/pose.pkl",
             "ctf": "/proj/ctf.pkl", "ind": "/proj/train.pkl", "datadir": None,
             "heldout_ind": "/proj/heldout.pkl"}
    return {"seeds": 1, "seconds": 30.0, "cryodrgn": {
        "run_dir": "/proj/00_vae", "weights": "/proj/00_vae/weights.pkl", "epoch": 8,
        "epoch_requested": None, "cryodrgn_version": "4.3.1",
        "command": ["cryodrgn", "train_vae", "/proj/stack.128.mrcs"],
        "architecture": {"encoder": {"layers": 3, "width": 256, "mode": "resid",
                                     "mask_radius": 64},
                         "decoder": {"layers": 3, "width": 256}, "zdim": 8,
                         "pe_type": "gaussian", "pe_dim": None, "domain": "fourier",
                         "activation": "relu", "D": 128},
        "preprocessing": {"window": True, "window_r": 0.85, "invert_data": True,
                          "norm": [0.0, 97.5], "ctf": True, "translations": True,
                          "do_pose_sgd": False},
        "beta": 0.125,
        "trained_on": {**{k: v for k, v in files.items() if k != "heldout_ind"},
                       "particles": "/old/stack.128.mrcs"},
        "files": files}}


def gap_result(train: np.ndarray | None, heldout: np.ndarray | None,
               gain: float = 2.0) -> CheckResult:
    """An amortization_gap result with the per-image gaps of each side given (None: no such
    side), every image gaining ``gain`` over a constant posterior."""
    arrays, metrics = {}, {}
    for side, g in (("train", train), ("heldout", heldout)):
        if g is not None:
            arrays[f"gap[{side}]"], arrays[f"gain[{side}]"] = g, np.full(len(g), gain)
            frac = float(g.mean() / gain)
            metrics[f"gap_fraction[{side}]"] = Metric(frac, False, frac - 0.05, frac + 0.05)
    worst = max(m.value for m in metrics.values())
    return CheckResult("amortization_gap", "cryodrgn", "FAIL" if worst > 0.5 else "PASS",
                       {"gap_fraction": Metric(worst, False, worst - 0.05, worst + 0.05),
                        **metrics}, Threshold("gap_fraction", 0.5, False, "why"),
                       "the encoder misses ...", arrays=arrays)


def test_a_cryodrgn_report_names_the_run_its_weights_architecture_and_files(tmp_path):
    skipped = CheckResult.skipped("evil_twin", "cryodrgn", "needs a model that ampcheck trains")
    run_info = cryodrgn_runs()
    dataset = {"path": "/proj/stack.128.mrcs", "n": 1000, "D": 128, "apix": 1.7,
               **{k: v for k, v in run_info["cryodrgn"]["files"].items() if k != "particles"}}
    results = [skipped, gap_result(np.full(30, 0.3), np.full(10, 2.0))]
    document = rp.report_document(results, dataset, run_info)
    assert document["runs"]["cryodrgn"] == run_info["cryodrgn"]
    page = render(tmp_path, results, dataset=dataset, run_info=run_info)
    assert rp.load_report(tmp_path)[0]["runs"]["cryodrgn"] == run_info["cryodrgn"]
    header = page[:page.index("</header>")]
    for text in ("cryoDRGN run", "<code>/proj/00_vae</code>", "<code>weights.pkl</code>: "
                 "epoch 8 (the last)", "cryoDRGN 4.3.1",
                 "encoder 3 × 256 (resid, mask radius 64), decoder 3 × 256, zdim 8, "
                 "positional encoding gaussian, fourier domain, relu, D = 128 px",
                 "window r = 0.85, inverted contrast, norm mean 0, std 97.5, CTF, "
                 "translations, no pose SGD", "<code>/proj/heldout.pkl</code>",
                 "<code>/old/stack.128.mrcs</code>", "<code>/proj/stack.128.mrcs</code>"):
        assert text in header, text
    # the particle files are in the run's table, not repeated among the data's facts
    assert header.count("/proj/pose.pkl") == 2 and "<span>poses</span>" not in header
    assert "<span>images</span>1000" in header
    # which checks did not run, and why, in the profile under the header
    row = re.search(r"<a href='#check-evil_twin'>evil_twin</a>.*?</tr>", page)
    assert row and ">SKIP</span>" in row.group(0)
    assert "needs a model that ampcheck trains" in row.group(0)


def test_other_reports_have_no_cryodrgn_section(page):
    assert "cryoDRGN run" not in page


def test_the_gap_per_image_is_drawn_for_training_against_heldout_images(tmp_path):
    lookup = gap_result(np.linspace(0.1, 0.5, 30), np.linspace(1.5, 2.5, 10))  # 0.15 vs 1.0
    page = render(tmp_path, [lookup], run_info={})
    assert len(pngs(page)) == 1
    assert "Each point is one image&#x27;s amortization gap" in page
    assert "gap_fraction[train] 0.15 [0.1, 0.2] and gap_fraction[heldout] 1 [0.95, 1.05]" in page
    assert "Only the held-out images&#x27; mean lies above the threshold" in page

    good = gap_result(np.full(30, 0.1), np.full(10, 0.2))
    page = render(tmp_path, [good], run_info={})
    assert len(pngs(page)) == 1 and "Both means lie within the threshold" in page

    # no gain over a constant posterior on one side: the raw gaps, said so
    flat = gap_result(np.full(30, 0.1), np.full(10, 0.2), gain=-1.0)
    page = render(tmp_path, [flat], run_info={})
    assert len(pngs(page)) == 1 and "so the gaps are not normalised" in page


def test_no_gap_figure_without_heldout_images(tmp_path):
    train_only = gap_result(np.linspace(0.1, 0.5, 30), None)
    page = render(tmp_path, [train_only], run_info={})
    assert rp.load_report(tmp_path)[1]["amortization_gap"].keys() == {"gap[train]",
                                                                       "gain[train]"}
    assert not pngs(page) and "one image&#x27;s amortization gap" not in page


# ----------------------------------------------------------------------------- declarations
def test_a_check_registered_with_a_known_kind_of_figure_gets_its_figure(tmp_path, monkeypatch):
    # a new check brings its picture by declaring it: the renderer knows no check by name
    from ampcheck.checks import CHECKS, CheckSpec
    from ampcheck.display import FigureSpec

    figure = FigureSpec("pairs", ("z", "flipped[*]"), metrics=("move",),
                        caption="{embedding} ({n} images) beside their flipped copies.")
    monkeypatch.setitem(CHECKS, "flip_invariance", CheckSpec(
        "flip_invariance", lambda subject, settings: None, frozenset({"encoder"}),
        "latents under a flip of the image", (figure,)))
    titles = []
    monkeypatch.setattr(rf, "style", lambda ax, method, title: titles.append(title))
    z = latents()
    flip = result("flip_invariance", arrays={"z": z, "flipped[flipud]": -z},
                  extra={"move": Metric(0.5, False, 0.4, 0.6)})
    page = render(tmp_path, [flip], run_info={})
    assert len(pngs(page)) == 1 and titles == ["flipud: move 0.5 [0.4, 0.6]"]
    assert "<figcaption>raw 2-D latents (40 images) beside their flipped copies." in page

    monkeypatch.delitem(CHECKS, "flip_invariance")  # the same arrays, undeclared: no figure
    assert not pngs(render_html(tmp_path).read_text(encoding="utf-8"))


def test_every_kind_of_figure_is_drawn_and_a_declaration_is_checked():
    from ampcheck.checks import CHECKS
    from ampcheck.display import KINDS, FigureSpec

    assert set(rf.DRAW) | {"inner"} == set(KINDS)
    assert all(f.kind in KINDS for spec in CHECKS.values() for f in spec.figures)
    with pytest.raises(ValueError, match="unknown figure kind 'pie'"):
        FigureSpec("pie", ("x",))
    with pytest.raises(ValueError, match="one label per array"):
        FigureSpec("maps", ("mu[a]", "mu[b]"), ("a",))


def test_a_registered_run_description_shows_as_the_runs_facts(tmp_path, monkeypatch):
    # what the page says of a run made elsewhere comes from whoever registered its key
    from ampcheck.display import RUN_FACTS, Code, RunFacts

    def facts(run):
        return RunFacts("Other run", (("directory", (Code(run["dir"]),)),
                                      ("steps", (f"{run['steps']} <steps>",))),
                        ("File", "Used"), (((("images",), (Code("/x/imgs.npy"),)),)),
                        frozenset({"path"}))

    monkeypatch.setitem(RUN_FACTS, "other", facts)
    page = render(tmp_path, [], run_info={"other": {"dir": "/runs/o", "steps": 3}})
    header = page[:page.index("</header>")]
    assert "<h3>Other run</h3><dl><dt>directory</dt><dd><code>/runs/o</code></dd>" in header
    assert "<dd>3 &lt;steps&gt;</dd>" in header and "<td><code>/x/imgs.npy</code></td>" in header
    assert "/data/synthetic" not in header  # the data's path: shown by the run's table
    assert "Other run" not in render(tmp_path, [], run_info={})


def test_a_threshold_reads_the_same_in_the_summary_the_plugin_and_the_page(tmp_path):
    from ampcheck._plugin_records import section
    from ampcheck.results import bound_text

    t = Threshold("fit_ratio", 0.8, True, "why")
    r = CheckResult("vlt_equivalence", "m", "PASS", {"fit_ratio": Metric(0.9, True)}, t, "ok")
    assert bound_text(t) == bound_text(t.to_dict()) == ">= 0.8"
    assert "(pass: >= 0.8)" in r.summary()
    record = {"result": r.to_dict(), "options": {}, "notes": []}
    assert "  threshold: fit_ratio >= 0.8" in section([record])
    assert "pass when ≥ 0.8" in render(tmp_path, [r], run_info={})


def test_jitted_functions_of_a_package_are_kept_compiled_on_disk(tmp_path, monkeypatch):
    # a package of its own, as UMAP's: numba writes its code beside the source once compiled
    (tmp_path / "jit_probe.py").write_text(
        "import numba\n\n@numba.njit\ndef plus_one(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import jit_probe

    from ampcheck.render.plotting import keep_compiled

    assert keep_compiled("jit_probe") == 1
    assert keep_compiled("jit_probe") == 0  # once is enough
    assert jit_probe.plus_one(1) == 2
    kept = {p.suffix for p in (tmp_path / "__pycache__").iterdir()}
    assert {".nbi", ".nbc"} <= kept


def test_where_no_cache_can_be_written_functions_are_compiled_as_before(tmp_path, monkeypatch):
    from numba.core.dispatcher import Dispatcher

    (tmp_path / "jit_probe_ro.py").write_text(
        "import numba\n\n@numba.njit\ndef plus_two(x):\n    return x + 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import jit_probe_ro

    def nowhere(self):  # what numba raises where no cache folder is writable
        raise RuntimeError("cannot cache function: no locator available")

    monkeypatch.setattr(Dispatcher, "enable_caching", nowhere)
    from ampcheck.render.plotting import keep_compiled

    assert keep_compiled("jit_probe_ro") == 0
    assert jit_probe_ro.plus_two(1) == 3
    assert not (tmp_path / "__pycache__").exists() or not any(
        p.suffix in (".nbi", ".nbc") for p in (tmp_path / "__pycache__").iterdir())
