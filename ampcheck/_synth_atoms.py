"""``ampcheck synth --structures`` / ``--trajectory``: the command line of
:mod:`ampcheck.data.structures` (options, their checks, the run). Torch-free; the structure
readers are imported only when such a data set is made."""

from __future__ import annotations

import argparse

from . import _argtypes as argtypes
from .errors import ConfigError

#: ``dest`` names of the options that only a data set from atomic models takes.
ATOMIC_OPTIONS = ("topology", "stride", "atoms", "residues", "core", "no_align", "resolution",
                  "weights", "per_state", "max_shift", "defocus", "volume_grid", "workers")


_non_negative_float = argtypes.number(float, 0, False, "a non-negative number")


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "from atomic models (needs the extra: pip install 'ampcheck[structures]')",
        "a heterogeneous stack of a real molecule: one state per model, or per trajectory frame")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--structures", nargs="+", metavar="FILE",
                     help="PDB or mmCIF models, one state each (truth: z_class, the index); "
                          "MDAnalysisTests:NAME is a file of that package's test data")
    src.add_argument("--trajectory", metavar="FILE",
                     help="a trajectory MDAnalysis reads (needs --topology; truth: "
                          "z_continuous, the frame's position)")
    g.add_argument("--topology", metavar="FILE", help="the trajectory's topology (PSF, PDB, ...)")
    g.add_argument("--stride", type=argtypes.positive_int, metavar="N",
                   help="every Nth frame (default 1)")
    g.add_argument("--atoms", choices=("heavy", "all", "backbone", "ca"),
                   help="which atoms (default heavy: no hydrogens; waters never)")
    g.add_argument("--residues", metavar="SPEC",
                   help="only these residues: [CHAIN:]LO-HI ranges, comma-separated")
    g.add_argument("--core", metavar="SPEC",
                   help="align every state on these residues' atoms (the rigid core; default: "
                        "all selected atoms)")
    g.add_argument("--no-align", action="store_true", help="keep the coordinates as they are")
    g.add_argument("--resolution", type=argtypes.positive_float, metavar="Å",
                   help="resolution of the atomic density (default 4 pixels; σ = 0.225 × it)")
    g.add_argument("--weights", nargs="+", type=_non_negative_float, metavar="W",
                   help="relative population of each model (default equal)")
    g.add_argument("--per-state", type=argtypes.positive_int, metavar="N",
                   help="images per state (instead of --n)")
    g.add_argument("--max-shift", type=_non_negative_float, metavar="PX",
                   help="in-plane shifts up to ± this many pixels (default 0.04 × box)")
    g.add_argument("--defocus", nargs=2, type=argtypes.positive_float, metavar=("LO", "HI"),
                   help="defocus range in µm (default 1 3)")
    g.add_argument("--volume-grid", type=argtypes.positive_int, metavar="N",
                   help="ground-truth maps of N frames of a trajectory (default 5)")
    g.add_argument("--workers", type=argtypes.positive_int, metavar="N",
                   help="processes that render the images side by side (default: the cores "
                        "available; the same images whatever the number)")


def wanted(args: argparse.Namespace) -> bool:
    """Whether the command asks for a data set from atomic models; refuses their options
    without a source, and a trajectory without its topology."""
    given = [f"--{n.replace('_', '-')}" for n in ATOMIC_OPTIONS
             if getattr(args, n, None) not in (None, False)]
    if args.structures is None and args.trajectory is None:
        if given:
            raise ConfigError(f"{', '.join(given)}: only with --structures or --trajectory")
        return False
    if args.trajectory is not None and args.topology is None:
        raise ConfigError("--trajectory needs --topology (the file that names its atoms)")
    if args.structures is not None and args.topology is not None:
        raise ConfigError("--topology goes with --trajectory, not --structures")
    if args.per_state is not None and args.n is not None:
        raise ConfigError("--per-state and --n both set the number of images; give one")
    return True


def run(args: argparse.Namespace) -> int:
    from .data.structure_files import load_ensemble
    from .data.structures import AtomicSynthConfig, generate
    from .data.synthetic import SIZES
    from .outdir import OutputDir

    preset = SIZES[args.size or args.default_size]
    ensemble = load_ensemble(args.structures, args.trajectory, args.topology,
                             atoms=args.atoms or "heavy", residues=args.residues,
                             core=args.core, align=not args.no_align, stride=args.stride or 1)
    n = args.n or preset["n"]
    if args.per_state is not None:
        n = args.per_state * len(ensemble.coords)
    fields = {"n": n, "D": args.box or preset["D"], "apix": args.apix,
              "resolution": args.resolution, "max_shift_px": args.max_shift,
              "state_weights": tuple(args.weights) if args.weights else None}
    for name, value in (("snr", args.snr), ("seed", args.seed), ("volume_grid",
                                                                 args.volume_grid)):
        if value is not None:
            fields[name] = value
    if args.defocus is not None:
        fields["defocus_range_angstroms"] = tuple(1e4 * d for d in args.defocus)
    cfg = AtomicSynthConfig(**fields)
    with OutputDir(args.out, "ampcheck synth") as held:
        result = generate(held.path, ensemble, cfg, force=args.force, star=args.star,
                          show_progress=not args.quiet, workers=args.workers)
    print(result.summary())
    return 0
