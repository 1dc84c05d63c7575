"""What each budget was measured to learn (README, "Training harnesses"), torch-free.

A flagged verdict (latents not informative enough to judge) is a question of training: this
table says which budget made the cryoDRGN-style VAE's latents recover the conformation on data
of which size, so that the hint printed with such a verdict names a budget that was measured
to work, not a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from .budgets import BUDGETS
from .thresholds import DEFAULT_THRESHOLDS


@dataclass(frozen=True)
class Calibration:
    """One measurement: the base VAE trained at ``budget`` on ``n_train`` images of ``box``
    px of ``data``; ``truth_r2``, its latents' cross-validated R² of the hinge angle."""

    budget: str
    box: int
    n_train: int
    truth_r2: float
    data: str


#: Measured at training seed 0, data seed 0 (the figures the README quotes).
CALIBRATION = (
    Calibration("smoke", 64, 1000, 0.0, "the ci set"),
    Calibration("standard", 24, 1000, 0.52, "the standard set"),
    Calibration("standard", 32, 800, 0.14, "a molecule of solid bodies (tests/molecules.py)"),
    Calibration("medium", 64, 1600, 0.32, "the ci set"),
)
#: Below this R² the latents count as uninformative (the ``informative_recovery`` floor).
INFORMATIVE_R2 = DEFAULT_THRESHOLDS["informative_recovery"].value


def budget_hint(budget: str | None, box: int | None) -> str:
    """One sentence for a profile with flagged verdicts at ``budget`` on images of ``box`` px:
    the measured budgets above it that gave informative latents, nearest in box size first.
    ``budget`` None: a model trained elsewhere (a cryoDRGN run), which no budget names."""
    if budget is None:
        return ("Flagged verdicts: the latents had not learned enough to judge. The model was "
                "trained elsewhere: train it for more epochs and check it again.")
    order = list(BUDGETS)
    rank = order.index(budget) if budget in order else -1
    better = [c for c in CALIBRATION
              if order.index(c.budget) > rank and c.truth_r2 >= INFORMATIVE_R2]
    if box:
        better.sort(key=lambda c: (abs(c.box - box), -c.truth_r2))
    if not better:
        return ("Flagged verdicts: the latents had not learned enough to judge. Train longer "
                "(ampcheck train --epochs N, then ampcheck check --run).")
    seen = "; ".join(f"{c.budget} gave truth R² {c.truth_r2:.2f} on {c.n_train:,} training "
                     f"images of {c.box} px ({c.data})" for c in better[:2])
    size = f" of {box} px" if box else ""
    return (f"Flagged verdicts: at the {budget} budget the latents had not learned enough to "
            f"judge. Measured: {seen}. For these images{size}, try --budget {better[0].budget} "
            "(or more --epochs).")
