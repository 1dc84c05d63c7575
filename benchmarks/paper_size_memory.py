"""Peak memory and time of generating a paper-size synthetic set (D = 128, 50,000 images).

Run: ``.venv/bin/python benchmarks/paper_size_memory.py [--n N] [--out DIR]``. The generator
runs in a child process; its peak resident set size comes from ``getrusage(RUSAGE_CHILDREN)``.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: a temp dir)")
    args = ap.parse_args()
    parent = args.out or Path(tempfile.mkdtemp(prefix="ampcheck-paper-"))
    out = parent / "paper"
    cmd = [sys.executable, "-m", "ampcheck", "synth", "--size", "paper", "--n", str(args.n),
           "--out", str(out), "--force", "--quiet"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    size_gib = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**30
    print(f"paper size: {args.n:,} images of 128x128 -> {size_gib:.2f} GiB on disk")
    print(f"wall time {seconds:.1f} s ({args.n / seconds:,.0f} images/s), "
          f"peak RSS {peak_mib:,.0f} MiB")
    if args.out is None:
        shutil.rmtree(parent)


if __name__ == "__main__":
    main()
