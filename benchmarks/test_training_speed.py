"""Seconds per epoch of every training variant: the paper's Table 1 analogue (App. D).

Run: ``.venv/bin/python -m pytest benchmarks/test_training_speed.py --benchmark-only``.
Each round trains one epoch on ``AMPCHECK_BENCH_IMAGES`` images (default 256) of the ci data
set (D = 64) and reports images/s and the implied seconds per epoch of all 2,000 images.
The paper found the variants cost the same; the ratios to the baseline say whether ours do.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from table1 import VARIANTS  # the one list of variants (benchmarks/table1.py)

from ampcheck.data.particles import ParticleDataset
from ampcheck.data.synthetic import SynthConfig, generate
from ampcheck.train import TrainConfig, train

IMAGES = int(os.environ.get("AMPCHECK_BENCH_IMAGES", "256"))
CI_IMAGES = 2000



@pytest.fixture(scope="module")
def ci_data(tmp_path_factory):
    out = generate(tmp_path_factory.mktemp("ci") / "ci", SynthConfig.preset("ci"),
                   show_progress=False).out
    return ParticleDataset.from_dir(out)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_seconds_per_epoch(benchmark, ci_data, name):
    """The benchmark's own time includes building the model (and matching noise twins); the
    epoch's time alone, from the run's history, goes into extra_info."""
    cfg = TrainConfig(epochs=1, max_images=IMAGES, **VARIANTS[name])
    epochs = []

    def one_epoch():
        run = train(cfg, ci_data, show_progress=False)
        epochs.append(run.history[-1].seconds)
        return run

    run = benchmark.pedantic(one_epoch, rounds=3, iterations=1)
    seconds = float(np.median(epochs))
    benchmark.extra_info["epoch_seconds_median"] = seconds
    benchmark.extra_info["images_per_s"] = IMAGES / seconds
    benchmark.extra_info["seconds_per_ci_epoch"] = CI_IMAGES * seconds / IMAGES
    print(f"\n{name:22s} {IMAGES / seconds:6.1f} images/s, "
          f"{CI_IMAGES * seconds / IMAGES:6.1f} s per 2,000-image epoch")
    assert run.history[-1].images == IMAGES
