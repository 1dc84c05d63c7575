"""The paper's Table 1 analogue: seconds per epoch of every training variant, interleaved.

Run: ``.venv/bin/python benchmarks/table1.py [--images 256] [--rounds 5] [--data DIR]
[--malloc keep|system]``.
Each round trains every variant for one epoch of ``--images`` images of the ci set (D = 64),
in a new order each round (a variant that always ran first or after another would carry that
position's cost: warm caches, a freshly grown allocator); the table gives each variant's
median images/s, the implied seconds per 2,000-image epoch and the ratio to the baseline. The
paper (App. D) found its variants cost the same; within 10% of the baseline is our target.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

from _ci import add_malloc_option, apply_malloc, ci_data

from ampcheck.data.particles import ParticleDataset
from ampcheck.train import TrainConfig, train

CI_IMAGES = 2000
VARIANTS = {
    "baseline": {},
    "vlt_random_init": {"variant": "vlt", "table_init": "normal"},
    "twin_permuted": {"variant": "twin-perm"},
    "twin_noise_large": {"variant": "twin-noise", "encoder": "large"},
    "twin_permuted_large": {"variant": "twin-perm", "encoder": "large"},
    "twin_permuted_small": {"variant": "twin-perm", "encoder": "small"},
    "invariant_encoder": {"encoder": "invariant"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--data", type=Path, help="a data set directory (default: the ci set)")
    add_malloc_option(ap)
    args = ap.parse_args()
    apply_malloc(args.malloc)
    data = ParticleDataset.from_dir(ci_data(args.data))
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    order = list(VARIANTS)
    for r in range(args.rounds):
        random.Random(r).shuffle(order)
        for name in order:
            cfg = TrainConfig(epochs=1, max_images=args.images, device="cpu", **VARIANTS[name])
            h = train(cfg, data, show_progress=False).history[-1]
            rates[name].append(h.images / h.seconds)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    base = statistics.median(rates["baseline"])
    print(f"{'variant':22s} {'images/s':>9s} {'(min-max)':>12s} {'s / 2,000-image epoch':>22s} "
          f"{'vs baseline':>12s}")
    for name, v in rates.items():
        m = statistics.median(v)
        print(f"{name:22s} {m:9.1f} {min(v):5.1f}-{max(v):<6.1f} {CI_IMAGES / m:22.1f} "
              f"{base / m:11.2f}x")


if __name__ == "__main__":
    main()
