"""amortization_gap and heldout_generalisation: does the encoder's inference carry over?

``amortization_gap`` (Cremer et al. 2018). The decoder is frozen; for a sample of images a
local Gaussian ``q_i = N(m_i, diag(exp(v_i)))`` starts at the encoder's output and is
optimised (Adam) on that image's ELBO alone. With ``E_enc``, ``E_local`` and ``E_0`` the ELBO
at the encoder's q, at the optimised q and at one constant q for every image (the sample's
mean posterior), each estimated with the same fixed draws,

    gap_i = E_local,i - E_enc,i          gap_fraction = mean(gap) / mean(E_local - E_0)

(``E_local`` is the better of the optimised and the starting q, per image, so that a noisy
optimisation never makes the gap negative). 0: the encoder finds each image's optimum;
1: it does no better than a constant. Measured on training and on held-out images; the
governing value is the larger. The result's arrays keep, for the first seed, each sampled
image's ``gap[train]`` / ``gap[heldout]`` and its ``gain[...]`` (``E_local - E_0``), so that a
report can draw the gap per image on each side, normalised as ``gap_fraction`` is (by the
mean gain of its side: the mean of the normalised gaps is that side's ``gap_fraction``).

The fraction means nothing where the decoder makes no use of the latent: then local
optimisation gains nothing over a constant q (``local_gain`` not measurably above 0 on a
side), or gains only by moving q towards the prior, in the KL term, while the reconstruction
term does not improve (``recon_gain[train]``, the reconstruction loss at the constant q minus
at the local q on training images, not measurably above 0). Either is flagged ``no_fit`` and
gives WARN, never PASS or FAIL.

``heldout_generalisation``: the latents' recovery of the ground truth on training images
(out-of-fold predictions) and on held-out images (a regressor, or k-means clusters, fitted on
the training latents and applied to the held-out ones); ``recovery_drop`` = training -
held-out. The continuous coordinate is regressed linearly unless the subject's option
``recovery_method`` says ``"knn"``; without it the classes are clustered (AMI). A truth that
is constant on either side of the split is no truth (its R² or AMI is undefined): the other
key is used, and without one the check is a ``SKIP`` that says so.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import metrics as M
from ..display import FigureSpec
from ..results import CheckResult, decide
from ..train import kl_divergence
from ._common import (
    Settings,
    boot,
    floors_missed,
    least_informative,
    mean_of,
    mean_ratio,
    missing_reason,
    percent,
    plain,
    pooled,
    sample,
    spread_to_width,
    truth_of,
    unused,
    usable_truth,
    verdict_with_guard,
    worst_of,
)
from .subject import Subject


# ---------------------------------------------------------------------------- amortization gap
def _recon(closure, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor
           ) -> torch.Tensor:
    """Per-image expected reconstruction loss ``(B,)`` with the draws ``eps (S, B, zdim)``."""
    return torch.stack([closure(mu + e * torch.exp(0.5 * logvar)) for e in eps]).mean(0)


def _elbo(closure, kl_scale: float, mu: torch.Tensor, logvar: torch.Tensor,
          eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ELBO ``(B,)`` with the draws ``eps (S, B, zdim)``, and the expected
    reconstruction loss ``(B,)`` it holds (both on the CPU)."""
    recon = _recon(closure, mu, logvar, eps).float().cpu()
    return -(recon + kl_scale * kl_divergence(mu, logvar)), recon


def local_elbos(model, data, idx: np.ndarray, settings: Settings, seed: int = 0
                ) -> dict[str, np.ndarray]:
    """``E_enc``, ``E_local`` and ``E_0`` per image ``(B,)`` for images ``idx`` of ``data``
    (``enc``, ``local``, ``const``), and the reconstruction gain of the local q over the
    constant one (``recon_gain``: the expected reconstruction loss at ``E_0``'s q minus at
    ``E_local``'s)."""
    mu0, lv0 = (torch.from_numpy(a) for a in model.encode(data, idx))
    closure, kl_scale = model.recon_closure(data, idx), model.kl_scale
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn((settings.gap_samples, *mu0.shape), generator=gen)
    with torch.no_grad():
        e_enc, r_enc = _elbo(closure, kl_scale, mu0, lv0, eps)
        const = (mu0.mean(0).expand_as(mu0), lv0.mean(0).expand_as(lv0))
        e_0, r_0 = _elbo(closure, kl_scale, *const, eps)
    mu, lv = mu0.clone().requires_grad_(True), lv0.clone().requires_grad_(True)
    opt = torch.optim.Adam([mu, lv], lr=settings.gap_lr)
    with torch.enable_grad():
        for _ in range(settings.gap_steps):
            draw = torch.randn((1, *mu0.shape), generator=gen)
            loss = -_elbo(closure, kl_scale, mu, lv, draw)[0].sum()  # images are independent
            # gradients for q only: the (shared, cached) decoder is left untouched
            mu.grad, lv.grad = torch.autograd.grad(loss, [mu, lv])
            opt.step()
    with torch.no_grad():
        e_opt, r_opt = _elbo(closure, kl_scale, mu.detach(), lv.detach(), eps)
    e_local = torch.maximum(e_opt, e_enc)
    r_local = torch.where(e_opt >= e_enc, r_opt, r_enc)  # the q that E_local is the ELBO of
    return {"enc": e_enc.numpy(), "local": e_local.numpy(), "const": e_0.numpy(),
            "recon_gain": (r_0 - r_local).numpy()}


def amortization_gap(subject: Subject, settings: Settings) -> CheckResult:
    """How far is the encoder's posterior from each image's own optimum (training, held-out)?"""
    threshold = settings.thresholds["amortization_gap"]
    sets = {"train": subject.train}
    if subject.heldout is not None:
        sets["heldout"] = subject.heldout
    frac: dict[str, list] = {k: [] for k in sets}
    gap: dict[str, list] = {k: [] for k in sets}
    gain: dict[str, list] = {k: [] for k in sets}
    worst, recon_gain, arrays = [], [], {}
    n = min(settings.n_gap, *(len(d) for d in sets.values()))  # one size: resamples are shared
    for seed in subject.seeds:
        model = subject.model(seed)
        per = {}
        for name, data in sets.items():
            idx = sample(len(data), n, seed)
            e = local_elbos(model, data, idx, settings, seed)
            g, total = e["local"] - e["enc"], e["local"] - e["const"]
            per[name] = (g, total)
            if seed == subject.seeds[0]:  # what the report draws: the gap image by image
                arrays[f"gap[{name}]"] = g.astype(np.float32)
                arrays[f"gain[{name}]"] = total.astype(np.float32)
            frac[name].append(boot(mean_ratio(g, total), len(idx), settings, seed))
            if name == "train":
                recon_gain.append(boot(mean_of(e["recon_gain"]), len(idx), settings, seed))
            gap[name].append(boot(lambda b, g=g: float(g[b].mean()), len(idx), settings, seed))
            gain[name].append(boot(lambda b, t=total: float(t[b].mean()), len(idx), settings,
                                   seed))
        worst.append(boot(lambda b, p=per: worst_of(mean_ratio(g, t)(b) for g, t in p.values()),
                          n, settings, seed))
    metrics = {"gap_fraction": pooled(worst, False, settings)}
    for name in sets:
        metrics[f"gap_fraction[{name}]"] = pooled(frac[name], False, settings)
        metrics[f"gap[{name}]"] = pooled(gap[name], False, settings)
        metrics[f"local_gain[{name}]"] = pooled(gain[name], True, settings)
    metrics["recon_gain[train]"] = pooled(recon_gain, True, settings)
    verdict, flags = decide(metrics["gap_fraction"], threshold), []
    f = metrics["gap_fraction"].value
    if not all(metrics[f"local_gain[{name}]"].lo > 0 for name in sets):
        flags.append("no_fit")
        verdict = "WARN"
        text = ("per-image optimisation gains nothing over a constant posterior: the decoder "
                "does not use the latent yet, so the gap is not measurable")
    elif unused(metrics["recon_gain[train]"]):
        flags.append("no_fit")
        verdict = "WARN"
        text = (f"per-image optimisation fits the training images no better than a constant "
                f"posterior (reconstruction gain {metrics['recon_gain[train]'].value:.2g}, "
                "interval reaching 0): the decoder does not use the latent, what it gains is "
                f"the prior's, so the gap ({f:.2g}) says nothing about inference")
    elif verdict == "PASS":
        text = f"the encoder gets within {percent(f)} of each image's optimal posterior"
    elif verdict == "FAIL":
        text = f"the encoder misses {percent(f)} of what per-image optimisation reaches"
    else:
        text = f"gap fraction {f:.2g} is within its uncertainty of the threshold"
    return CheckResult("amortization_gap", subject.name, verdict, metrics, threshold, text,
                       tuple(flags), subject.seeds,
                       {"n_images": int(n), "steps": settings.gap_steps}, arrays)


#: What the report draws of amortization_gap: each image's gap, training against held-out.
GAP_FIGURES = (FigureSpec("gap", ("gap[train]", "gap[heldout]"), ("training", "held-out"),
                          metrics=("gap_fraction",)),)


# ---------------------------------------------------------------------------- held-out
def _recovery(mu_tr, mu_ho, truth_tr, truth_ho, seed: int, method: str = "linear",
              key: str = "z_continuous"):
    """``(name, scorer on training, scorer on held-out)``: each scorer maps a resample of its
    images to a score, so both can be bootstrapped. The regression ``method`` is fixed in
    advance (choosing the better one by its training score would inflate that score); ``key``
    is the truth measured against (``z_continuous``: regression, ``z_class``: clustering)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, r2_score
    from threadpoolctl import threadpool_limits

    if key == "z_continuous":
        y_tr = np.asarray(truth_tr["z_continuous"], float)
        y_ho = np.asarray(truth_ho["z_continuous"], float)
        p_tr = M.cv_predictions(mu_tr, y_tr, method=method, seed=seed)  # out of fold
        p_ho = M.fit_predict(mu_tr, y_tr, mu_ho, method=method)
        return (f"r2_{method}", lambda b: float(r2_score(y_tr[b], p_tr[b])),
                lambda b: float(r2_score(y_ho[b], p_ho[b])))
    l_tr, l_ho = np.asarray(truth_tr["z_class"]), np.asarray(truth_ho["z_class"])
    with threadpool_limits(1, user_api="openmp"):  # see metrics.cluster_labels
        km = KMeans(len(np.unique(l_tr)), n_init=10, random_state=seed).fit(mu_tr)
    c_tr, c_ho = km.labels_, km.predict(mu_ho)
    return ("ami", lambda b: float(adjusted_mutual_info_score(l_tr[b], c_tr[b])),
            lambda b: float(adjusted_mutual_info_score(l_ho[b], c_ho[b])))


def heldout_generalisation(subject: Subject, settings: Settings) -> CheckResult:
    """Do held-out images land on the latent map that the training images built?"""
    threshold = settings.thresholds["heldout_generalisation"]
    # the truth measured against: one that varies on both sides of the split (the R² of a
    # constant, or an AMI against one class, is undefined; see usable_truth)
    splits = (truth_of(subject.train, np.arange(len(subject.train))),
              truth_of(subject.heldout, np.arange(len(subject.heldout))))
    usable = usable_truth(*splits)
    if not usable:
        reason = missing_reason("truth", *splits)
        if usable_truth(truth_of(subject.data, np.arange(len(subject.data)))):
            reason += " on the training or on the held-out images"  # only one side varies
        return CheckResult.skipped("heldout_generalisation", subject.name, reason,
                                   subject.seeds)
    key = usable[0]
    drop, rec_tr, rec_ho, info = [], [], [], []
    kind, arrays = "", {}
    for seed in subject.seeds:
        model = subject.model(seed)
        i_tr = sample(len(subject.train), settings.n_eval, seed)
        i_ho = sample(len(subject.heldout), settings.n_eval, seed)
        mu_tr, lv_tr = model.encode(subject.train, i_tr)
        mu_ho, _ = model.encode(subject.heldout, i_ho)
        t_tr, t_ho = truth_of(subject.train, i_tr), truth_of(subject.heldout, i_ho)
        kind, s_tr, s_ho = _recovery(mu_tr, mu_ho, t_tr, t_ho, seed,
                                     subject.options.get("recovery_method", "linear"), key)
        if not arrays:  # what the report draws: both sets on one latent map
            arrays = {"mu[train]": mu_tr, "mu[heldout]": mu_ho,
                      **{f"truth[{k}][train]": v for k, v in t_tr.items()},
                      **{f"truth[{k}][heldout]": v for k, v in t_ho.items()}}
        a = boot(s_tr, len(i_tr), settings, seed)
        b = boot(s_ho, len(i_ho), settings, seed + 10_000)  # an independent resampling stream
        rec_tr.append(a)
        rec_ho.append(b)
        # the replicates of a difference of two independent resamplings, centred on its value
        d = a.value - b.value
        drop.append(M.Interval(d, float("nan"), float("nan"), M.centred(d, a.samples - b.samples)))
        info.append({"spread_to_width": spread_to_width(mu_tr, lv_tr, seed),
                     "truth_r2" if kind.startswith("r2") else "truth_ami": a.value})
    metrics = {"recovery_drop": pooled(drop, False, settings),
               f"{kind}[train]": pooled(rec_tr, True, settings),
               f"{kind}[heldout]": pooled(rec_ho, True, settings)}
    metrics["spread_to_width"] = plain([i["spread_to_width"] for i in info], True)
    missed = floors_missed(least_informative(info), settings)
    verdict, flags = verdict_with_guard(metrics["recovery_drop"], threshold, bool(missed))
    d, tr = metrics["recovery_drop"].value, metrics[f"{kind}[train]"].value
    ho = metrics[f"{kind}[heldout]"].value
    if verdict == "FAIL":
        text = f"truth recovery falls from {tr:.2f} on training to {ho:.2f} on held-out images"
    elif "uninformative" in flags and "informative_recovery" in missed:
        text = (f"training latents recover the truth too poorly ({kind} {tr:.2f}) for "
                "generalisation to be judged")
    elif "uninformative" in flags:  # they recover the truth, but hardly vary
        text = (f"training latents are collapsed (spread_to_width "
                f"{metrics['spread_to_width'].value:.2g}, below its floor) for "
                "generalisation to be judged")
    elif verdict == "PASS":
        text = f"held-out images are placed as well as training ones ({kind} {tr:.2f} vs {ho:.2f})"
    else:
        text = f"recovery drop {d:.2g} is within its uncertainty of the threshold"
    return CheckResult("heldout_generalisation", subject.name, verdict, metrics, threshold,
                       text, tuple(flags), subject.seeds,
                       {"measure": kind, "n_train": int(len(i_tr)), "n_heldout": int(len(i_ho))},
                       arrays)


#: What the report draws of heldout_generalisation: both sets of latents on one map.
HELDOUT_FIGURES = (
    FigureSpec("joint_map", ("mu[train]", "mu[heldout]"), ("training", "held-out"),
               caption="Training and held-out images in one latent map: held-out images "
                       "should land among the training images of the same truth."),
)
