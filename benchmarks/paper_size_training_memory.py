"""Peak memory of training on a paper-size stack (D = 128, 50,000 images, 3.3 GB on disk).

Run: ``.venv/bin/python benchmarks/paper_size_training_memory.py --data DIR [--images 2000]
[--malloc keep|system]``
where DIR holds a paper-size set (``ampcheck synth --size paper --out DIR``; writing it is
``benchmarks/paper_size_memory.py``). The base VAE trains one epoch on ``--images`` images drawn
at random from the whole stack (the checks' training split), in a child process whose peak
resident set size comes from ``getrusage(RUSAGE_CHILDREN)``. The stack is read lazily (a memory
map, one batch at a time, its pages dropped from the process every 64 MiB read), so the peak
should not grow with the stack or the epoch, only with the model. ``--malloc keep`` (the
default, as the ``ampcheck`` program runs) keeps freed memory in the process: faster, with a
higher peak; ``system`` leaves glibc's defaults.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _ci import add_malloc_option, malloc_env

CHILD = """
import json, sys, time
from ampcheck.checks.subject import training_split
from ampcheck.data.particles import ParticleDataset
from ampcheck.train import budget_config, train
data = ParticleDataset.from_dir(sys.argv[1])
cfg = budget_config("smoke", max_images=int(sys.argv[2]), device="cpu")
train_set, _ = training_split(cfg, data)
run = train(cfg, train_set, show_progress=False)
h = run.history[-1]
print(json.dumps({"n": len(data), "D": data.D, "images": h.images, "seconds": h.seconds}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a paper-size data set directory")
    ap.add_argument("--images", type=int, default=2000, help="images in the epoch")
    add_malloc_option(ap)
    args = ap.parse_args()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(args.data), str(args.images)],
                          capture_output=True, text=True, check=True,
                          env=malloc_env(args.malloc))
    wall = time.perf_counter() - start
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    stack_gib = (args.data / "particles.mrcs").stat().st_size / 2**30
    print(f"stack: {res['n']:,} images of {res['D']} px ({stack_gib:.2f} GiB); trained one "
          f"epoch of {res['images']:,} random images in {res['seconds']:.0f} s "
          f"({res['images'] / res['seconds']:.1f} images/s; {wall:.0f} s with start-up)")
    print(f"peak RSS of the training process: {peak_mib:,.0f} MiB (malloc: {args.malloc})")


if __name__ == "__main__":
    main()
