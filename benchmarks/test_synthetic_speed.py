"""Speed of synthetic data generation (pytest-benchmark; never asserted in tests).

Run: ``.venv/bin/python -m pytest benchmarks/test_synthetic_speed.py --benchmark-only``.
The issue's target is >= 2,000 images/s at the ci size on 2 CPU cores.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ampcheck.data.synthetic import Assembly, SynthConfig, draw_parameters, generate, render_clean

_count = itertools.count()


@pytest.mark.parametrize("size", ["ci"])
def test_generate_whole_data_set(benchmark, tmp_path, size):
    """End to end: parameters, pilot, rendering, noise, writing the stack, volumes, manifest."""
    cfg = SynthConfig.preset(size)
    benchmark.pedantic(lambda: generate(tmp_path / f"set{next(_count)}", cfg, show_progress=False),
                       rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["images_per_s"] = cfg.n / benchmark.stats["median"]


@pytest.mark.parametrize("D", [64, 128])
def test_render_one_chunk(benchmark, D):
    """The kernel alone: 256 exact CTF-modulated projections at box size D."""
    cfg = SynthConfig(n=256, D=D)
    params, assembly = draw_parameters(cfg), Assembly.default()
    out = benchmark(render_clean, assembly, params, slice(0, 256), cfg)
    assert np.isfinite(out).all()
    benchmark.extra_info["images_per_s"] = 256 / benchmark.stats["median"]


@pytest.mark.parametrize("workers", [1, 2])
def test_generate_from_an_atomic_model(benchmark, tmp_path, workers):
    """``ampcheck synth --structures`` at the ci size (2,000 images of 64 px) from adenylate
    kinase's two structures with every atom (3,341 each; needs the ``structures`` extra), its
    images rendered by one process or two side by side (``--workers``). The manifest's
    ``images_per_second`` times the same run from the inside."""
    pytest.importorskip("MDAnalysisTests", reason="needs the structures extra")
    from ampcheck.data.structure_files import load_ensemble
    from ampcheck.data.structures import AtomicSynthConfig
    from ampcheck.data.structures import generate as generate_atomic

    ens = load_ensemble(["MDAnalysisTests:adk_open.pdb", "MDAnalysisTests:adk_closed.pdb"],
                        atoms="all", core="1-29,60-121,160-214")
    cfg = AtomicSynthConfig(n=2000, D=64)
    benchmark.pedantic(lambda: generate_atomic(tmp_path / f"set{next(_count)}", ens, cfg,
                                               show_progress=False, workers=workers),
                       rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["images_per_s"] = cfg.n / benchmark.stats["median"]
