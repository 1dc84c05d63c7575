"""pose_leakage and noise_resampling on their controls: the figures of the README's section.

    python benchmarks/leakage_resampling_controls.py

On 300 images of 16 px of the synthetic set, with uniform views and with 80% of each state's
images near a view of its own (``SynthConfig(view_preference=0.8)``), each check runs on the
constructed encoders of ``tests/test_leakage_resampling.py`` (latents = the truth, latents
carrying the in-plane angle, collapsed latents, the pixels); then ``noise_resampling`` runs on
the linear-Gaussian model of ``tests/linear_gaussian.py`` whose exact posterior is known, at
three posterior variances, honest (scale 1) and with the posterior variance 4x too small
(0.25) or too large (4). Prints each verdict with its metrics and intervals, and the seconds
each took.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from linear_gaussian import ExactPosterior, LinearGaussianData  # noqa: E402
from test_leakage_resampling import Constructed, D, N  # noqa: E402

from ampcheck.checks import check_vae  # noqa: E402
from ampcheck.data.particles import ParticleDataset  # noqa: E402
from ampcheck.data.synthetic import SynthConfig, generate  # noqa: E402

PREFIXES = ("leakage", "calibration", "miscal", "displacement")


def show(tag: str, r) -> None:
    keys = [k for k in r.metrics if k.startswith(PREFIXES)]
    print(f"{tag:40s} {r.verdict:4s}", "; ".join(f"{k} {r.metrics[k]}" for k in keys),
          r.flags or "")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        for pref in (0.0, 0.8):
            out = generate(Path(scratch) / f"views{pref}",
                           SynthConfig(n=N, D=D, view_preference=pref), show_progress=False).out
            data = ParticleDataset.from_dir(out)
            for kind in ("oracle", "leaky", "collapsed", "pixels"):
                for check in ("pose_leakage", "noise_resampling"):
                    t = time.perf_counter()
                    (r,) = check_vae(Constructed(kind, data.truth), data, checks=[check],
                                     budget="smoke")
                    show(f"preference {pref} {kind} {check} {time.perf_counter() - t:.1f}s", r)
    for w in (0.1, 0.35, 1.0):
        data = LinearGaussianData(w_scale=w)
        for scale in (1.0, 0.25, 4.0):
            (r,) = check_vae(ExactPosterior(data, scale), data, checks=["noise_resampling"],
                             budget="smoke")
            var = ExactPosterior(data).Sigma.diagonal().round(3)
            show(f"linear-Gaussian w={w} posterior var {var} x{scale}", r)


if __name__ == "__main__":
    main()
