"""Named budgets: how much a model trains and how much the checks evaluate (torch-free).

A :class:`Budget` is one name with the checks' evaluation sizes (:class:`Evaluation`) and,
through :meth:`Budget.training`, each model family's training sizes (:class:`Training`, held
by the family in :mod:`ampcheck.families`, so that a family registered later brings its own).
The training loop, the checks, the command line and the pytest plugin read budgets here, and
nowhere else; importing this module costs nothing (it imports no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["BUDGETS", "DEFAULT_BUDGET", "Budget", "Evaluation", "Training", "get_budget",
           "training_help"]


@dataclass(frozen=True)
class Training:
    """How a model family trains at one budget: epochs, an optional cap on the number of
    training images, and the networks' learning rate (``None``: the family's default). A lookup
    table's learning rate follows from it (``TrainConfig.table_lr``)."""

    epochs: int
    max_images: int | None = None
    lr: float | None = None


@dataclass(frozen=True)
class Evaluation:
    """How much evaluation a check does at one budget.

    Attributes:
        n_eval: images (at most) on which latents are compared (invariance, VLT, held-out).
        n_loss: images (at most) on which reconstruction losses are evaluated.
        n_gap: images per set (training, held-out) whose local posterior is optimised.
        gap_steps: Adam steps of that optimisation; gap_lr its learning rate.
        gap_samples: reparameterised draws per image per step and for the final ELBO.
        n_volumes: images whose decoded volumes are compared (cryo-EM invariance checks).
        n_boot: bootstrap replicates; level: the interval's coverage.
    """

    n_eval: int = 500
    n_loss: int = 400
    n_gap: int = 24
    gap_steps: int = 60
    gap_lr: float = 0.05
    gap_samples: int = 4
    n_volumes: int = 3
    n_boot: int = 500
    level: float = 0.95


@dataclass(frozen=True)
class Budget:
    """A named budget: its evaluation sizes, each family's training at it, and ``per_epoch``:
    the sizes each epoch is measured at in a profile over epochs (smaller: a run has many
    epochs; None: ``evaluation``'s)."""

    name: str
    evaluation: Evaluation
    per_epoch: Evaluation | None = None

    def training(self, family: Any) -> Training:
        """The training of ``family`` (a :class:`~ampcheck.families.Family`) at this budget;
        a ConfigError for a family that trains at no named budget (a guest whose adapter
        gives its training settings)."""
        sizes = family.training.get(self.name)
        if sizes is None:
            raise ConfigError(f"the {family.name} family has no training at the {self.name} "
                              "budget (its adapter gives its training settings)")
        return sizes


#: The budgets, cheapest first. smoke: a test suite's (the cryo-EM decoder learns the
#: consensus; heterogeneity does not show yet); standard: the main job's, informative in
#: minutes on a CPU; medium: for ``slow`` tests; full: the paper's settings, for a GPU. What
#: each trains per family: :mod:`ampcheck.families`; what each was measured to learn: the
#: README and :mod:`ampcheck.calibration`.
BUDGETS: dict[str, Budget] = {b.name: b for b in (
    Budget("smoke", Evaluation(),
           Evaluation(n_eval=100, n_loss=100, n_gap=8, gap_steps=30, n_volumes=2, n_boot=200)),
    # per epoch: the gap's optimisation is most of an epoch's cost (n_gap x gap_steps), the
    # encoder passes of the invariance checks the rest (n_eval); see the README's "Which epoch"
    Budget("standard", Evaluation(n_eval=500, n_loss=500, n_gap=24, gap_steps=100,
                                  n_volumes=4),
           Evaluation(n_eval=250, n_loss=250, n_gap=16, gap_steps=60, n_volumes=4,
                      n_boot=300)),
    Budget("medium", Evaluation(n_eval=1000, n_loss=1000, n_gap=48, gap_steps=150,
                                n_volumes=8)),
    Budget("full", Evaluation(n_eval=5000, n_loss=5000, n_gap=128, gap_steps=300,
                              n_volumes=32, n_boot=1000)),
)}
#: The budget of every entry point that a person calls (``ampcheck run``, ``train``,
#: ``check_vae``): its latents recover the conformation of the standard data set. ``smoke``
#: learns none yet and is for test suites, asked for by name (the pytest plugin's default).
DEFAULT_BUDGET = "standard"


def get_budget(name: str) -> Budget:
    """The budget called ``name``; a ConfigError naming the known ones otherwise."""
    budget = BUDGETS.get(name) if isinstance(name, str) else None
    if budget is None:
        raise ConfigError(f"unknown budget {name!r}; expected one of {', '.join(BUDGETS)}")
    return budget


def training_help(family: Any) -> str:
    """Each budget's epochs, learning rate and expected time per model of ``family`` (a
    :class:`~ampcheck.families.Family`) on two CPU cores for the data sets of its
    ``throughput`` (``ampcheck train --help``)."""
    parts = []
    for budget in BUDGETS.values():
        b = budget.training(family)
        times = []
        for size, (box, n_train, rate) in family.throughput.items():
            seconds = b.epochs * min(n_train, b.max_images or n_train) / rate
            times.append(f"{_about(seconds)} on the {size} set ({box} px)")
        parts.append(f"{budget.name} = {b.epochs} epoch(s) at lr "
                     f"{b.lr if b.lr is not None else family.lr:g}"
                     + (f" of at most {b.max_images:,} images" if b.max_images else "")
                     + (f", about {' or '.join(times)}" if times else ""))
    return "; ".join(parts)


def _about(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
