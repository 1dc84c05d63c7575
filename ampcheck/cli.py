"""The ``ampcheck`` command line.

``ampcheck run`` is the main job (today: the embedded synthetic data set and its summary; the
check battery joins it as it lands). ``ampcheck synth`` writes a synthetic data set. Errors that
are the user's to fix print one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from . import __version__
from .errors import AmpcheckError, ConfigError


def _number(convert, lower: float, strict: bool, what: str):
    """An argparse type: ``convert`` the text and require it ``> lower`` (strict) or ``>=``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value > lower if strict else value >= lower):  # NaN fails both
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value
    return parse


_positive_int = _number(int, 0, True, "a positive integer")
_non_negative_int = _number(int, 0, False, "a non-negative integer")
_positive_float = _number(float, 0, True, "a positive number")


def _add_synth_options(p: argparse.ArgumentParser) -> None:
    from .data.synthetic import SIZES

    p.add_argument("--size", choices=list(SIZES), default="ci",
                   help="preset: ci (64 px, 2,000 images), paper (128 px, 50,000), tiny "
                        "(32 px, 48); default ci")
    p.add_argument("--n", type=_positive_int, help="number of images (overrides the preset)")
    p.add_argument("--box", type=_positive_int, metavar="D", help="image size in pixels (even)")
    p.add_argument("--apix", type=_positive_float, help="pixel size in Å (default 192 Å / D)")
    p.add_argument("--snr", type=_positive_float,
                   help="signal-to-noise ratio (default 0.1; 'inf' for noiseless)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")


def _synth_config(args: argparse.Namespace):
    from .data.synthetic import SynthConfig

    return SynthConfig.preset(args.size, n=args.n, D=args.box, apix=args.apix, snr=args.snr,
                              seed=args.seed)


def _cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import generate

    result = generate(args.out, _synth_config(args), force=args.force, star=args.star,
                      show_progress=not args.quiet)
    print(result.summary())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    report = out / "report.json"
    if not args.data_only:  # refuse before any work
        from .train import resolve_device

        resolve_device(args.device)
        if report.exists() and not args.force:
            raise ConfigError(f"{report} exists; use --force to replace it or --out for "
                              "another directory")
    data_dir = _run_data(out / "data", args)
    if args.data_only:
        return 0
    return _run_battery(data_dir, report, args)


def _run_data(data_dir: Path, args: argparse.Namespace) -> Path:
    """Generate the embedded synthetic data set, or reuse the one made with the same settings."""
    from .data.synthetic import GENERATOR_VERSION, generate

    cfg = _synth_config(args)
    manifest_path = data_dir / "manifest.json"
    if manifest_path.is_file() and not args.force:
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as err:
            raise ConfigError(f"{manifest_path} is not valid JSON ({err}); use --force to "
                              "regenerate the data set") from None
        if (manifest.get("generator_version") == GENERATOR_VERSION
                and manifest.get("config") == _jsonable(asdict(cfg))):
            print(f"Reusing the synthetic data set in {data_dir} (same configuration).")
            return data_dir
        raise ConfigError(f"{data_dir} holds a data set made with other settings; "
                          "use --force to replace it or --out for another directory")
    result = generate(data_dir, cfg, force=args.force, show_progress=not args.quiet)
    print(result.summary())
    return data_dir


def _run_battery(data_dir: Path, report: Path, args: argparse.Namespace) -> int:
    """Every check on the cryoDRGN-style VAE (evil twins with the paper's large encoder) and
    the MNIST control; print the amortization profile and write ``report.json``."""
    import time

    from .baselines import write_json_atomic
    from .checks import TrainingCache, check_vae
    from .data.particles import ParticleDataset

    start = time.perf_counter()
    data = ParticleDataset.from_dir(data_dir)
    cache = TrainingCache(show_progress=not args.quiet)
    common = {"budget": args.budget, "seeds": args.seeds, "device": args.device, "cache": cache}
    results = check_vae("cryoem:base", data, options={"twin_encoder": "large"}, **common)
    results += check_vae("cryoem:base", data, checks=["mnist_control"], **common)
    seconds = time.perf_counter() - start
    print(f"\nAmortization profile ({args.budget} budget, {args.seeds} seed(s), "
          f"{seconds / 60:.1f} min):")
    for r in results:
        print(f"  {r.summary()}\n      {r.explanation}")
    manifest = json.loads((data_dir / "manifest.json").read_text())
    write_json_atomic(report, {
        "profile": {r.check: r.verdict for r in results},
        "checks": [r.to_dict() for r in results],
        "dataset": {"path": str(data_dir), **{k: manifest.get(k) for k in
                                                ("n", "D", "apix", "snr", "seed")}},
        "runs": {"budget": args.budget, "seeds": args.seeds, "seconds": round(seconds, 1),
                 "trained": cache.summary()},
    })
    print(f"\nReport: {report}")
    return 0


def _jsonable(value):
    return json.loads(json.dumps(value, default=float))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ampcheck",
        description="Does your VAE's encoder really amortize inference? Checks from a cryo-EM "
                    "case study, for any VAE.")
    parser.add_argument("--version", action="version", version=f"ampcheck {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="the main job: every check on the embedded synthetic data",
                         description="Generate the embedded synthetic data set (ci size by "
                                     "default), train every variant the checks need, run every "
                                     "check and the MNIST control, print the amortization "
                                     "profile and write OUT/report.json.")
    run.add_argument("--out", default="ampcheck-out", help="output directory (default "
                                                          "./ampcheck-out)")
    run.add_argument("--force", action="store_true", help="replace existing outputs")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument("--budget", choices=["smoke", "medium", "full"], default="smoke",
                     help="training budget of every variant (default smoke: minutes on a CPU)")
    run.add_argument("--seeds", type=_positive_int, default=1,
                     help="training seeds per variant (default 1)")
    run.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:N]")
    run.add_argument("--data-only", action="store_true",
                     help="only generate (or reuse) the data set and summarise it")
    _add_synth_options(run)
    run.set_defaults(func=_cmd_run)

    synth = sub.add_parser("synth", help="write a synthetic heterogeneous cryo-EM data set",
                           description="Write particles.mrcs, poses.pkl, ctf.pkl, truth.npz, "
                                       "volumes/ and manifest.json to --out.")
    synth.add_argument("--out", required=True, help="output directory (must not exist or be "
                                                    "empty, unless --force)")
    synth.add_argument("--force", action="store_true", help="replace an existing directory")
    synth.add_argument("--quiet", action="store_true", help="no progress output")
    synth.add_argument("--star", action="store_true",
                       help="also write particles.star (RELION 3.1) describing the same particles")
    _add_synth_options(synth)
    synth.set_defaults(func=_cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run", *(argv or [])])
    try:
        return args.func(args)
    except AmpcheckError as err:
        print(f"ampcheck: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder that cannot be created, a full disk, no permission
        print(f"ampcheck: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ampcheck: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
