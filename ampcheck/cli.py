"""The ``ampcheck`` command line.

* ``ampcheck run``: the main job, every check on the embedded synthetic data set (or on
  ``--data DIR``, or on particles given as cryoDRGN's ``train_vae`` takes them: ``--particles``,
  ``--poses``, ``--ctf``, ``--ind``, ``--datadir``), with a report;
* ``ampcheck synth``: write a synthetic data set (of atomic models: :mod:`._synth_atoms`);
* ``ampcheck train``: train one harness variant into a run directory (resumable);
* ``ampcheck check``: run the checks on a run of ``ampcheck train`` or on a cryoDRGN model;
* ``ampcheck report``: render a report directory's HTML again from its JSON.

The commands are a thin layer over the library: :mod:`ampcheck.runs` (a run directory),
:mod:`ampcheck.checks` and :mod:`ampcheck.report`; budgets and model families come from their
torch-free registries (:mod:`ampcheck.budgets`, :mod:`ampcheck.families`). Errors that are the
user's to fix print one line and exit with status 2, without a traceback. Nothing the user has
is replaced without ``--force``, and every file is written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import __version__
from . import _argtypes as argtypes
from .budgets import BUDGETS, DEFAULT_BUDGET, training_help
from .errors import AmpcheckError, ConfigError, InputError, one_line
from .families import trainable_families
from .runs import PARTICLE_KEYS, open_particles, open_run, train_run

REPORT_JSON, REPORT_HTML = "report.json", "report.html"


_positive_int, _non_negative_int, _positive_float = (
    argtypes.positive_int, argtypes.non_negative_int, argtypes.positive_float)


#: The options of the synthetic data set (``dest`` names; the option is ``--`` + it). Their
#: defaults are None, so that ``run`` can tell which were given.
SYNTH_OPTIONS = ("size", "n", "box", "apix", "snr", "seed")


def _add_synth_options(p: argparse.ArgumentParser, size: str) -> None:
    from .data.synthetic import SIZES

    p.set_defaults(default_size=size)
    p.add_argument("--size", choices=list(SIZES),
                   help="preset: standard (24 px, 1,250 images), ci (64 px, 2,000), paper "
                        f"(128 px, 50,000), tiny (32 px, 48); default {size}")
    p.add_argument("--n", type=_positive_int, help="number of images (overrides the preset)")
    p.add_argument("--box", type=_positive_int, metavar="D", help="image size in pixels (even)")
    p.add_argument("--apix", type=_positive_float,
                   help="pixel size in Å (default 192 Å / D; from atomic models: from the "
                        "molecule's size)")
    p.add_argument("--snr", type=_positive_float,
                   help="signal-to-noise ratio (default 0.1; 'inf' for noiseless)")
    p.add_argument("--seed", type=argtypes.seed, help="random seed (default 0)")


def _synth_config(args: argparse.Namespace):
    from .data.synthetic import SynthConfig

    return SynthConfig.preset(args.size or args.default_size, n=args.n, D=args.box,
                              apix=args.apix, snr=args.snr, seed=args.seed)


def _given(args: argparse.Namespace, names) -> list[str]:
    """The options among ``names`` (``dest`` names, default None) given on the command line."""
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) is not None]


def _cmd_synth(args: argparse.Namespace) -> int:
    from . import _synth_atoms
    from .data.synthetic import generate
    from .outdir import OutputDir

    if _synth_atoms.wanted(args):
        return _synth_atoms.run(args)
    with OutputDir(args.out, "ampcheck synth") as held:
        result = generate(held.path, _synth_config(args), force=args.force, star=args.star,
                          show_progress=not args.quiet)
    print(result.summary())
    return 0


def _refuse_existing(out: Path, names, force: bool, hint: str = "") -> None:
    """Refuse (before any work) to replace anything in ``out`` without ``--force``: files
    ampcheck wrote and files it did not write alike."""
    for name in names:
        if (out / name).exists() and not force:
            raise ConfigError(f"{out / name} exists; use --force to replace it{hint} or --out "
                              "for another directory")


#: ``ampcheck run``'s training options and their defaults (None on the parser, so that
#: ``--data-only``, which trains nothing, can refuse them).
RUN_TRAINING = {"budget": DEFAULT_BUDGET, "seeds": 1, "device": "auto"}


def _cmd_run(args: argparse.Namespace) -> int:
    from .outdir import OutputDir
    from .report import REPORT_PARTS

    particles = _particle_spec(args)  # usage errors before any folder is made
    _refuse_idle_options(args, particles)
    for name, default in RUN_TRAINING.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.data_only and (particles is not None or args.data):  # nothing to write in OUT
        if particles is not None:
            data = open_particles(particles)
        else:
            from .data.particles import ParticleDataset

            data = ParticleDataset.from_dir(args.data)
        print(_describe(data))
        return 0
    with OutputDir(args.out, "ampcheck run") as held:
        out = held.path
        if not args.data_only:  # refuse before any work
            from .train import resolve_device

            resolve_device(args.device)
            _refuse_existing(out, REPORT_PARTS, args.force, " (the whole report is replaced)")
        if particles is not None:
            return _run_battery(open_particles(particles), particles, out / REPORT_JSON,
                                args)
        data_dir = Path(args.data) if args.data else _run_data(out / "data", args)
        if args.data_only:
            return 0
        return _run_battery(None, data_dir, out / REPORT_JSON, args)


def _refuse_idle_options(args: argparse.Namespace, particles: dict | None) -> None:
    """Refuse options that would do nothing: the synthetic data set's with ``--particles`` or
    ``--data`` (no data set is generated), the training options with ``--data-only``."""
    source = "--particles" if particles is not None else "--data" if args.data else None
    idle = _given(args, SYNTH_OPTIONS) if source else []
    if idle:
        raise ConfigError(f"{', '.join(idle)} given with {source}: "
                          f"{'they describe' if len(idle) > 1 else 'it describes'} the embedded "
                          f"synthetic data set, which {source} replaces; expected "
                          f"{'them' if len(idle) > 1 else 'it'} without {source}")
    idle = _given(args, RUN_TRAINING) if args.data_only else []
    if idle:
        raise ConfigError(f"{', '.join(idle)} given with --data-only, which trains nothing; "
                          f"expected {'them' if len(idle) > 1 else 'it'} without --data-only")


def _run_data(data_dir: Path, args: argparse.Namespace) -> Path:
    """Generate the embedded synthetic data set, or reuse the one made with the same settings."""
    from .data.synthetic import GENERATOR_VERSION, generate
    from .outdir import repair

    cfg = _synth_config(args)
    repair(data_dir)  # what a killed generate() left beside it (the caller holds its folder)
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


def _run_battery(data, source: Path | dict, report: Path, args: argparse.Namespace) -> int:
    """The main job's battery (:func:`~ampcheck.checks.main_battery`) on ``data`` (None: the
    data set folder ``source``; else ``source`` is its :func:`_particle_spec`); print the
    amortization profile and write the report."""
    from .checks import TrainingCache, main_battery
    from .data.particles import ParticleDataset

    start = time.perf_counter()
    if data is None:
        data = ParticleDataset.from_dir(source)
    cache = TrainingCache(show_progress=not args.quiet)
    from .render import warm_up_embedding

    results = main_battery(data, budget=args.budget, seeds=args.seeds, device=args.device,
                           cache=cache, meanwhile=warm_up_embedding)
    _finish(report.parent, results, time.perf_counter() - start, _dataset(data, source),
            {"budget": args.budget, "seeds": args.seeds, "trained": cache.summary()})
    return 0


def _dataset(data, path) -> dict:
    """What a report says of its data set: the manifest's summary when there is one; the
    files it was read from when ``path`` is a :func:`_particle_spec`."""
    if isinstance(path, dict):
        return {"path": path["particles"], "n": len(data), "D": int(data.D),
                "apix": getattr(data, "apix", None),
                **{k: v for k, v in path.items() if k != "particles"}}
    manifest = Path(path) / "manifest.json" if path is not None else None
    summary = {"path": str(path) if path is not None else repr(data), "n": len(data),
               "D": int(data.D), "apix": getattr(data, "apix", None)}
    if manifest is not None and manifest.is_file():
        m = json.loads(manifest.read_text())
        summary.update({k: m.get(k) for k in ("n", "D", "apix", "snr", "seed")})
    return summary


def _finish(out: Path, results, seconds: float, dataset: dict, runs: dict, *,
            over_epochs=None) -> None:
    """Print the amortization profile (and ``over_epochs``, an
    :class:`~ampcheck.checks.over_epochs.EpochProfile`: its table and recommended epoch),
    write the report and say where it is."""
    from .render import render_html
    from .report import write_report

    if over_epochs is not None:
        from .epochs import profile_text

        block = over_epochs.to_dict()
        print(f"\n{profile_text(block)}")
        last = block["epochs"][-1]["epoch"]
        print(f"The checks below are those of epoch {last}, the last measured.")
    budget = f"{runs['budget']} budget, " if runs.get("budget") else ""  # a cryoDRGN run: none
    print(f"\nAmortization profile ({budget}{seconds / 60:.1f} min):")
    several, model = len({r.model for r in results}) > 1, None
    for r in results:
        if several and r.model != model:  # a heading for each model's results
            model = r.model
            print(f" {model}:")
        print(f"  {r.summary()}" + ("" if r.verdict == "SKIP" else f"\n      {r.explanation}"))
    if any(r.flags for r in results):
        from .calibration import budget_hint

        print("\n" + budget_hint(runs.get("budget"), dataset.get("D")))
    print("Rendering the report ...", flush=True)
    path = write_report(out, results, dataset, {**runs, "seconds": round(seconds, 1)},
                        render=render_html,
                        over_epochs=None if over_epochs is None else over_epochs.to_dict())
    print(f"\nReport: {path} and {path.with_name(REPORT_HTML)}")


# ---------------------------------------------------------------------------- train
def _add_particle_options(p: argparse.ArgumentParser, *, title: str | None = None,
                          ind_help: str | None = None) -> None:
    """``--particles`` with ``--poses``, ``--ctf``, ``--ind`` and ``--datadir``: the inputs of
    ``cryodrgn train_vae``, for data that are not in a data set folder of ``--data``
    (``title``, ``ind_help``: what they mean to another command)."""
    g = p.add_argument_group(title or
        "particles as cryoDRGN's train_vae takes them (instead of --data; no ground truth "
        "needed: the checks that need it are listed as SKIP)")
    g.add_argument("--particles", metavar="STACK",
                   help="the images: a .mrcs/.mrc stack, a .txt list of stacks (relative to the "
                        "list's folder), or a RELION .star (3.0, or 3.1 with data_optics), which "
                        "also gives the poses and CTF")
    g.add_argument("--poses", metavar="PKL", help="poses .pkl, (rot (N,3,3), trans (N,2)) in "
                                                  "fractions of the box (cryoDRGN's pose.pkl); "
                                                  "overrides a .star's")
    g.add_argument("--ctf", metavar="PKL", help="CTF .pkl, (N, 9) (cryoDRGN's ctf.pkl); "
                                                "overrides a .star's")
    g.add_argument("--ind", metavar="PKL",
                   help=ind_help or "use only these images: a .pkl of 0-based indices into the "
                        "stack (cryoDRGN's --ind); poses and CTF of the whole stack are filtered "
                        "too")
    g.add_argument("--datadir", metavar="DIR",
                   help="where the stacks named by a .star live (cryoDRGN's --datadir; "
                        "default: the .star's folder)")


def _particle_spec(args: argparse.Namespace) -> dict | None:
    """The particle files the command was given (``--particles`` and its companions), as
    absolute paths (a run records them in ``run.json`` for ``check --run``); None without
    ``--particles``. Combinations that cannot mean anything are usage errors."""
    import os

    companions = [f"--{o}" for o in PARTICLE_KEYS if getattr(args, o, None) is not None]
    if getattr(args, "particles", None) is None:
        if companions:
            raise ConfigError(f"{', '.join(companions)} given without --particles STACK; they "
                              "describe the particles of --particles (a --data DIR folder has "
                              "its own poses.pkl and ctf.pkl)")
        return None
    if getattr(args, "data", None) is not None:
        raise ConfigError(f"give either --data {args.data} or --particles {args.particles} "
                          "(with --poses, --ctf, --ind, --datadir), not both")
    spec = {"particles": os.path.abspath(args.particles)}
    for name in PARTICLE_KEYS:
        value = getattr(args, name)
        spec[name] = None if value is None else os.path.abspath(value)
    return spec


def _describe(data) -> str:
    """One line about a particle data set: what ``run --data-only`` prints."""
    parts = [p for p, a in (("poses", data.rot), ("CTF", data.ctf)) if a is not None]
    return (f"Particles {data.stack.path}: {len(data)} images of {data.D} x {data.D} px at "
            f"{data.apix if data.apix is not None else '?'} Å/px, with "
            f"{' and '.join(parts)}; ground truth: "
            f"{', '.join(sorted(data.truth)) if data.truth else 'none'}")


def _cmd_train(args: argparse.Namespace) -> int:
    """Train one variant; under ``torchrun`` every process runs this, and they train together
    (DDP), rank 0 alone holding and writing the run."""
    import os
    import secrets

    from .outdir import OutputDir

    if args.data is None and args.particles is None:
        raise ConfigError("give --data DIR|mnist (a data set folder) or --particles STACK (with "
                          "--poses, --ctf, --ind, --datadir as for cryodrgn train_vae)")
    args.particle_spec = _particle_spec(args)
    main_rank = os.environ.get("RANK", "0") == "0"
    held = OutputDir(args.out, "ampcheck train") if main_rank else contextlib.nullcontext()
    settings = {"variant": args.variant, "seed": args.seed, "device": args.device,
                "amp": args.amp}
    for name in ("encoder", "epochs", "batch_size"):  # batch_size: over all processes
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.variant == "vlt" and args.table_init:
        settings["table_init"] = args.table_init
    with held:
        run = train_run(Path(os.path.abspath(args.out)), args.particle_spec or args.data,
                             budget=args.budget, model=args.model, resume=args.resume,
                             force=args.force, run_id=secrets.token_hex(8),
                             show_progress=not args.quiet,
                             checkpoint_every=args.checkpoint_every, **settings)
    if run is None:  # a torchrun process other than rank 0
        return 0
    h = run.history[-1] if run.history else None
    print(f"Trained {run.config.describe()} on {len(run.data)} images: "
          + (f"{len(run.history)} epoch(s), loss {h.loss:.5g}, "
             f"{np.mean([r.seconds for r in run.history]):.1f} s/epoch" if h else "no epochs")
          + f"\nRun: {os.path.abspath(args.out)}")
    return 0


# ---------------------------------------------------------------------------- check
def _cmd_check(args: argparse.Namespace) -> int:
    import os

    from .checks import resolve_checks, resolve_thresholds
    from .outdir import OutputDir, reading
    from .report import REPORT_PARTS

    if (args.run is None) == (args.cryodrgn is None):
        raise ConfigError("give either --run RUN (a run of `ampcheck train`) or --cryodrgn DIR "
                          "(a cryoDRGN train_vae directory)")
    data_options = [f"--{o.replace('_', '-')}" for o in ("particles", *PARTICLE_KEYS,
                                                        "truth", "heldout_ind", "retrain")
                    if getattr(args, o, None) is not None]
    if args.run is not None and data_options:
        raise ConfigError(f"{', '.join(data_options)} given with --run: they describe the data "
                          "of a --cryodrgn run; a run of `ampcheck train` is checked on the data "
                          "it was trained on, recorded in its run.json")
    checks = resolve_checks(args.checks) if args.checks is not None else None
    thresholds = dict(args.threshold)
    resolve_thresholds(thresholds)  # unknown names and bad values fail before any work
    with OutputDir(args.out, "ampcheck check") as held:
        out = held.path
        _refuse_existing(out, REPORT_PARTS, args.force, " (the whole report is replaced)")
        start = time.perf_counter()
        if args.epoch is not None and args.epoch.single is None:
            profile, dataset, runs = _check_epochs(args, checks, thresholds, out)
            _finish(out, profile.last, time.perf_counter() - start, dataset, runs,
                    over_epochs=profile)
            return 0
        if args.cryodrgn is not None:
            results, dataset, runs = _check_cryodrgn(args, checks, thresholds)
        else:
            run_dir = Path(os.path.realpath(args.run))
            # no `ampcheck train` may start on the run while it is read (unless it is --out)
            with reading(run_dir, "--run") if run_dir != out else contextlib.nullcontext():
                results, dataset, runs = _check_run(run_dir, args, checks, thresholds)
        _finish(out, results, time.perf_counter() - start, dataset, runs)
    return 0


def _check_run(run_dir: Path, args: argparse.Namespace, checks, thresholds):
    """The checks on a run of ``ampcheck train`` (:func:`~ampcheck.runs.open_run`): its model is the
    subject's (not trained again); the variants that checks need are trained at the run's own
    settings."""
    from .checks import TrainingCache, check_vae
    from .train import TrainedModel

    meta, cfg, data, train_set, model = open_run(run_dir, args.device, vae_only=True)
    if args.epoch is not None:  # a plain N: that epoch's weights (checkpoint.N.pt)
        from .checkpoints import epoch_checkpoints

        saved = epoch_checkpoints(run_dir)
        epoch = args.epoch.select(saved, str(run_dir))[0]
        model = TrainedModel.load(saved[epoch], train_set, device=cfg.device)
    cache = TrainingCache(show_progress=not args.quiet)
    cache.add(model, train_set)
    options = {k: v for k, v in (("twin_encoder", args.twin_encoder),
                                 ("table_lr", args.table_lr)) if v is not None} or None
    results = check_vae(cfg, data, checks=checks, budget=meta.get("budget", "smoke"),
                        seeds=[cfg.seed],  # the run's own model, never a retrained seed 0
                        thresholds=thresholds, cache=cache, options=options,
                        name=f"{cfg.model}:{cfg.encoder}")
    return results, _dataset(data, None if meta["data"] == "mnist" else meta["data"]), {
        "budget": meta.get("budget"), "seeds": [cfg.seed], "run": str(run_dir),
        "epoch": len(model.history), "trained": cache.summary()}


def _check_epochs(args: argparse.Namespace, checks, thresholds, out: Path):
    """The profile over the epochs of ``--epoch`` (all, a list, a stride) of a ``--run`` or
    ``--cryodrgn`` run: ``(profile, dataset, runs)``, each epoch logged as it is measured."""
    import os

    from .outdir import reading

    log = logging.getLogger("ampcheck.epochs")
    processes = min(os.cpu_count() or 1, 4)  # epochs side by side, one thread each (CPU)

    def measured(epoch: int, metrics) -> None:
        if not args.quiet:
            g = metrics.get("gap_fraction[heldout]")
            log.info("ampcheck: epoch %d measured%s", epoch,
                     f" (held-out gap fraction {g.value:.3g})" if g is not None else "")

    if args.cryodrgn is not None:
        from .adapters.cryodrgn import describe_run
        from .adapters.cryodrgn_epochs import check_cryodrgn_epochs
        from .train import resolve_device

        if args.particles is None or args.poses is None:
            raise ConfigError("--cryodrgn needs --particles STACK and --poses POSES (and --ctf "
                              "CTF when the model was trained with one)")
        if args.retrain is not None:
            raise ConfigError("--retrain with --epoch "
                              f"{args.epoch.text}: the checks that retrain are not measured "
                              "over epochs; check one epoch (--epoch N) with --retrain")
        resolve_device(args.device)
        files = {k: None if getattr(args, k) is None else os.path.abspath(getattr(args, k))
                 for k in ("particles", *PARTICLE_KEYS, "heldout_ind")}
        profile, model, data = check_cryodrgn_epochs(
            args.cryodrgn, args.particles, args.poses, args.ctf, selection=args.epoch,
            truth=args.truth, heldout_ind=args.heldout_ind, ind=args.ind, datadir=args.datadir,
            checks=checks, thresholds=thresholds, device=args.device, on_epoch=measured,
            processes=processes)
        run = {**describe_run(model, data), "epoch_requested": args.epoch.text, "files": files}
        dataset = {"path": files["particles"], "n": len(data), "D": int(data.D),
                   "apix": data.apix, **{k: v for k, v in files.items() if k != "particles"}}
        return profile, dataset, {"cryodrgn": run, "seeds": 1}
    from .epoch_check import check_run_epochs

    run_dir = Path(os.path.realpath(args.run))
    with reading(run_dir, "--run") if run_dir != out else contextlib.nullcontext():
        profile, meta, data = check_run_epochs(run_dir, args.epoch, checks=checks,
                                               thresholds=thresholds, device=args.device,
                                               on_epoch=measured, processes=processes)
    return profile, _dataset(data, None if meta["data"] == "mnist" else meta["data"]), {
        "budget": meta.get("budget"), "seeds": [meta["config"].get("seed", 0)],
        "run": str(run_dir), "epoch": profile.epochs[-1][0]}


def _check_cryodrgn(args: argparse.Namespace, checks, thresholds):
    """The checks on a cryoDRGN run, and what the report says of it: ``dataset`` the particle
    files checked (absolute paths) with their size, ``runs["cryodrgn"]`` the run
    (:func:`~ampcheck.adapters.cryodrgn.describe_run`: directory, epoch of the weights used,
    architecture and preprocessing from its ``config.yaml``) with ``files``, the particle
    files checked, and ``epoch_requested``, the ``--epoch`` given (None: the last)."""
    import os

    from .adapters.cryodrgn import check_cryodrgn_run, describe_run, open_cryodrgn_run
    from .checks import TrainingCache
    from .train import resolve_device

    if args.particles is None or args.poses is None:
        raise ConfigError("--cryodrgn needs --particles STACK and --poses POSES (and --ctf "
                          "CTF when the model was trained with one)")
    resolve_device(args.device)  # refused before anything is loaded
    files = {k: None if getattr(args, k) is None else os.path.abspath(getattr(args, k))
             for k in ("particles", *PARTICLE_KEYS, "heldout_ind")}
    epoch = None if args.epoch is None else args.epoch.single
    model, data = open_cryodrgn_run(args.cryodrgn, args.particles, args.poses, args.ctf,
                                    truth=args.truth, ind=args.ind, datadir=args.datadir,
                                    epoch=epoch, device=args.device)
    run = {**describe_run(model, data), "epoch_requested": epoch, "files": files}
    dataset = {"path": files["particles"], "n": len(data), "D": int(data.D), "apix": data.apix,
               **{k: v for k, v in files.items() if k != "particles"}}
    cache = TrainingCache(show_progress=not args.quiet)  # the retrained variants, if any
    results = check_cryodrgn_run(model, data, particles=args.particles,
                                 heldout_ind=args.heldout_ind, ind=args.ind, checks=checks,
                                 thresholds=thresholds, retrain=args.retrain,
                                 table_lr=args.table_lr, cache=cache)
    runs = {"cryodrgn": run, "seeds": 1}
    if len(cache):
        runs["trained"] = cache.summary()
    return results, dataset, runs


# ---------------------------------------------------------------------------- report
def _cmd_report(args: argparse.Namespace) -> int:
    from .outdir import OutputDir
    from .render import render_html

    if not Path(args.dir).is_dir():
        raise InputError(f"{args.dir}: no such report directory")
    with OutputDir(args.dir, "ampcheck report", what="report directory") as held:
        print(f"Report: {render_html(held.path)}")
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
                         description="Generate the embedded synthetic data set (standard size "
                                     "by default; or take --data DIR, or --particles), train "
                                     "every variant the checks need, run every check and the "
                                     "MNIST control, print the amortization profile and write "
                                     "OUT/report.json.")
    run.add_argument("--out", default="ampcheck-out", help="output directory (default "
                                                          "./ampcheck-out)")
    run.add_argument("--force", action="store_true", help="replace existing outputs")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument("--budget", choices=list(BUDGETS),
                     help="training budget of every variant (default standard: informative in "
                          "minutes on a CPU; full: the paper's settings, for a GPU)")
    run.add_argument("--seeds", type=_positive_int,
                     help="training seeds per variant (default 1)")
    run.add_argument("--device", type=argtypes.device,
                     help="auto (default), cpu or cuda[:N]")
    run.add_argument("--data", metavar="DIR",
                     help="an existing data set directory to check on, instead of generating "
                          "the embedded one in OUT/data")
    run.add_argument("--data-only", action="store_true",
                     help="only generate (or reuse) the data set and summarise it; with "
                          "--particles or --data: only read and check the files (OUT is not "
                          "made)")
    _add_particle_options(run)
    _add_synth_options(run, "standard")
    run.set_defaults(func=_cmd_run)

    synth = sub.add_parser("synth", help="write a synthetic heterogeneous cryo-EM data set",
                           description="Write particles.mrcs, poses.pkl, ctf.pkl, truth.npz, "
                                       "volumes/ and manifest.json to --out: of ampcheck's own "
                                       "molecule, or of atomic models (--structures, "
                                       "--trajectory).")
    synth.add_argument("--out", required=True, help="output directory (must not exist or be "
                                                    "empty, unless --force)")
    synth.add_argument("--force", action="store_true", help="replace an existing directory")
    synth.add_argument("--quiet", action="store_true", help="no progress output")
    synth.add_argument("--star", action="store_true",
                       help="also write particles.star (RELION 3.1) describing the same particles")
    _add_synth_options(synth, "standard")
    from ._synth_atoms import add_options as add_atomic_options

    add_atomic_options(synth)
    synth.set_defaults(func=_cmd_synth)
    _add_train_parser(sub)
    _add_check_parser(sub)

    report = sub.add_parser("report", help="render a report directory's report.html again",
                            description="Render DIR/report.html from DIR/report.json and "
                                        "DIR/arrays (written by `ampcheck run` or `check`).")
    report.add_argument("dir", metavar="DIR", help="a report directory")
    report.set_defaults(func=_cmd_report)
    return parser


def _encoder_presets() -> list[str]:
    """Every encoder preset of the families ampcheck trains, in their order."""
    return list(dict.fromkeys(e for f in trainable_families() for e in f.encoders))


def _add_train_parser(sub) -> None:
    from .kinds import VARIANTS
    from .models.table import TABLE_INITS

    measured = next(f for f in trainable_families() if f.throughput)

    p = sub.add_parser("train", help="train one harness variant into a run directory",
                       description="Train a cryo-EM (or MNIST) VAE, lookup table or evil twin on "
                                   "the training split that the checks use; OUT gets "
                                   "checkpoint.pt (after every epoch, atomically) and run.json.")
    p.add_argument("--data", metavar="DIR|mnist",
                   help="a data set directory (e.g. from `ampcheck synth`), or 'mnist'; or give "
                        "--particles")
    p.add_argument("--out", required=True, metavar="RUN", help="the run directory")
    p.add_argument("--model", choices=[f.name for f in trainable_families()],
                   help="model family (default: from the data)")
    p.add_argument("--variant", choices=VARIANTS, default="vae", help="default vae")
    p.add_argument("--encoder", choices=_encoder_presets(),
                   help="cryo-EM encoder preset (default base)")
    p.add_argument("--budget", choices=list(BUDGETS), default=DEFAULT_BUDGET,
                   help=f"named training budget (default {DEFAULT_BUDGET}): "
                        f"{training_help(measured)}")
    p.add_argument("--epochs", type=_non_negative_int, help="override the budget's epochs")
    p.add_argument("--batch-size", type=_positive_int,
                   help="images per step over all processes (default 8 for cryo-EM, 128 for "
                        "MNIST; under torchrun a multiple of the number of processes)")
    p.add_argument("--table-init", choices=[t for t in TABLE_INITS if t != "from_encoder"],
                   help="the VLT's initial table (vlt only; default normal)")
    p.add_argument("--seed", type=argtypes.seed, default=0, help="training seed (default 0)")
    p.add_argument("--device", type=argtypes.device, default="auto",
                   help="auto (default), cpu or cuda[:N]")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                   help="also keep the weights of every N-th epoch and of the last, as "
                        "RUN/checkpoint.<epoch>.pt, for `ampcheck check --run RUN --epoch all` "
                        "(default: none kept). Each costs the model's weights without the "
                        "optimiser's state: 2.1 MB for the standard cryo-EM VAE (24 px), "
                        "a third of checkpoint.pt")
    p.add_argument("--resume", action="store_true", help="continue RUN's checkpoint")
    p.add_argument("--force", action="store_true", help="train again over an existing RUN")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    _add_particle_options(p)
    p.set_defaults(func=_cmd_train)


def _epochs(text: str):
    """``--epoch``'s value (:func:`ampcheck.epochs.parse_epochs`), as a usage error."""
    from .epochs import parse_epochs

    try:
        return parse_epochs(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(f"--epoch {text!r}: ")) from None


def _retrain_epochs(text: str) -> int | str:
    """``--retrain``'s value: ``run`` or a positive number of epochs."""
    return text if text == "run" else _positive_int(text)


def _add_check_parser(sub) -> None:
    p = sub.add_parser("check", help="run the checks on a trained model and write a report",
                       description="Run the amortization checks on a run of `ampcheck train` "
                                   "(--run) or on a model trained by cryoDRGN's train_vae "
                                   "(--cryodrgn, needs the optional cryodrgn package), print "
                                   "the profile and write OUT/report.json and report.html.")
    p.add_argument("--run", metavar="RUN", help="a run directory of `ampcheck train`")
    p.add_argument("--cryodrgn", metavar="DIR", help="a cryoDRGN train_vae output directory "
                                                     "(weights.pkl, config.yaml)")
    _add_particle_options(
        p, title="--cryodrgn: the particles the run was trained on, as cryoDRGN's train_vae "
                 "took them (the checks that need ground truth are SKIP without --truth)",
        ind_help="the --ind the run was trained with: its training images; every other image "
                 "of the stack is held out (unless --heldout-ind says which)")
    p.add_argument("--heldout-ind", metavar="IND",
                   help="--cryodrgn: .pkl of the indices of images the model did not train on "
                        "(default, with --ind: every image not in --ind)")
    p.add_argument("--truth", metavar="NPZ", help="--cryodrgn: ground truth (z_continuous "
                                                  "and/or z_class), for heldout_generalisation")
    p.add_argument("--epoch", type=_epochs, metavar="N|all|A,B|FIRST:LAST[:STEP]",
                   help="which saved epoch's weights (default: the last): N checks that "
                        "epoch; all, a list 2,4,8 or a stride 2:12:2 (2 to 12 every 2) "
                        "measure each of them with the held-out images (the amortization "
                        "profile over epochs, with a recommended epoch). --cryodrgn: its "
                        "weights.N.pkl (train_vae --checkpoint); --run: its checkpoint.N.pt "
                        "(ampcheck train --checkpoint-every)")
    p.add_argument("--retrain", nargs="?", const="run", type=_retrain_epochs, metavar="EPOCHS",
                   help="--cryodrgn: run evil_twin and vlt_equivalence, which train the run's "
                        "network three more times with its architecture and settings: for "
                        "the epochs its weights were trained for (--retrain), or for EPOCHS "
                        "(cheaper; its vae is then retrained too, as their reference). Naming "
                        "either check in --checks implies --retrain")
    p.add_argument("--table-lr", type=_positive_float, metavar="LR",
                   help="vlt_equivalence: the lookup table's learning rate (default: 0.1 for "
                        "--cryodrgn, the table's own rate and not the run's; for --run, the "
                        "run's own, 100 x its learning rate)")
    p.add_argument("--checks", metavar="A,B", help="which checks (default: every one that "
                                                   "applies)")
    p.add_argument("--threshold", type=argtypes.threshold, action="append", default=[],
                   metavar="NAME=VALUE", help="override a threshold (repeatable)")
    p.add_argument("--twin-encoder", choices=_encoder_presets(),
                   help="--run: the evil twins' encoder (the paper's finding is about large)")
    p.add_argument("--out", required=True, help="the report directory")
    p.add_argument("--device", type=argtypes.device, default="auto",
                   help="auto (default), cpu or cuda[:N]")
    p.add_argument("--force", action="store_true", help="replace an existing report")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_check)


def _set_malloc(setting: str) -> None:
    """``AMPCHECK_MALLOC``: keep freed memory in this process (see :mod:`ampcheck.allocator`)
    or leave glibc's ``malloc`` as it is."""
    if setting not in ("keep", "system"):
        raise ConfigError(f"AMPCHECK_MALLOC={setting!r}; expected keep (the default: freed "
                          "memory stays in the process for the next training step) or system")
    if setting == "keep":
        from .allocator import keep_freed_memory

        keep_freed_memory()


def _show(caught) -> None:
    """Each distinct warning of a command, one line each, as ``ampcheck: warning: ...``."""
    seen = set()
    for w in caught:
        line = f"ampcheck: warning: {one_line(w.message)}"
        if line not in seen:
            seen.add(line)
            print(line, file=sys.stderr)


@contextlib.contextmanager
def _log_to_stderr():
    """Show the library's log lines (training epochs, progress without a terminal) on stderr
    as plain lines, for this command only: the library logs and never configures logging,
    and a handler installed per call does not pile up when ``main`` runs in-process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("ampcheck")
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # once, even where the application logs to the root logger too
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


def main(argv: list[str] | None = None, *, owns_process: bool = False) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    ``owns_process``: this process runs nothing else (the ``ampcheck`` program), so the
    commands that train may tune process-wide settings (:mod:`ampcheck.allocator`).
    """
    import os

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run", *(argv or [])])
    try:
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and args.command != "train":
            raise ConfigError(f"only `ampcheck train` runs under torchrun; run `ampcheck "
                              f"{args.command}` as a single process")
        if owns_process and args.command in ("run", "train", "check"):
            _set_malloc(os.environ.get("AMPCHECK_MALLOC", "keep"))
        with warnings.catch_warnings(record=True) as caught, _log_to_stderr():
            warnings.simplefilter("default")
            status = args.func(args)
        _show(caught)  # after success only: an error is one line, nothing beside it
        return status
    except AmpcheckError as err:
        print(f"ampcheck: error: {one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder that cannot be created, a full disk, no permission
        text = f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err)
        print(f"ampcheck: error: {one_line(text)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ampcheck: interrupted", file=sys.stderr)
        return 130


def program() -> int:
    """The ``ampcheck`` program: :func:`main` in a process of its own."""
    return main(owns_process=True)


if __name__ == "__main__":
    raise SystemExit(program())
