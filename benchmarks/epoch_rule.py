"""Does the recommended epoch agree with the truth? The rule of ``ampcheck.epochs``, validated.

    python benchmarks/epoch_rule.py [--seeds 0 1 2] [--epochs 10] [--n 1250] [--box 24]
                                    [--out DIR]

For two data sets built differently (the embedded synthetic set of Gaussian blobs projected
in Fourier space, and the solid-body molecule of ``tests/molecules.py`` projected in real
space) and each training seed, it trains the default cryo-EM VAE (``ampcheck train``,
standard budget, ``--epochs``) keeping every epoch's weights, measures every epoch
(``ampcheck check --run RUN --epoch all``: the truth-free recommended epoch) and prints, per
run, the recommended epoch beside the epochs the ground truth prefers: the best held-out truth
recovery (``r2_linear[heldout]``) and the best AUC-FSC of decoded volumes against the true
maps (training images; the molecule set has no maps), with the values at each, and how far
the recommendation is from each. Nothing here tunes the rule: it is run as it ships.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ampcheck.epoch_check import check_run_epochs  # noqa: E402
from ampcheck.epochs import parse_epochs  # noqa: E402
from ampcheck.runs import train_run  # noqa: E402


def _data(kind: str, root: Path, n: int, box: int) -> Path:
    out = root / kind
    if kind == "blobs":
        from ampcheck.data.synthetic import SynthConfig, generate

        generate(out, SynthConfig.preset("standard", n=n, D=box), show_progress=False)
    else:
        from molecules import write_other_molecule

        write_other_molecule(out, n=n, D=box, seed=0)
    return out


def _best(profile, name: str) -> tuple[int | None, float]:
    values = [(e, m[name].value) for e, m, _ in profile.epochs if name in m]
    values = [(e, v) for e, v in values if np.isfinite(v)]
    if not values:
        return None, float("nan")
    return max(values, key=lambda x: x[1])


def _at(profile, name: str, epoch: int | None) -> float:
    for e, m, _ in profile.epochs:
        if e == epoch and name in m:
            return m[name].value
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--n", type=int, default=1250)
    p.add_argument("--box", type=int, default=24)
    p.add_argument("--sets", nargs="+", default=["blobs", "molecule"])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = p.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="ampcheck-epoch-rule-"))
    head = ("set", "seed", "rec", "best R2 ho", "R2 ho at rec/best", "best AUC", "AUC at rec/best",
            "rec-R2", "rec-AUC", "min")
    print("  ".join(f"{h:>17}" if i == 4 or i == 6 else f"{h:>10}" for i, h in enumerate(head)),
          flush=True)
    rows = []
    for kind in args.sets:
        data = _data(kind, root, args.n, args.box)
        for seed in args.seeds:
            start = time.perf_counter()
            run_dir = root / f"{kind}-seed{seed}"
            train_run(run_dir, str(data), budget="standard", run_id=secrets.token_hex(8),
                      show_progress=False, checkpoint_every=1, seed=seed, epochs=args.epochs)
            profile, _, _ = check_run_epochs(run_dir, parse_epochs("all"),
                                             processes=args.processes)
            rec = profile.recommended_epoch
            r2_e, r2_v = _best(profile, "r2_linear[heldout]")
            auc_e, auc_v = _best(profile, "volume_auc_fsc[train]")
            row = (kind, seed, rec, r2_e, f"{_at(profile, 'r2_linear[heldout]', rec):.3f}/"
                   f"{r2_v:.3f}", auc_e, f"{_at(profile, 'volume_auc_fsc[train]', rec):.3f}/"
                   f"{auc_v:.3f}", None if None in (rec, r2_e) else rec - r2_e,
                   None if None in (rec, auc_e) else rec - auc_e,
                   (time.perf_counter() - start) / 60)
            rows.append((row, profile))
            print("  ".join(f"{c:>17}" if i in (4, 6) else
                            f"{c:>10.1f}" if isinstance(c, float) else f"{c!s:>10}"
                            for i, c in enumerate(row)), flush=True)
            print(f"      reason: {profile.reason}", flush=True)
    recs = [r[0][2] for r in rows]
    print(f"\nrecommended epochs: {recs} of {args.epochs} (last: {recs.count(args.epochs)}, "
          f"first: {recs.count(1)}); runs in {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
