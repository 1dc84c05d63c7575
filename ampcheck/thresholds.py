"""Default thresholds, in one place, each with its rationale.

Names are those that ``--ampcheck-threshold NAME=VALUE``, ``[tool.ampcheck.thresholds]`` and
``check_vae(thresholds=...)`` accept: one per check (the bound on its governing metric) and the
guards that decide whether latents are informative enough for a verdict to count: the spread
and truth-recovery floors, and the ceilings on a ratio whose reference (a lookup table, an evil
twin's baseline) has not learned.

Each default is set from what the metric means and checked against the controls: a check's
positive and negative controls must fall on opposite sides with a margin (the tests that run
the controls assert it). A threshold is never moved to make a control pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from .errors import ConfigError
from .results import Threshold

DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    "shift_invariance": Threshold(
        "displacement", 0.2, False,
        "median latent move under the transform, over the median distance between two different "
        "images: 0 for an invariant encoder, about 1 when a shifted image lands as far as a "
        "random other image (the paper's Figs 10-11). At 0.2 the copy stays within a fifth of "
        "the typical inter-image distance, far from anything an image-specific code gives."),
    "rotation_invariance": Threshold(
        "displacement", 0.2, False,
        "as shift_invariance, for 90-degree rotations of the image."),
    "evil_twin": Threshold(
        "memorisation", 0.5, False,
        "how much an encoder fed a fixed other image, or noise, helps its decoder (the loss "
        "it saves over another image's latent), as a share of what the baseline's encoder, fed "
        "the image itself, saves. Above one half the twin helps more than half as much as the "
        "truth: the encoder memorises arbitrary inputs (paper §3.3)."),
    "vlt_equivalence": Threshold(
        "fit_ratio", 0.8, True,
        "how much the encoder's latents help its decoder (the loss they save over another "
        "image's latent), as a share of what the lookup table's free per-image latents save "
        "theirs. An encoder at 80% or more is no worse than explicit latents, within the noise "
        "of short runs."),
    "amortization_gap": Threshold(
        "gap_fraction", 0.5, False,
        "Cremer et al.'s gap (locally optimised q minus the encoder's q) as a share of what "
        "local optimisation gains over a constant q. Below one half the encoder gets most of "
        "the way to the per-image optimum, on training and held-out images alike."),
    "heldout_generalisation": Threshold(
        "recovery_drop", 0.2, False,
        "truth recovery on training images minus on held-out images (R² of the continuous "
        "coordinate, else AMI of the classes). A drop above 0.2 means held-out images are not "
        "placed on the map the training images built (the cryoDRGN probe: 0.9 vs 0.1)."),
    "pose_leakage": Threshold(
        "leakage", 0.1, False,
        "the share of the latents' variance that the pose and CTF the decoder is given (in-plane "
        "angle, viewing direction, shifts, defocus) predict beyond chance (cross-validated, "
        "less a permutation null), beyond what the ground truth explains where it is known. "
        "Latents meant for the conformation should carry none of it; above a tenth, the pose "
        "is a visible axis of the latent space (the paper: a 90-degree rotation moves a "
        "particle as far as another particle)."),
    "noise_resampling": Threshold(
        "miscalibration", 1.0, False,
        "|log2| of the spread of the posterior mean across noise draws of one clean particle "
        "over what the posterior's own width predicts for it (sigma² - sigma⁴ per dimension "
        "under a standard-normal prior; exactly 1 for a linear-Gaussian model's exact "
        "posterior in its eigenbasis). Above 1 the posterior is off by more than a factor 2 "
        "in variance, either way: overconfident (narrower than the noise moves it) or "
        "underconfident."),
    "mnist_control": Threshold(
        "recovery_drop", 0.2, False,
        "the classic MLP VAE on digits must generalise to held-out digits (the held-out "
        "generalisation threshold); if it does not, the control itself is broken."),
    "informative_spread": Threshold(
        "spread_to_width", 1.0, True,
        "median distance between two images' posterior means in units of the median posterior "
        "standard deviation (the overlap of two Gaussian posteriors depends on this alone, "
        "whatever zdim). Below 1 the posteriors of two images are nearly indistinguishable "
        "(Bhattacharyya coefficient above 0.88): the latents say next to nothing about the "
        "image, and a collapsed encoder (constant output, perfectly invariant) sits near 0. "
        "A floor against collapse, not a mark of a good encoder."),
    "informative_table": Threshold(
        "fit_ratio", 1.25, False,
        "vlt_equivalence's fit ratio (the encoder's latent use over the lookup table's) means "
        "something only where the table has learned. A per-image table can represent any "
        "encoder's latents, so a table that has learned fits its training images at least about "
        "as well as the encoder: measured fit ratios 0.64-0.81 over six default runs, 0.67 for "
        "the MNIST VAE, 0.89 for a table frozen at the encoder's own latents. Above 1.25, the "
        "mirror of the pass threshold (the table gives less than 80% of what the encoder "
        "gives), the table has not learned and the ratio would pass the encoder against next "
        "to nothing: a cryoDRGN run's table (1,000 images of 24 px, 8 epochs at 1e-4) retrained "
        "at 1e-4 gave 2.4 and at 100 x that rate 1.85, both PASS without this guard, against "
        "0.48 at the table's own rate of 0.1; a run of 1,600 images of 64 px, 18. The verdict "
        "is then WARN, flagged uninformative; no truth needed."),
    "informative_baseline": Threshold(
        "memorisation", 2.0, False,
        "evil_twin's memorisation (a twin's latent use over the baseline's) means something "
        "only where the baseline has learned. A twin that memorises perfectly is at best a "
        "per-image lookup table, and a table gives its decoder at most about 1.6 times what an "
        "encoder fed the image gives (fit ratios 0.64-0.81); measured memorisations: 0.57-0.67 "
        "over six default runs, 0.65 and 1.04 for two cryoDRGN runs' own twins. Above 2 the "
        "baseline gives its decoder less than half of what the twins give theirs: it has not "
        "learned, and the ratio compares something with next to nothing. The verdict is then "
        "WARN, flagged uninformative; no truth needed."),
    "informative_recovery": Threshold(
        "truth_recovery", 0.1, True,
        "when ground truth is known: the cross-validated R² of the continuous coordinate (or AMI "
        "of the classes) from the latents. Below 0.1 the latents carry about as much of the "
        "truth as chance, so an invariance would be an invariance of nothing."),
}


def resolve_thresholds(overrides: Mapping[str, float] | None = None) -> dict[str, Threshold]:
    """The defaults with ``overrides`` (name -> value) applied; an unknown name is an error."""
    out = dict(DEFAULT_THRESHOLDS)
    for name, value in (overrides or {}).items():
        if name not in out:
            raise ConfigError(f"unknown threshold {name!r}; expected one of "
                              f"{', '.join(sorted(out))}")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"threshold {name!r} must be a number, got {value!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"threshold {name!r} must be a finite number, got {value}")
        out[name] = replace(out[name], value=value)
    return out
