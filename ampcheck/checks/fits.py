"""evil_twin and vlt_equivalence: compare how well variants of one model fit the same images.

Both retrain the subject's model with another latent source at the same budget and seed, and
measure per-image reconstruction losses on training images. What matters is how much each
model's latents tell its own decoder about *this* image:

    use_i(v) = L_v(z of another image) - L_v(z of image i)

with ``z`` the model's posterior means and "another image" a fixed derangement of the
sample. This is the SPEC's ``L_null - L`` with ``L_null`` read as "the same decoder, a latent
that carries no per-image information": each model is its own null, so differences in how
the variants' decoders happened to train do not pass for information (a separately trained
homogeneous model's decoder differs from the variants' by more than the latents' whole
contribution at a small budget).

* ``evil_twin`` (paper §3.3): ``memorisation = mean use(twin) / mean use(baseline)`` for the
  permutation twin and the noise twin; about 1 when an encoder fed a fixed *other* image (or
  noise) lets its decoder fit as well as one fed the image itself, i.e. it memorises;
  governing: the larger of the two.
* ``vlt_equivalence`` (paper §3.2, App. C): ``fit_ratio = mean use(encoder) / mean use(VLT)``,
  and the agreement of the two latent spaces (debiased linear CKA, k-NN overlap, Procrustes:
  all invariant to rotations of the latent space), their truth recovery, and, for synthetic
  cryo-EM data with ground-truth volumes, the AUC-FSC of each model's volume decoded at an
  image's latent against the true volume nearest that image's conformation.

Neither ratio means anything when the reference (the baseline, or the VLT) has not learned,
and the check then says so and gives WARN, never PASS or FAIL:

* its latents are of no measurable use to its decoder (interval of the mean use not above 0:
  flag ``no_fit``);
* they carry almost nothing next to the other side's: the ratio is above its ceiling (flag
  ``uninformative``), ``informative_table`` for the fit ratio (1.25: the table gives less
  than 80% of what the encoder gives, where a table that has learned gives at least about
  as much) and ``informative_baseline`` for memorisation (2: the baseline gives less than
  half of what the twins give, where a perfect memoriser is at best a table). This guard
  needs no ground truth (a lookup table that barely left its initial rows would otherwise
  pass the encoder by a large fit ratio);
* they are collapsed (spread below its floor) or, with ground truth known, carry no more of
  the truth than chance (flag ``uninformative``: the ratio would compare one small,
  non-conformational effect with another).
"""

from __future__ import annotations

import numpy as np

from .. import metrics as M
from ..display import FigureSpec
from ..errors import ConfigError
from ..results import CheckResult, decide
from ._common import (
    Settings,
    boot,
    central_slices,
    decoder_use,
    floors_missed,
    informativeness,
    least_informative,
    mean_of,
    mean_ratio,
    percent,
    plain,
    pooled,
    reference_empty,
    sample,
    truth_of,
    truth_recovery,
    unused,
    use_ratio,
    worst_of,
)
from .subject import Subject


def latent_use(run, data, idx: np.ndarray, seed: int = 0) -> np.ndarray:
    """``use_i`` (see the module docstring) for training images ``idx`` of a run ``(B,)``, at
    the latents of its own latent source (:func:`~._common.decoder_use`)."""
    return decoder_use(run, data, idx, run.latents(idx)[0], seed)


def _unmeasurable(verdict: str, reference_use, info: list[dict], ratios: list[float],
                  ceiling: str, settings: Settings, flags: list[str]) -> tuple[str, list[str]]:
    """The verdict (WARN when flagged) and why, in words, when the reference has not learned
    (see the module docstring): ``flags`` gets ``no_fit`` and/or ``uninformative``; the
    reasons name each guard that fired (``empty``: the ratio's ceiling)."""
    reasons = []
    if unused(reference_use):
        flags.append("no_fit")
        reasons.append("no_fit")
    if reference_empty(ratios, settings, ceiling):
        reasons.append("empty")
    missed = floors_missed(least_informative(info), settings)
    reasons += missed
    if ("empty" in reasons or missed) and "uninformative" not in flags:
        flags.append("uninformative")
    return ("WARN" if flags else verdict), reasons


def _why(reasons: list[str]) -> str:
    """The guards that fired other than the ratio's ceiling, in words."""
    words = {"no_fit": "of no measurable use to its decoder",
             "informative_spread": "collapsed (spread below its floor)",
             "informative_recovery": "no better than chance at recovering the truth"}
    return " and ".join(words[r] for r in reasons if r in words)


def _empty(side: str, others: str, use: float, other_use: float) -> str:
    """Why a reference (``side``, e.g. "the lookup table") whose latent use ``use`` is far
    below the other side's (``others``: whose latents, e.g. "the encoder's") is not compared
    with it, naming the empty side (a ratio of 18 is never "1800% of")."""
    if not other_use > 0:  # one seed's reference was empty, the seeds' means are not
        return (f"{side} has not learned at some training seed: its latents give its decoder "
                f"far less than {others} give theirs")
    share = use / other_use
    what = (f"{side}'s latents carry almost nothing: they give" if share < 0.1 else
            f"{side} has not learned: its latents give")
    return (f"{what} its decoder only {percent(share)} of what {others} give theirs (latent use "
            f"{use:.2g} against {other_use:.2g}), where one that has learned gives at least "
            "about as much")


def volumes_missing(runs: dict, subject: Subject) -> str | None:
    """Why decoded volumes cannot be compared with the truth (None when they can), from the
    declared capabilities of the data and of each run."""
    if not subject.capabilities.truth_volumes:
        return "the data set has no ground-truth volumes"
    cannot = [name for name, run in runs.items() if not run.capabilities.decode_volume]
    if cannot:
        return f"the {' and '.join(cannot)} model(s) decode no volumes"
    return None


def volume_agreement(runs: dict, latents: dict, subject: Subject, idx: np.ndarray,
                     n: int, seed: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Mean AUC-FSC ``{name: value}`` of each run's volume at its latent of ``n`` images
    against the true volume nearest each image's conformation, and the central slices
    ``(n, 3, D, D)`` of those volumes (``slices[<name>]``, ``slices[truth]``, with the images'
    ``z_continuous``); both empty without such volumes (:func:`volumes_missing` says why)."""
    truth = truth_of(subject.train, idx)
    if n < 1 or volumes_missing(runs, subject) or "z_continuous" not in truth:
        return {}, {}
    volumes = subject.data.truth_volumes()
    pick = sample(len(idx), n, seed + 7)
    nearest = []
    for p in pick:
        zc = float(truth["z_continuous"][p])
        cls = int(truth["z_class"][p]) if "z_class" in truth else None
        same = [v for v in volumes if cls is None or v.z_class == cls] or list(volumes)
        nearest.append(min(same, key=lambda v: abs(v.z_continuous - zc)).volume)
    out, slices = {}, {"slices[truth]": np.stack([central_slices(v) for v in nearest]),
                       "z_continuous": truth["z_continuous"][pick]}
    for name, run in runs.items():
        decoded = [run.decode_volume(latents[name][p]) for p in pick]
        out[name] = float(np.mean([M.auc_fsc(M.fsc(d, t)) for d, t in zip(decoded, nearest,
                                                                           strict=True)]))
        slices[f"slices[{name}]"] = np.stack([central_slices(d) for d in decoded])
    return out, slices


def _reference_info(mu: np.ndarray, logvar: np.ndarray, subject: Subject, idx: np.ndarray,
                    seed: int) -> dict[str, float]:
    return informativeness(mu, logvar, truth_of(subject.train, idx), seed)


def _own_encoder(subject: Subject) -> str | None:
    """The encoder the subject's variants train with, as the details name it: its family's
    name for an encoder that an architecture describes, else the preset."""
    cfg = subject.config
    if cfg is None:
        return None
    if cfg.architecture is not None:
        return cfg.family.encoder_name or f"{cfg.family.title}'s own"
    return cfg.encoder


def _reference(subject: Subject) -> str:
    """What :meth:`Subject.reference` is, in words."""
    return "the subject's own model" if subject.model_is_variant else (
        f"its vae variant, trained as the variants are ({subject.config.epochs} epoch(s))")


def _variants_trained(subject: Subject) -> dict:
    """How the variants were trained (epochs, batch size, learning rate), for the details."""
    cfg = subject.config
    return {} if cfg is None else {"variants_trained": {
        "epochs": cfg.epochs, "batch_size": cfg.resolved_batch_size, "lr": cfg.resolved_lr}}


def _table_lr_option(subject: Subject) -> float | None:
    """The check option ``table_lr`` (None when not given); a positive number or an error."""
    rate = subject.options.get("table_lr")
    if rate is None:
        return None
    ok = isinstance(rate, int | float) and not isinstance(rate, bool) and np.isfinite(rate) \
        and rate > 0
    if not ok:
        raise ConfigError(f"the option table_lr must be a positive number, got {rate!r}")
    return float(rate)


def _table_lr_source(subject: Subject, cfg) -> str:
    """Where the table's learning rate came from, for the details."""
    if cfg.freeze_table:
        return "frozen: the table does not train"
    if subject.options.get("table_lr") is not None:
        return "the check option table_lr"
    if cfg.table_lr is not None:
        return "the training config's table_lr"
    return "100 x the networks' learning rate (the training config's default)"


def evil_twin(subject: Subject, settings: Settings) -> CheckResult:
    """Does an encoder fed a fixed other image, or noise, fit as well as one fed the image?"""
    threshold = settings.thresholds["evil_twin"]
    enc = subject.options.get("twin_encoder")
    if enc and subject.config is not None and subject.config.architecture is not None:
        raise ConfigError(f"twin_encoder names one of ampcheck's encoder presets; the evil twins "
                          f"of {subject.name} are trained with its own architecture")
    extra = {"encoder": enc} if enc else {}
    baseline = subject.options.get("twin_baseline", "same")
    if baseline not in ("same", "subject"):
        raise ConfigError(f"twin_baseline must be 'same' or 'subject', got {baseline!r}")
    own_baseline = baseline == "subject"
    ratios: dict[str, list] = {"perm": [], "noise": []}
    twin_rec: dict[str, list] = {"perm": [], "noise": []}
    twin_use: dict[str, list] = {"perm": [], "noise": []}
    worst, base_use, info, point = [], [], [], []
    for seed in subject.seeds:
        idx = sample(len(subject.train), settings.n_loss, seed)
        base = subject.variant(seed, **extra) if extra and not own_baseline \
            else subject.reference(seed)
        u_base = latent_use(base, subject.train, idx, seed)
        info.append(_reference_info(*base.latents(idx), subject, idx, seed))
        use = {}
        for kind in ("perm", "noise"):
            twin = subject.variant(seed, variant=f"twin-{kind}", **extra)
            use[kind] = latent_use(twin, subject.train, idx, seed)
            ratios[kind].append(boot(mean_ratio(use[kind], u_base), len(idx), settings, seed))
            twin_use[kind].append(boot(mean_of(use[kind]), len(idx), settings, seed))
            rec = truth_recovery(twin.latents(idx)[0], truth_of(subject.train, idx), seed)
            if rec is not None:
                twin_rec[kind].append(rec[1])
        worst.append(boot(lambda b, u=use, ub=u_base: worst_of(
            mean_ratio(u[k], ub)(b) for k in ("perm", "noise")),
                          len(idx), settings, seed))
        base_use.append(boot(mean_of(u_base), len(idx), settings, seed))
        point.append(max(use_ratio(use[k], u_base) for k in ("perm", "noise")))

    metrics = {"memorisation": pooled(worst, False, settings),
               "memorisation[perm]": pooled(ratios["perm"], False, settings),
               "memorisation[noise]": pooled(ratios["noise"], False, settings),
               "baseline_latent_use": pooled(base_use, True, settings)}
    for kind, vals in twin_use.items():
        metrics[f"twin_latent_use[{kind}]"] = pooled(vals, True, settings)
    for kind, vals in twin_rec.items():
        if vals:
            metrics[f"twin_truth_recovery[{kind}]"] = plain(vals, True)
    for k in least_informative(info):  # the measures every seed has
        metrics[f"baseline_{k}"] = plain([i[k] for i in info], True)
    flags: list[str] = []
    verdict, reasons = _unmeasurable(decide(metrics["memorisation"], threshold),
                                     metrics["baseline_latent_use"], info, point,
                                     "informative_baseline", settings, flags)
    m = metrics["memorisation"].value
    u_b = metrics["baseline_latent_use"].value
    u_t = max(metrics[f"twin_latent_use[{k}]"].value for k in ("perm", "noise"))
    if "empty" in reasons:
        text = (_empty("the baseline", "the evil twins'", u_b, u_t)
                + f", so memorisation ({m:.2g}) cannot be judged at this budget")
    elif flags:
        text = (f"the baseline's latents are {_why(reasons)}, so "
                f"memorisation ({m:.2g}) cannot be judged at this budget")
    elif verdict == "FAIL" and m >= 1:
        text = (f"an encoder fed a fixed other image or noise gives its decoder as much as the "
                f"image itself gives (memorisation {m:.2g}): it memorises")
    elif verdict == "FAIL":
        text = (f"an encoder fed a fixed other image or noise gives its decoder {percent(m)} of "
                "what the image itself gives: it memorises")
    elif verdict == "PASS":
        text = f"evil twins give their decoder only {percent(m)} of what the image itself gives"
    else:
        text = f"memorisation {m:.2g} is within its uncertainty of the threshold"
    return CheckResult("evil_twin", subject.name, verdict, metrics, threshold, text,
                       tuple(flags), subject.seeds,
                       {"twin_encoder": enc or _own_encoder(subject),
                        "baseline": _reference(subject) if own_baseline or not extra
                        else f"a VAE with the {enc} encoder", "n_images": int(len(idx)),
                        **_variants_trained(subject)})


def vlt_equivalence(subject: Subject, settings: Settings) -> CheckResult:
    """Does the encoder fit and organise latents as well as a per-image lookup table?"""
    threshold = settings.thresholds["vlt_equivalence"]
    rate = _table_lr_option(subject)  # before anything trains
    fit, vlt_use, enc_use, point, cka, proc, rec_enc, rec_vlt, info = ([] for _ in range(9))
    vol_auc: dict[str, list[float]] = {}
    overlap: dict[int, list[float]] = {}
    arrays: dict[str, np.ndarray] = {}
    for seed in subject.seeds:
        idx = sample(len(subject.train), settings.n_loss, seed)
        enc = subject.reference(seed)
        if subject.options.get("vlt_init") == "from_encoder":  # the table starts at, and
            vlt = subject.variant(seed, variant="vlt", table_init="from_encoder",  # keeps,
                                  freeze_table=True, encoder_from=enc)  # the encoder's latents
        else:
            vlt = subject.variant(seed, variant="vlt",
                                  table_init=subject.options.get("vlt_init", "normal"),
                                  **({} if rate is None else {"table_lr": rate}))
        u_enc = latent_use(enc, subject.train, idx, seed)
        u_vlt = latent_use(vlt, subject.train, idx, seed)
        fit.append(boot(mean_ratio(u_enc, u_vlt), len(idx), settings, seed))
        vlt_use.append(boot(mean_of(u_vlt), len(idx), settings, seed))
        enc_use.append(boot(mean_of(u_enc), len(idx), settings, seed))
        point.append(use_ratio(u_enc, u_vlt))
        mu_e, (mu_v, lv_v) = enc.latents(idx)[0], vlt.latents(idx)
        info.append(_reference_info(mu_v, lv_v, subject, idx, seed))
        aucs, slices = volume_agreement({"encoder": enc, "vlt": vlt},
                                        {"encoder": mu_e, "vlt": mu_v}, subject, idx,
                                        settings.n_volumes, seed)
        for k, v in aucs.items():
            vol_auc.setdefault(k, []).append(v)
        cka.append(M.linear_cka(mu_e, mu_v))
        proc.append(M.procrustes_distance(mu_e, mu_v))
        ks = tuple(k for k in (5, 10, 20) if k < len(idx))
        for k, v in M.knn_overlap(mu_e, mu_v, ks=ks).items():
            overlap.setdefault(k, []).append(v)
        truth = truth_of(subject.train, idx)
        if not arrays:  # what the report draws: both latent spaces, volumes beside the truth
            arrays = {"mu[encoder]": mu_e, "mu[vlt]": mu_v, **slices,
                      **{f"truth[{k}]": v for k, v in truth.items()}}
        for mu, out in ((mu_e, rec_enc), (mu_v, rec_vlt)):
            r = truth_recovery(mu, truth, seed)
            if r is not None:
                out.append(r[1])

    metrics = {"fit_ratio": pooled(fit, True, settings),
               "vlt_latent_use": pooled(vlt_use, True, settings),
               "encoder_latent_use": pooled(enc_use, True, settings),
               "cka": plain(cka, True), "procrustes": plain(proc, False)}
    for k, v in overlap.items():
        metrics[f"knn_overlap@{k}"] = plain(v, True)
    if rec_enc:
        metrics["truth_recovery[encoder]"] = plain(rec_enc, True)
        metrics["truth_recovery[vlt]"] = plain(rec_vlt, True)
    for k, v in vol_auc.items():
        metrics[f"volume_auc_fsc[{k}]"] = plain(v, True)
    metrics["vlt_spread_to_width"] = plain([i["spread_to_width"] for i in info], True)
    flags: list[str] = []
    verdict, reasons = _unmeasurable(decide(metrics["fit_ratio"], threshold),
                                     metrics["vlt_latent_use"], info, point,
                                     "informative_table", settings, flags)
    f, cka_ = metrics["fit_ratio"].value, metrics["cka"].value
    u_v, u_e = metrics["vlt_latent_use"].value, metrics["encoder_latent_use"].value
    if "empty" in reasons:
        text = (_empty("the lookup table", "the encoder's", u_v, u_e)
                + f", so the comparison (fit ratio {f:.2g}) cannot be judged at this budget "
                "(train the table longer, or give it a higher table_lr)")
    elif flags:
        text = (f"the lookup table's latents are {_why(reasons)}, so "
                f"the comparison (fit ratio {f:.2g}) cannot be judged at this budget")
    elif verdict == "PASS" and f >= 1:
        text = (f"the encoder's latents help its decoder at least as much as free per-image "
                f"latents help theirs (fit ratio {f:.2g}, CKA {cka_:.2f})")
    elif verdict == "PASS":
        text = (f"the encoder's latents give its decoder {percent(f)} of what free per-image "
                f"latents give theirs (CKA {cka_:.2f})")
    elif verdict == "FAIL" and u_e <= 0:
        text = (f"the encoder's latents are of no use to its decoder (latent use {u_e:.2g}), "
                f"while free per-image latents help theirs ({u_v:.2g})")
    elif verdict == "FAIL":  # the paper's "qualitatively similar (and arguably better)" table
        volumes = "" if not vol_auc else (
            f"; the volumes decoded from each match the true maps with AUC-FSC "
            f"{metrics['volume_auc_fsc[vlt]'].value:.2f} (table) and "
            f"{metrics['volume_auc_fsc[encoder]'].value:.2f} (encoder)")
        text = (f"the lookup table fits its training images better: the encoder's latents give "
                f"its decoder {percent(f)} of what the table's give theirs, so the encoder gives "
                f"up {percent(1 - f)} of a per-image table's fit{volumes}")
    else:
        text = f"fit ratio {f:.2g} is within its uncertainty of the threshold"
    details: dict = {"n_images": int(len(idx)), "encoder": _reference(subject),
                     **_variants_trained(subject)}
    details["table"] = {"init": vlt.config.table_init, "frozen": vlt.config.freeze_table,
                        "lr": vlt.config.resolved_table_lr,
                        "lr_from": _table_lr_source(subject, vlt.config)}
    if not vol_auc:  # say why the volume metrics are absent
        details["volumes"] = (volumes_missing({"encoder": enc, "vlt": vlt}, subject)
                              or ("no volumes asked for (n_volumes = 0)"
                                  if settings.n_volumes < 1 else
                                  "the images have no ground-truth conformation (z_continuous)"))
    return CheckResult("vlt_equivalence", subject.name, verdict, metrics, threshold, text,
                       tuple(flags), subject.seeds, details, arrays)


#: What the report draws of vlt_equivalence: both latent spaces, and volumes beside the truth.
VLT_FIGURES = (
    FigureSpec("maps", ("mu[encoder]", "mu[vlt]"),
               ("encoder μ (amortized)", "VLT (per-image table)"),
               metrics=("cka", "knn_overlap@10"),
               caption="The encoder's latents beside the lookup table's free latents (CKA "
                       "{cka}, 10-NN overlap {knn_overlap@10})."),
    FigureSpec("slices", ("slices[truth]", "slices[encoder]", "slices[vlt]"),
               ("truth", "encoder", "VLT"),
               caption="Central sections of the true volume nearest each image's "
                       "conformation and of the volumes decoded at its encoder and VLT "
                       "latents, each volume scaled to its own 1-99.5 percentile range."),
)
