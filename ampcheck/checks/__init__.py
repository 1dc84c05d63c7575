"""The amortization checks (SPEC §4): one function per check, a registry, and ``check_vae``.

Each check is a plain function ``check(subject, settings) -> CheckResult`` (the scikit-learn
``check_estimator`` shape). Which checks apply to a subject is decided from its tags and each
check's declared needs, never from class names::

    from ampcheck.checks import check_vae
    results = check_vae("cryoem:base", data, budget="smoke")     # ampcheck trains the model
    results = check_vae(my_trained_vae, data, checks=["shift_invariance"])   # any VAE
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..budgets import DEFAULT_BUDGET
from ..display import FigureSpec
from ..errors import ConfigError
from ..kinds import OPTIONS, validate_options
from ..results import CheckResult, Metric, Threshold, decide
from ..thresholds import DEFAULT_THRESHOLDS, resolve_thresholds
from ._common import NEEDS, Settings, missing_reason, settings_for, usable_truth
from .fits import VLT_FIGURES, evil_twin, vlt_equivalence
from .generalisation import (
    GAP_FIGURES,
    HELDOUT_FIGURES,
    amortization_gap,
    heldout_generalisation,
)
from .invariance import INVARIANCE_FIGURES, rotation_invariance, shift_invariance
from .leakage import LEAKAGE_FIGURES, pose_leakage
from .resampling import RESAMPLING_FIGURES, noise_resampling
from .subject import VAE, ProtocolModel, Subject, TrainingCache, subject_from, validate_vae


@dataclass(frozen=True)
class CheckSpec:
    """A registered check: its function, the subject tags it needs, what it is about, and
    the figures the report draws of its result's arrays (declared beside the check's code)."""

    name: str
    fn: Callable[[Subject, Settings], CheckResult]
    needs: frozenset[str]
    about: str
    figures: tuple[FigureSpec, ...] = ()

    def applies_to(self, subject: Subject) -> bool:
        return self.needs <= subject.tags

    def why_not(self, subject: Subject) -> str:
        missing = ", ".join(sorted(self.needs - subject.tags))
        return f"{self.name} needs a subject that is {missing}"

    def skip_reason(self, subject: Subject) -> str:
        """Why the check does not apply to ``subject``, as a ``SKIP`` result says it: what it
        needs and how to give it (:func:`~ampcheck.checks._common.missing_reason`), e.g.
        ``needs ground truth: use data with z_continuous or z_class`` (or ``the ground truth
        is constant: z_continuous has one value``)."""
        return "; ".join(missing_reason(tag, subject.data.truth)
                         for tag in sorted(self.needs - subject.tags))


def mnist_control(subject: Subject, settings: Settings) -> CheckResult:
    """The same battery on the classic MNIST VAE (paper App. B), trained at the same budget and
    seeds: which checks a classic VAE passes. Its verdict is the MNIST VAE's held-out
    generalisation (SPEC: it must PASS; if it does not, the control itself is broken); the
    other checks' verdicts and governing metrics are in its metrics and ``details``."""
    from ..data.mnist import MnistDataset

    data = subject.options.get("mnist_data")
    data = MnistDataset.load() if data is None else data
    mnist = subject_from("mnist", data, budget=settings.budget, seeds=subject.seeds,
                         device=subject.config.device if subject.config else "auto",
                         cache=subject.cache)
    battery = ("shift_invariance", "evil_twin", "vlt_equivalence", "amortization_gap",
               "heldout_generalisation")
    profile = {r.check: r for r in run_checks(mnist, battery, settings, strict=True)}
    held, label = profile["heldout_generalisation"], f"mnist ({data.source})"
    details = {"profile": {k: r.to_dict() for k, r in profile.items()}, "data": repr(data)}
    if held.skip:  # its split left one side with a single digit: nothing to show
        return CheckResult.skipped("mnist_control", label, "the MNIST VAE's "
                                   f"heldout_generalisation: {held.explanation}", subject.seeds,
                                   details)
    metrics: dict[str, Metric] = dict(held.metrics)
    for name, r in profile.items():
        if r.threshold is not None:
            metrics[f"{name}:{r.threshold.metric}"] = r.governing
    threshold = settings.thresholds["mnist_control"]
    verdict = decide(held.governing, threshold)
    if verdict == "PASS" and "uninformative" in held.flags:
        verdict = "WARN"
    verdicts = ", ".join(f"{k} {r.verdict}" for k, r in profile.items())
    return CheckResult("mnist_control", label, verdict,
                       metrics, threshold, f"classic MNIST VAE: {verdicts}", held.flags,
                       subject.seeds, details,
                       {f"{k}/{a}": v for k, r in profile.items() for a, v in r.arrays.items()})


CHECKS: dict[str, CheckSpec] = {s.name: s for s in (
    CheckSpec("shift_invariance", shift_invariance, frozenset({"encoder"}),
              "latents under a circular shift of the image", INVARIANCE_FIGURES),
    CheckSpec("rotation_invariance", rotation_invariance, frozenset({"encoder"}),
              "latents under a 90-degree rotation of the image", INVARIANCE_FIGURES),
    CheckSpec("evil_twin", evil_twin, frozenset({"trainable"}),
              "does an encoder fed another image or noise still fit (memorisation)"),
    CheckSpec("vlt_equivalence", vlt_equivalence, frozenset({"trainable"}),
              "encoder against a per-image lookup table with the same decoder", VLT_FIGURES),
    CheckSpec("amortization_gap", amortization_gap, frozenset({"encoder"}),
              "encoder posterior against per-image optimised posteriors", GAP_FIGURES),
    CheckSpec("heldout_generalisation", heldout_generalisation,
              frozenset({"heldout", "truth"}), "truth recovery on held-out images",
              HELDOUT_FIGURES),
    CheckSpec("pose_leakage", pose_leakage, frozenset({"encoder", "poses"}),
              "latents predicted from the pose and CTF the decoder is given", LEAKAGE_FIGURES),
    CheckSpec("noise_resampling", noise_resampling, frozenset({"encoder", "clean"}),
              "one clean particle under fresh noise draws: movement and calibration",
              RESAMPLING_FIGURES),
    CheckSpec("mnist_control", mnist_control, frozenset(),
              "the battery on the classic MNIST VAE", (FigureSpec("inner"),)),
)}

#: What ``check_vae`` runs by default: every per-model check (the MNIST control is asked for
#: by name, or by ``ampcheck run``).
DEFAULT_CHECKS: tuple[str, ...] = tuple(n for n in CHECKS if n != "mnist_control")


def resolve_checks(names: Iterable[str] | None) -> list[str]:
    """Validated check names (``None``: the defaults), from names or a string ``"a,b"``.

    An unknown name, an empty name (``"a,,b"``, ``"a,"``) and a selection that names no check
    at all (``","``, ``[]``) are errors: running nothing and reporting an empty profile would
    look like a result.
    """
    if names is None:
        return list(DEFAULT_CHECKS)
    given = names
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    names = list(names)
    known = ", ".join(CHECKS)
    if not any(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"checks {given!r} names no check; expected one or more of: {known}")
    out: list[str] = []
    for n in names:
        if not isinstance(n, str) or not n.strip():
            raise ConfigError(f"checks {given!r} has an empty name (two commas in a row, or a "
                              "comma at an end); expected check names separated by single "
                              f"commas, each one of: {known}")
        if n not in CHECKS:
            raise ConfigError(f"unknown check {n!r}; expected one of {known}")
        if n not in out:
            out.append(n)
    return out


def run_checks(subject: Subject, checks: Iterable[str] | None = None,
               settings: Settings | None = None, *, strict: bool = False,
               on_result: Callable[[CheckResult], None] | None = None,
               skip: Mapping[str, str] | None = None) -> list[CheckResult]:
    """Run ``checks`` on ``subject``, one result each, in order.

    A check that does not apply is a ``SKIP`` result whose explanation says what it needs
    (``strict``: an error naming what is missing, before anything runs). ``skip`` maps checks
    to a reason to report them as ``SKIP`` without running them (for a caller that knows more
    than the subject's tags, as an adapter does).
    """
    settings = settings or settings_for("smoke")
    names = resolve_checks(checks)
    skip = dict(skip or {})
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise ConfigError(f"cannot skip unknown check(s) {', '.join(map(repr, unknown))}; "
                          f"expected one of {', '.join(CHECKS)}")
    if strict:  # fail before the first check trains anything
        for name in names:
            spec = CHECKS[name]
            if name not in skip and not spec.applies_to(subject):
                raise ConfigError(f"{spec.why_not(subject)}; {subject.name} is not "
                                  f"({spec.skip_reason(subject)})")
    results = []
    for name in names:
        spec = CHECKS[name]
        if name in skip:
            result = CheckResult.skipped(name, subject.name, skip[name], subject.seeds)
        elif not spec.applies_to(subject):
            result = CheckResult.skipped(name, subject.name, spec.skip_reason(subject),
                                         subject.seeds)
        else:
            result = spec.fn(subject, settings)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def check_vae(model: Any, data, *, checks: Iterable[str] | None = None,
              budget: str = DEFAULT_BUDGET,
              seeds: int | Sequence[int] = 1, thresholds: Mapping[str, float] | None = None,
              device: str = "auto", heldout_fraction: float = 0.2,
              train_indices: Sequence[int] | None = None, name: str | None = None,
              cache: TrainingCache | None = None, options: Mapping[str, Any] | None = None,
              show_progress: bool = False, strict: bool | None = None,
              skip: Mapping[str, str] | None = None, variant_config: Any = None,
              model_is_variant: bool = True, settings: Settings | None = None
              ) -> list[CheckResult]:
    """Run the amortization checks on ``model`` and return one :class:`CheckResult` each.

    Args:
        model: a preset (``"cryoem"``, ``"cryoem:large"``, ``"mnist"``), a ``TrainConfig``,
            a factory ``(train_data, seed) -> VAE``, or a trained :class:`VAE`
            (see :func:`~ampcheck.checks.subject.subject_from`).
        data: a ``ParticleDataset`` or ``MnistDataset``, or any data set that follows
            :class:`ampcheck.contracts.Dataset`; what it can give beyond that (ground-truth
            volumes) is read from :func:`ampcheck.contracts.data_capabilities`.
        checks: names (default: every per-model check; those that do not apply are
            ``SKIP`` results that say why).
        budget: ``standard`` (default: informative latents in minutes on a CPU), ``smoke``
            (for test suites), ``medium`` or ``full``: training and evaluation sizes.
        seeds: how many training seeds (or which); verdicts account for their spread.
        thresholds: overrides, name -> value (see ``thresholds.DEFAULT_THRESHOLDS``).
        options: per-check options, e.g. ``{"twin_encoder": "large"}``,
            ``{"shift_transforms": ["roll:1", "roll:5"]}``.
        strict: whether a check that does not apply is an error (default: when ``checks``
            names them) rather than a ``SKIP`` result.
        skip: checks to report as ``SKIP`` with the given reason, without running them.
        variant_config, model_is_variant: for a trained VAE, the ``TrainConfig`` that trains
            its variants (its own network and settings: the checks that retrain then apply),
            and whether that config trains the model itself (see
            :func:`~ampcheck.checks.subject.subject_from`).
        settings: evaluation sizes and thresholds in place of ``budget``'s and
            ``thresholds`` (a profile over epochs measures each epoch at
            ``settings_for(budget, per_epoch=True)``).
    """
    names = resolve_checks(checks)
    options = validate_options(options)
    if settings is None:
        settings = settings_for(budget, resolve_thresholds(thresholds))
    cache = cache if cache is not None else TrainingCache(show_progress=show_progress)
    subject = subject_from(model, data, budget=budget, seeds=seeds, device=device,
                           heldout_fraction=heldout_fraction, train_indices=train_indices,
                           name=name, cache=cache, variant_config=variant_config,
                           model_is_variant=model_is_variant)
    subject.options.update(options or {})
    strict = checks is not None if strict is None else strict
    return run_checks(subject, names, settings, strict=strict, skip=skip)


#: What the main job runs on the invariant encoder, the positive control of the invariance
#: checks that the paper suggests (§4): its shift and rotation verdicts, whether exact
#: invariance makes held-out images land on the map (the paper doubts that it must), and
#: whether its latents leak the in-plane angle and shifts and follow the noise.
INVARIANT_CONTROL = ("shift_invariance", "rotation_invariance", "heldout_generalisation",
                     "pose_leakage", "noise_resampling")


def main_battery(data, *, budget: str = DEFAULT_BUDGET, seeds: int | Sequence[int] = 1,
                 device: str = "auto", cache: TrainingCache | None = None,
                 meanwhile: Callable[[], Any] | None = None) -> list[CheckResult]:
    """The main job (``ampcheck run``): every check on the cryo-EM VAE (evil twins
    with the paper's large encoder, measured against that VAE as the paper compares its
    Figs 8-9 with Fig. 3), the invariant encoder as the positive control of the
    invariance checks (:data:`INVARIANT_CONTROL`), and the MNIST control, on one cache;
    its models are trained ahead (``meanwhile``: see :meth:`TrainingCache.train_ahead`)."""
    cache = cache if cache is not None else TrainingCache()
    common = {"budget": budget, "seeds": seeds, "device": device, "cache": cache}
    twins = {"twin_encoder": "large", "twin_baseline": "subject"}  # the paper's §3.3
    cache.train_ahead(battery_jobs(data, budget=budget, seeds=seeds, device=device),
                      meanwhile=meanwhile)
    results = check_vae("cryoem:base", data, options=twins, **common)
    results += check_vae("cryoem:invariant", data, checks=INVARIANT_CONTROL, strict=False,
                         **common)  # on data without truth, its held-out check is a SKIP
    return results + check_vae("cryoem:base", data, checks=["mnist_control"], **common)


def battery_jobs(data, *, budget: str = DEFAULT_BUDGET, seeds: int | Sequence[int] = 1,
                 device: str = "auto") -> list[tuple[Any, Any]]:
    """What :func:`main_battery` trains, ``(config, training data)`` in the order its checks
    ask for it, so that it can be trained ahead (:meth:`TrainingCache.train_ahead`): each
    model, then per seed its large evil twins (measured against the model itself) and its
    lookup table; the invariant encoder; the MNIST VAE, its twins and table. On data without
    truth the invariant encoder is trained all the same (its invariance checks need none)."""
    from ..data.mnist import MnistDataset

    jobs = []
    for model, data_set, twin in (("cryoem:base", data, {"encoder": "large"}),
                                  ("cryoem:invariant", data, None),
                                  ("mnist", MnistDataset.load(), {})):
        s = subject_from(model, data_set, budget=budget, seeds=seeds, device=device)
        jobs += [(s.variant_config(seed), s.train) for seed in s.seeds]
        if twin is not None:
            jobs += [(s.variant_config(seed, variant=f"twin-{kind}", **twin), s.train)
                     for seed in s.seeds for kind in ("perm", "noise")]
            jobs += [(s.variant_config(seed, variant="vlt"), s.train) for seed in s.seeds]
    return jobs


__all__ = ["CHECKS", "DEFAULT_CHECKS", "DEFAULT_THRESHOLDS", "INVARIANT_CONTROL", "OPTIONS",
           "CheckResult", "CheckSpec",
           "Metric", "NEEDS", "ProtocolModel", "Settings", "Subject", "Threshold",
           "TrainingCache", "VAE", "battery_jobs", "check_vae", "missing_reason",
           "resolve_checks", "resolve_thresholds",
           "main_battery", "run_checks", "settings_for", "subject_from", "usable_truth",
           "validate_vae"]
