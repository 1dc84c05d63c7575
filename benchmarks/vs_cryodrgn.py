"""Training throughput of ampcheck's cryo-EM VAE next to cryoDRGN's ``train_vae``, same work.

Run: ``.venv/bin/python benchmarks/vs_cryodrgn.py [--rounds 2] [--epochs 1] [--data DIR]
[--cryodrgn EXE] [--malloc system|keep]``. It installs nothing: cryoDRGN runs when it is
importable in this interpreter (the ``ampcheck[cryodrgn]`` extra) or from the executable given
by ``--cryodrgn`` (or ``$AMPCHECK_CRYODRGN``); without either, only ampcheck is timed.

Both train the same configuration on the same data: the ``ci`` synthetic set (2,000 images,
D = 64, made once under ``.benchmarks/`` unless ``--data`` names another), encoder and decoder
3 x 256, zdim 8, batch 8, Adam at 1e-4, the same masked pixels (the circle of radius D/2) and
Gaussian Fourier features of the same size. The two alternate, ``--rounds`` times each, every
run a fresh process of ``--epochs`` epochs over all images; the script prints each run's
images/s (from the epochs' own wall time, as each program reports it), the medians, their
ratio, and the last epoch's mean reconstruction loss of each (mean squared error over the
masked pixels of the normalised Hartley images, in both programs). Both programs run with
the same ``malloc`` settings: glibc's defaults unless ``--malloc keep``, which gives both the
thresholds that the ``ampcheck`` program sets for itself (see ``ampcheck/allocator.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from _ci import add_malloc_option, ci_data, malloc_env

CONFIG = {"zdim": 8, "hidden": 256, "layers": 3, "batch": 8}
EPOCH_LINE = re.compile(r"# =====> Epoch: (\d+) Average gen loss = ([\d.e+-]+), .*"
                        r"Finished in (\d+):(\d+):([\d.]+)")


def cryodrgn_command(exe: str | None) -> list[str] | None:
    """How to start ``cryodrgn train_vae``: the given executable, else this interpreter when
    cryodrgn is importable (importing only train_vae, as its console script would run it)."""
    exe = exe or os.environ.get("AMPCHECK_CRYODRGN")
    if exe:
        return [exe, "train_vae"]
    if importlib.util.find_spec("cryodrgn") is not None:
        return [sys.executable, "-c", "import sys, argparse; "
                "from cryodrgn.commands import train_vae as t; "
                "p = argparse.ArgumentParser(); t.add_args(p); t.main(p.parse_args(sys.argv[1:]))"]
    return None


AMPCHECK_TRAIN = """
import json, sys
from dataclasses import asdict
from ampcheck.data.particles import ParticleDataset
from ampcheck.train import TrainConfig, train
run = train(TrainConfig(epochs=int(sys.argv[2]), batch_size=8, device="cpu"),
            ParticleDataset.from_dir(sys.argv[1]), show_progress=False)
print(json.dumps([asdict(h) for h in run.history]))
"""


def run_ampcheck(data: Path, epochs: int, env: dict[str, str]) -> dict:
    """ampcheck's base VAE on every image of ``data`` (no held-out split, as cryoDRGN)."""
    proc = subprocess.run([sys.executable, "-c", AMPCHECK_TRAIN, str(data), str(epochs)],
                          capture_output=True, text=True, check=True, env=env)
    history = json.loads(proc.stdout.strip().splitlines()[-1])
    images = sum(h["images"] for h in history)
    seconds = sum(h["seconds"] for h in history)
    return {"images_per_s": images / seconds, "recon": history[-1]["recon"],
            "seconds_per_epoch": seconds / len(history)}


def run_cryodrgn(cmd: list[str], data: Path, epochs: int, work: Path,
                 env: dict[str, str]) -> dict:
    out = work / f"cryodrgn-{time.time_ns()}"
    c = CONFIG
    proc = subprocess.run(
        [*cmd, str(data / "particles.mrcs"), "--poses", str(data / "poses.pkl"), "--ctf",
         str(data / "ctf.pkl"), "--zdim", str(c["zdim"]), "--enc-dim", str(c["hidden"]),
         "--enc-layers", str(c["layers"]), "--dec-dim", str(c["hidden"]), "--dec-layers",
         str(c["layers"]), "-b", str(c["batch"]), "-n", str(epochs), "--lr", "1e-4",
         "--no-analysis", "-o", str(out)], capture_output=True, text=True, check=False, env=env)
    log = proc.stdout + proc.stderr + ((out / "run.log").read_text()
                                       if (out / "run.log").is_file() else "")
    epochs_found = {int(m[0]): m for m in EPOCH_LINE.findall(log)}
    if proc.returncode != 0 or not epochs_found:
        raise SystemExit(f"cryodrgn train_vae failed:\n{log[-3000:]}")
    n = json.loads((data / "manifest.json").read_text())["n"]
    seconds = [timedelta(hours=int(h), minutes=int(m), seconds=float(s)).total_seconds()
               for _, _, h, m, s in epochs_found.values()]
    last = epochs_found[max(epochs_found)]
    return {"images_per_s": n * len(seconds) / sum(seconds), "recon": float(last[1]),
            "seconds_per_epoch": sum(seconds) / len(seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--data", type=Path, help="a data set directory (default: the ci set)")
    ap.add_argument("--cryodrgn", help="the cryodrgn executable of another environment")
    add_malloc_option(ap, default="system")
    args = ap.parse_args()
    data = ci_data(args.data)
    env = malloc_env(args.malloc)
    print(f"malloc: {args.malloc}, for both programs")
    cmd = cryodrgn_command(args.cryodrgn)
    if cmd is None:
        print("cryoDRGN not found (install ampcheck[cryodrgn] or pass --cryodrgn): timing "
              "ampcheck alone")
    runs: dict[str, list[dict]] = {"ampcheck": [], "cryodrgn": []}
    with tempfile.TemporaryDirectory(prefix="ampcheck-vs-") as tmp:
        for r in range(args.rounds):
            for name in ("ampcheck", "cryodrgn") if r % 2 == 0 else ("cryodrgn", "ampcheck"):
                if name == "cryodrgn" and cmd is None:
                    continue
                res = (run_ampcheck(data, args.epochs, env) if name == "ampcheck"
                       else run_cryodrgn(cmd, data, args.epochs, Path(tmp), env))
                runs[name].append(res)
                print(f"round {r + 1} {name:9s} {res['images_per_s']:6.1f} images/s "
                      f"({res['seconds_per_epoch']:.1f} s/epoch), last-epoch recon "
                      f"{res['recon']:.5f}", flush=True)
    med = {k: statistics.median(x["images_per_s"] for x in v) for k, v in runs.items() if v}
    print("\nmedian images/s: " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()))
    if len(med) == 2:
        print(f"ratio ampcheck / cryodrgn: {med['ampcheck'] / med['cryodrgn']:.2f}x "
              f"(median recon after {args.epochs} epoch(s): ampcheck "
              f"{statistics.median(x['recon'] for x in runs['ampcheck']):.5f}, cryodrgn "
              f"{statistics.median(x['recon'] for x in runs['cryodrgn']):.5f})")


if __name__ == "__main__":
    main()
