"""pose_leakage and noise_resampling: their geometry, their controls, and bad input.

The controls are hand-built encoders (no training, seconds): an oracle whose latents are the
ground truth, a leaky one whose latents also carry the in-plane angle, a collapsed one, and
the exact posterior of a linear-Gaussian model. The trained models' numbers are in the README.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from linear_gaussian import ExactPosterior, LinearGaussianData

from ampcheck.checks import check_vae
from ampcheck.cryoem.nuisance import in_plane_angle, nuisance_features, viewing_direction
from ampcheck.cryoem.rotations import inplane_rotation, random_rotations
from ampcheck.data.particles import ParticleDataset
from ampcheck.data.synthetic import PREFERRED_VIEWS, Renoiser, SynthConfig, generate
from ampcheck.errors import ConfigError

N, D = 300, 16  # enough images for five folds of a few dozen features; seconds to make


class Constructed:
    """Latents built from what the batch says: ``oracle`` (the truth, a little jitter per
    image, the same under any noise), ``leaky`` (the oracle's plus the in-plane angle),
    ``pixels`` (a fixed projection of the image: it follows the noise), ``collapsed``; all
    2-D, so that their figures need no UMAP."""

    def __init__(self, kind: str, truth, D: int = D):
        self.kind, self.truth = kind, truth
        rng = np.random.default_rng(0)
        self.jitter = rng.normal(size=(len(truth["z_continuous"]), 2)) * 0.1
        self.proj = torch.as_tensor(rng.normal(size=(D * D, 2)) / D, dtype=torch.float32)

    def encode(self, x, meta):
        i = meta["index"].numpy()
        conf = np.column_stack([3 * self.truth["z_continuous"][i],
                                2.0 * self.truth["z_class"][i]]) + self.jitter[i]
        mu = torch.as_tensor(conf, dtype=torch.float32)
        if self.kind == "leaky":  # its second coordinate is the in-plane angle's cosine
            psi = in_plane_angle(meta["rot"].double().numpy())
            mu = torch.as_tensor(np.column_stack([conf.sum(1), 2 * np.cos(psi)]),
                                 dtype=torch.float32)
        elif self.kind == "pixels":
            mu = x.reshape(len(x), -1) @ self.proj
        elif self.kind == "collapsed":
            return torch.zeros(len(i), 2), torch.zeros(len(i), 2)
        return mu, torch.full_like(mu, -4.0)

    def recon_loss(self, x, z, meta=None):
        return (z ** 2).sum(1)


@pytest.fixture(scope="module")
def uniform_views(tmp_path_factory):
    out = generate(tmp_path_factory.mktemp("views") / "uniform", SynthConfig(n=N, D=D),
                   show_progress=False).out
    return ParticleDataset.from_dir(out)


@pytest.fixture(scope="module")
def preferred_views(tmp_path_factory):
    out = generate(tmp_path_factory.mktemp("views") / "preferred",
                   SynthConfig(n=N, D=D, view_preference=0.8), show_progress=False).out
    return ParticleDataset.from_dir(out)


def _run(kind: str, data, check: str):
    (r,) = check_vae(Constructed(kind, data.truth), data, checks=[check], budget="smoke")
    return r


# ---------------------------------------------------------------------------- geometry
def test_the_in_plane_angle_turns_with_the_image_and_the_view_does_not():
    rot = random_rotations(200, np.random.default_rng(1))
    turned = inplane_rotation(np.full(200, 30.0)) @ rot  # the image turned in its plane
    step = np.angle(np.exp(1j * (in_plane_angle(turned) - in_plane_angle(rot))))
    np.testing.assert_allclose(np.degrees(step), 30.0, atol=1e-6)
    np.testing.assert_allclose(viewing_direction(turned), viewing_direction(rot), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(viewing_direction(rot), axis=1), 1.0)


def test_variables_that_cannot_be_measured_say_why():
    rot = random_rotations(50, np.random.default_rng(2))
    flat = np.repeat(rot[:1], 50, axis=0)  # one pose for all: no in-plane, no view spread
    ctf = np.tile([16, 12.0, 1e4, 1e4, 0, 300, 2.7, 0.1, 0], (50, 1))  # one defocus
    found = nuisance_features(flat, None, ctf)
    assert found["in_plane"].startswith("the poses carry no in-plane information")
    assert found["view"] == "every image has the same viewing direction"
    assert found["shift"] == "the poses carry no shifts"
    assert found["defocus"].startswith("the CTF has no defocus")
    assert nuisance_features(None, None, None)["view"] == "the data have no poses"
    ok = nuisance_features(rot, np.random.default_rng(3).normal(size=(50, 2)), None)
    assert ok["in_plane"].knn.shape == (50, 2) and ok["view"].knn.shape == (50, 3)
    assert ok["defocus"] == "the data have no CTF"


def test_the_fold_predictions_are_scikit_learns():
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import cross_val_predict
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ampcheck.checks.leakage import K_NEIGHBOURS, RIDGE, folds, oof

    rng = np.random.default_rng(4)
    x = rng.normal(size=(120, 5)) * [1, 2, 3, 0.5, 10]
    y = np.column_stack([np.sin(x[:, 0]), x[:, 1] * x[:, 2]]) + rng.normal(size=(120, 2))
    cv = [(np.setdiff1d(np.arange(120), t), t) for t in folds(120, seed=3)]
    for method, reg in (("linear", Ridge(alpha=RIDGE)), ("knn", KNeighborsRegressor(K_NEIGHBOURS))):
        theirs = cross_val_predict(make_pipeline(StandardScaler(), reg), x, y, cv=cv)
        np.testing.assert_allclose(oof(x, y, method, seed=3), theirs, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------- pose_leakage
def test_pose_leakage_controls(uniform_views, tmp_path):
    oracle = _run("oracle", uniform_views, "pose_leakage")
    assert oracle.verdict == "PASS", oracle.summary()
    assert oracle.governing.hi < 0.02
    leaky = _run("leaky", uniform_views, "pose_leakage")
    assert leaky.verdict == "FAIL", leaky.summary()
    assert leaky.governing.lo > 0.5 and leaky.metrics["leakage[in_plane]"].lo > 0.5
    assert abs(leaky.metrics["leakage[view]"].value) < 0.1  # the angle leaks, not the view
    assert "most from in_plane" in leaky.explanation
    collapsed = _run("collapsed", uniform_views, "pose_leakage")
    assert collapsed.verdict == "WARN" and "uninformative" in collapsed.flags
    # the report draws the latents coloured by each variable
    from ampcheck.render import render_html
    from ampcheck.report import write_report

    write_report(tmp_path, [oracle, leaky], {"n": N}, {}, render=render_html)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "coloured by each nuisance variable" in page


def test_a_preference_of_states_for_views_is_not_reported_as_leakage(preferred_views):
    rot = preferred_views.rot
    z = preferred_views.truth["z_class"]
    for cls, view in PREFERRED_VIEWS.items():  # the data set has the preference it says
        assert (viewing_direction(rot[z == cls]) @ view > 0.9).mean() > 0.6
    oracle = _run("oracle", preferred_views, "pose_leakage")
    # the view predicts the latents (the latents are the state, the state prefers a view) ...
    assert oracle.metrics["leakage[raw]"].lo > 0.3
    # ... but nothing beyond what the truth explains: no leakage
    assert oracle.verdict == "PASS", oracle.summary()
    assert oracle.details["conditioned_on_truth"]
    leaky = _run("leaky", preferred_views, "pose_leakage")
    assert leaky.verdict == "FAIL", leaky.summary()


def test_a_view_preference_changes_the_poses_alone():
    from ampcheck.data.synthetic import draw_parameters

    plain = draw_parameters(SynthConfig(n=N, D=D))
    preferring = draw_parameters(SynthConfig(n=N, D=D, view_preference=0.8))
    for name in ("shift_px", "ctf", "z_continuous", "z_class"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(preferring, name))
    moved = ~np.all(np.isclose(plain.rot, preferring.rot), axis=(1, 2))
    assert 0.7 < moved.mean() < 0.9
    np.testing.assert_allclose(np.linalg.det(preferring.rot), 1.0)  # still rotations
    np.testing.assert_allclose(preferring.rot @ preferring.rot.transpose(0, 2, 1),
                               np.broadcast_to(np.eye(3), (N, 3, 3)), atol=1e-12)
    with pytest.raises(ConfigError, match="view_preference must be in"):
        SynthConfig(view_preference=1.5)


def test_pose_leakage_without_usable_poses_is_a_skip_that_says_why(uniform_views, digits_like):
    stack = uniform_views.stack
    n = len(uniform_views)
    one = np.repeat(np.eye(3, dtype=np.float32)[None], n, axis=0)
    flat = ParticleDataset(stack, one, None, None, uniform_views.truth)
    (r,) = check_vae(Constructed("oracle", flat.truth), flat, checks=["pose_leakage"],
                     budget="smoke")
    assert r.verdict == "SKIP"
    assert r.explanation.startswith("no nuisance variable to predict the latents from: "
                                    "in_plane: the poses carry no in-plane information")
    assert "defocus: the data have no CTF" in r.explanation
    # no poses at all: not applicable, in one line, and an error when asked for by name
    (r,) = check_vae(Constructed("oracle", flat.truth), digits_like, budget="smoke",
                     checks=["pose_leakage"], strict=False)
    assert r.verdict == "SKIP" and r.explanation.startswith("needs poses")
    with pytest.raises(ConfigError, match="pose_leakage needs a subject that is poses"):
        check_vae(Constructed("oracle", flat.truth), digits_like, checks=["pose_leakage"],
                  budget="smoke")


@pytest.fixture(scope="module")
def digits_like(uniform_views):
    """The same images without poses or CTF (an image set such as MNIST's)."""
    return ParticleDataset(uniform_views.stack, truth=uniform_views.truth)


# ---------------------------------------------------------------------------- noise_resampling
def test_the_generator_re_renders_its_clean_images_exactly():
    data = ParticleDataset.from_dir("fixtures/tiny")
    manifest = json.loads(open("fixtures/tiny/manifest.json").read())
    renoiser = Renoiser.from_manifest(manifest)
    cfg = renoiser.cfg
    # the stack is the clean images plus the generator's own noise stream, to the bit
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(5)[4])
    clean = renoiser.clean(np.arange(cfg.n))
    noisy = (clean + renoiser.noise_std * rng.standard_normal(clean.shape)).astype(np.float32)
    np.testing.assert_array_equal(noisy, data.images(np.arange(cfg.n)))
    # a draw is reproducible whatever the batch, at the data set's noise level
    draw = data.noise_draw(3)
    a, b = draw.images([1, 2]), draw.images([2])
    np.testing.assert_array_equal(a[1], b[0])
    assert not np.array_equal(a, data.noise_draw(4).images([1, 2]))
    assert abs(np.std(a - clean[[1, 2]]) / renoiser.noise_std - 1) < 0.1
    assert draw.get_batch([0])["y"].shape == (1, cfg.D + 1, cfg.D + 1)


def test_data_without_clean_images_skip_noise_resampling(uniform_views, tmp_path):
    for f in ("particles.mrcs", "poses.pkl", "ctf.pkl", "truth.npz"):  # no manifest
        shutil.copy(uniform_views.stack.path.parent / f, tmp_path / f)
    real = ParticleDataset.from_dir(tmp_path)
    assert real.resample_noise_problem().startswith("no clean images: the data set was not "
                                                    "generated by ampcheck")
    with pytest.raises(ConfigError, match="cannot re-noise its images"):
        real.noise_draw(0)
    (r,) = check_vae(Constructed("oracle", real.truth), real, budget="smoke",
                     checks=["noise_resampling"], strict=False)
    assert r.verdict == "SKIP" and r.explanation.startswith("needs clean images to re-noise")
    # a manifest that does not describe the stack beside it is no generator either
    manifest = json.loads((uniform_views.stack.path.parent / "manifest.json").read_text())
    manifest["config"]["seed"] = 5
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert "does not match" in ParticleDataset.from_dir(tmp_path).resample_noise_problem()


@pytest.mark.parametrize("w_scale", [0.1, 0.35, 1.0])  # posterior variance 0.6, 0.1, 0.02
def test_the_exact_linear_gaussian_posterior_is_calibrated(w_scale):
    data = LinearGaussianData(w_scale=w_scale)
    exact = ExactPosterior(data)
    (r,) = check_vae(exact, data, checks=["noise_resampling"], budget="smoke")
    c = r.metrics["calibration"]
    assert c.lo <= 1 <= c.hi, r.summary()
    assert r.metrics["miscalibration"].lo == 0
    if w_scale >= 0.35:  # informative latents: a verdict that counts
        assert r.verdict == "PASS", r.summary()
    # a posterior that is 4 times too narrow or too wide is off by more than its interval
    (narrow,) = check_vae(ExactPosterior(data, 0.25), data, checks=["noise_resampling"],
                          budget="smoke")
    assert narrow.metrics["calibration"].lo > 1.3
    (wide,) = check_vae(ExactPosterior(data, 4.0), data, checks=["noise_resampling"],
                        budget="smoke")
    assert wide.metrics["calibration"].hi < 0.6 or wide.metrics["calibration"].value == np.inf
    if w_scale == 1.0:  # where the data dominate the prior, both are off by a factor 4
        assert narrow.verdict == "FAIL" and "overconfident" in narrow.explanation
        assert wide.verdict == "FAIL" and "underconfident" in wide.explanation


def test_noise_resampling_controls(uniform_views, tmp_path):
    ignores = _run("oracle", uniform_views, "noise_resampling")  # the same under any noise
    assert ignores.metrics["displacement"].value == 0
    assert ignores.verdict == "FAIL" and "underconfident" in ignores.explanation
    follows = _run("pixels", uniform_views, "noise_resampling")  # a projection of the pixels
    assert follows.metrics["displacement"].lo > 0.5, follows.summary()
    collapsed = _run("collapsed", uniform_views, "noise_resampling")
    assert collapsed.verdict == "WARN" and "uninformative" in collapsed.flags
    # the report joins each particle's draws
    from ampcheck.render import render_html
    from ampcheck.report import write_report

    write_report(tmp_path, [ignores, follows], {"n": N}, {}, render=render_html)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "noise draws (crosses)" in page
