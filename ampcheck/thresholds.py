"""Default thresholds, in one place, each with its rationale.

Names are those that ``--ampcheck-threshold NAME=VALUE``, ``[tool.ampcheck.thresholds]`` and
``check_vae(thresholds=...)`` accept: one per check (the bound on its governing metric) and the
two floors that decide whether latents are informative enough for an invariance to count.

Each default was set from what the metric means, before the controls were run, and is then
checked against them: a check's positive and negative controls must fall on opposite sides
with a margin (the measured values are in the tests that run the controls and in the notes of
the issue tracker). A threshold is never moved to make a control pass.
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
