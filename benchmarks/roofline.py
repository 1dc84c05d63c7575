"""How close the cryo-EM VAE's training step comes to this machine's matrix-multiply rate.

Run: ``.venv/bin/python benchmarks/roofline.py [--images 400] [--rounds 5] [--data DIR] [--profile]
[--malloc keep|system]``.

1. The machine's fp32 matmul rate, measured with torch: a large square product and the
   product of the decoder's hidden layer at batch 8 (the shape the step is made of).
2. The training step's floating-point operations, counted two ways that must agree: from the
   architecture (each linear layer: 2 x in x out per row forward, twice that backward, less the
   input gradient of the first layers, which nothing needs) and by
   ``torch.utils.flop_counter.FlopCounterMode`` on a real step.
3. The step's achieved rate (FLOPs per image x images/s of a timed epoch) and its fraction of
   the matmul rates measured just before that epoch, median over ``--rounds`` rounds; with
   ``--profile``, where the time goes (torch.profiler, by op). On a shared machine the
   profiler's shares moved from one profile of the same code to the next (``threshold_backward``
   3% and 20%): judge a change by unprofiled timings, interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _ci import add_malloc_option, apply_malloc, ci_data
from torch.utils.flop_counter import FlopCounterMode

from ampcheck.data.particles import ParticleDataset
from ampcheck.train import TrainConfig, kl_divergence, train


def matmul_rate(m: int, k: int, n: int, seconds: float = 2.0) -> float:
    """Median GFLOP/s of ``(m, k) @ (k, n)`` in fp32 over repeated products."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    rates, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        rates.append(2 * m * k * n / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def linear_flops(rows: int, sizes: list[tuple[int, int]], input_grad_from: int) -> int:
    """Forward + backward FLOPs of a stack of linear layers ``(in, out)`` on ``rows`` rows;
    layers before ``input_grad_from`` need no gradient with respect to their input."""
    total = 0
    for i, (fan_in, fan_out) in enumerate(sizes):
        mac = rows * fan_in * fan_out
        total += 2 * mac * (3 if i >= input_grad_from else 2)  # fwd, weight grad, input grad
    return total


def analytic_flops_per_image(model) -> int:
    """Encoder and decoder linear-layer FLOPs of one image's training step."""
    enc = [(m.in_features, m.out_features) for m in model.encoder.modules()
           if isinstance(m, torch.nn.Linear)]
    dec = [(m.in_features, m.out_features) for m in model.decoder.mlp.modules()
           if isinstance(m, torch.nn.Linear)]
    points = model.n_pixels // 2  # the decoder evaluates half of the masked lattice
    # the decoder's first layer splits into features (per point) and z (once per image)
    n_feat = model.decoder.n_features
    first = linear_flops(points, [(n_feat, dec[0][1])], 1) + linear_flops(1, [(dec[0][0] - n_feat,
                                                                              dec[0][1])], 1)
    return (linear_flops(1, enc, 1) + first + linear_flops(points, dec[1:], 0))


def one_step(run, idx: np.ndarray) -> None:
    batch = run.data.get_batch(idx)
    prep = run.model.prepare(batch)
    mu, logvar = run._latent(torch.from_numpy(idx), batch, prep)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    loss = run.model.recon_loss(prep, z).mean() + run.beta * kl_divergence(mu, logvar).mean()
    loss.backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=400, help="images in each timed epoch")
    ap.add_argument("--rounds", type=int, default=5, help="matmul measurements and epochs")
    ap.add_argument("--data", type=Path, help="a data set directory (default: the ci set)")
    ap.add_argument("--profile", action="store_true", help="break the step down by op")
    add_malloc_option(ap)
    args = ap.parse_args()
    apply_malloc(args.malloc)
    data = ParticleDataset.from_dir(ci_data(args.data))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    cfg = TrainConfig(epochs=1, max_images=args.images, batch_size=8, device="cpu")
    run = train(TrainConfig(epochs=0, batch_size=8, device="cpu"), data, show_progress=False)
    analytic = analytic_flops_per_image(run.model)
    counter = FlopCounterMode(display=False)
    with counter:
        one_step(run, np.arange(8))
    counted = counter.get_total_flops() / 8
    print(f"training step: {analytic / 1e9:.3f} GFLOP per image from the architecture, "
          f"{counted / 1e9:.3f} counted by FlopCounterMode")

    # A shared machine's speed drifts by tens of percent over minutes, so each round measures
    # the matmul rates right before its epoch and the fractions are taken round by round.
    fractions = []
    for r in range(args.rounds):
        square = matmul_rate(2048, 2048, 2048)
        hidden = matmul_rate(8 * 1608, 256, 256)
        h = train(cfg, data, show_progress=False).history[-1]
        achieved = h.images / h.seconds * counted / 1e9
        fractions.append((achieved / square, achieved / hidden))
        print(f"round {r + 1}: fp32 matmul {square:.1f} GFLOP/s (2048^3), {hidden:.1f} "
              f"GFLOP/s (12,864 x 256 @ 256 x 256, the decoder's hidden layer at batch 8); "
              f"step {h.images / h.seconds:.1f} images/s = {achieved:.1f} GFLOP/s = "
              f"{achieved / square:.0%} and {achieved / hidden:.0%} of them", flush=True)
    print(f"achieved (median of {args.rounds} rounds): "
          f"{statistics.median(f for f, _ in fractions):.0%} of the 2048^3 matmul rate, "
          f"{statistics.median(f for _, f in fractions):.0%} of the hidden-layer matmul rate")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for s in range(0, 160, 8):
                one_step(run, np.arange(s, s + 8))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
