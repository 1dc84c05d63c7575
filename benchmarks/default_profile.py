"""The main job's profile over data seeds and training seeds: does the default reproduce?

    python benchmarks/default_profile.py [--data-seeds 0 1 2] [--train-seeds 0 1]
                                         [--other-molecule | --data DIR] [--budget standard]
                                         [--out DIR]

For each data seed it generates the `standard` synthetic data set (or, with
``--other-molecule``, the solid-body molecule of ``tests/molecules.py``, projected in real
space; with ``--data DIR``, that data set, e.g. one of ``ampcheck synth --trajectory``), and
for each training seed it runs the main job's battery
(:func:`ampcheck.checks.main_battery`) with that one seed. It prints one row per run: every
verdict with its governing value (``*`` marks a flagged verdict), the truth R² of every trained
cryo-EM variant's latents, and the battery's wall time; ``--out`` also keeps each run's
``report.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ampcheck.checks import TrainingCache, main_battery  # noqa: E402
from ampcheck.checks._common import truth_of, truth_recovery  # noqa: E402
from ampcheck.data.particles import ParticleDataset  # noqa: E402
from ampcheck.data.synthetic import SynthConfig, generate  # noqa: E402
from ampcheck.report import write_report  # noqa: E402
from ampcheck.results import result_keys  # noqa: E402

SHORT = {"shift_invariance": "shift", "rotation_invariance": "rot", "evil_twin": "twin",
         "vlt_equivalence": "vlt", "amortization_gap": "gap",
         "heldout_generalisation": "held", "mnist_control": "mnist"}


def _data(root: Path, seed: int, other: bool) -> ParticleDataset:
    if other:
        from molecules import write_other_molecule

        return ParticleDataset.from_dir(write_other_molecule(root / f"other{seed}", seed=seed))
    out = generate(root / f"standard{seed}", SynthConfig.preset("standard", seed=seed),
                   show_progress=False).out
    return ParticleDataset.from_dir(out)


def _cell(key: str, r) -> str:
    name = SHORT.get(r.check, r.check) + ("/inv" if "[" in key else "")
    if r.skip:
        return f"{name} SKIP"
    return f"{name} {r.verdict}{'*' if r.flags else ''} {r.governing.value:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--other-molecule", action="store_true")
    p.add_argument("--data", type=Path, help="a data set directory instead of generated ones")
    p.add_argument("--budget", default="standard")
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ampcheck-profile-"))
    for ds in ["given"] if a.data else a.data_seeds:
        data = ParticleDataset.from_dir(a.data) if a.data else _data(root, ds, a.other_molecule)
        for ts in a.train_seeds:
            cache = TrainingCache()
            start = time.perf_counter()
            results = main_battery(data, budget=a.budget, seeds=[ts], device="cpu", cache=cache)
            seconds = time.perf_counter() - start
            keys = result_keys([(r.check, r.model) for r in results])
            r2 = {}
            for run in cache.runs:
                if run.config.model == "cryoem":
                    idx = np.arange(min(len(run.data), 500))
                    rec = truth_recovery(run.latents(idx)[0], truth_of(run.data, idx))
                    r2[cache.label(run.config).split("/seed")[0]] = round(rec[1], 2)
            print(f"data {ds} train {ts} ({seconds / 60:.1f} min): "
                  + " | ".join(_cell(k, r) for k, r in zip(keys, results, strict=True))
                  + f"\n    truth R² {json.dumps(r2)}", flush=True)
            if a.out is not None:
                write_report(a.out / f"data{ds}-train{ts}", results, {"seed": ds},
                             {"budget": a.budget, "seeds": [ts], "trained": cache.summary()})


if __name__ == "__main__":
    main()
