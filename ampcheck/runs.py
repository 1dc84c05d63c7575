"""A run of ``ampcheck train``: one trained variant in a directory of its own.

The directory holds ``checkpoint.pt`` (:mod:`ampcheck.checkpoints`, written atomically after
every epoch) and ``run.json`` (:data:`RUN_JSON`)::

    {"data": DATA, "budget": "standard", "config": {TrainConfig as a dict},
     "run_id": "<hex>", "status": "training" | "complete", "history": [EpochRecord, ...]}

``DATA`` is ``"mnist"``, the absolute path of a data set folder, or the particle files of a
stack as cryoDRGN's ``train_vae`` takes them (``{"particles": path, "poses", "ctf", "ind",
"datadir": path or null}``, absolute paths). ``run.json`` says ``training`` from the first
epoch on and ``complete`` at the end, with the id every checkpoint of that training records:
a run killed at any instant is either complete and consistent, or seen to be unfinished
(:func:`open_run` refuses it). The command line is a thin layer over :func:`train_run` and
:func:`open_run`; importing this module loads no torch.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from .checkpoints import CHECKPOINT
from .errors import ConfigError, InputError
from .files import read_json, write_json_atomic
from .kinds import data_kind

__all__ = ["PARTICLE_KEYS", "RUN_JSON", "open_data", "open_particles", "open_run", "read_run",
           "run_meta", "train_run"]

RUN_JSON = "run.json"
#: The files beside ``particles`` in a particle spec (the ``dest`` of the command line's
#: ``--poses``, ``--ctf``, ``--ind`` and ``--datadir``).
PARTICLE_KEYS = ("poses", "ctf", "ind", "datadir")


def open_particles(spec: dict, source: str = "--particles"):
    """The :class:`~ampcheck.data.particles.ParticleDataset` of a particle spec, with poses
    (the decoder renders each image at its pose, so training needs them); ``source`` names
    where the spec came from, for messages."""
    from .data.particles import ParticleDataset

    data = ParticleDataset.from_files(spec["particles"], poses=spec.get("poses"),
                                      ctf=spec.get("ctf"), ind=spec.get("ind"),
                                      datadir=spec.get("datadir"))
    if data.rot is None:
        raise InputError(f"{spec['particles']}: no poses (a {Path(spec['particles']).suffix} "
                         f"holds none); give --poses PKL, the pose of every image: training "
                         f"renders each image at its pose" + (
                             "" if source == "--particles" else f" (from {source})"))
    return data


def open_data(spec: str | dict, model: str | None, source: str = "--data"):
    """``(data, family)``: the data set ``spec`` names (``mnist``: the offline digits or
    $AMPCHECK_MNIST; a data set folder; a particle spec) and the name of the model family
    that trains on it (``model``, which must train on images of its kind, else the first
    family registered for them). ``source`` names where ``spec`` and ``model`` came from, for
    messages."""
    from .families import default_family, get_family

    if isinstance(spec, dict):
        data, shown, option = open_particles(spec, source), spec["particles"], "--particles"
    elif spec == "mnist":
        from .data.mnist import MnistDataset

        data, shown, option = MnistDataset.load(), spec, "--data"
    else:
        from .data.particles import ParticleDataset

        data, shown, option = ParticleDataset.from_dir(spec), spec, "--data"
    kind = data_kind(data)
    if model is not None and get_family(model).data_kind != kind:
        what = (f"--model {model} does not match {option} {shown}"
                if source in ("--data", "--particles")
                else f"{source} describes a {model} model trained on {shown}")
        raise ConfigError(f"{what} (a {kind} data set)")
    return data, model if model is not None else default_family(kind).name


def read_run(path: Path) -> dict:
    """A ``run.json``, checked for the keys this module reads."""
    meta = read_json(path, "no such file; --run expects a directory written by `ampcheck "
                           "train`", "a run description of `ampcheck train`")
    data = meta.get("data") if isinstance(meta, dict) else None
    particles = isinstance(data, dict) and isinstance(data.get("particles"), str) and all(
        isinstance(data.get(k), str | None) for k in PARTICLE_KEYS)
    if not (isinstance(meta, dict) and isinstance(meta.get("config"), dict)
            and (isinstance(data, str) or particles)):
        raise InputError(f"{path} is not a run description of `ampcheck train` (expected "
                         "'data' and 'config')")
    return meta


def run_meta(data: str | dict, budget: str, cfg, run_id: str, status: str,
             history=()) -> dict:
    """The ``run.json`` of a training of ``cfg`` on ``data`` (``mnist``, a data set folder,
    made absolute here, or a particle spec of absolute paths) at ``budget``."""
    if isinstance(data, str) and data != "mnist":
        data = str(Path(data).resolve())
    return {"data": data, "budget": budget, "config": asdict(cfg), "run_id": run_id,
            "status": status, "history": [asdict(r) for r in history]}


def train_run(out: Path, data: str | dict, *, budget: str, model: str | None = None,
              resume: bool = False, force: bool = False, run_id: str,
              show_progress: bool = True, checkpoint_every: int | None = None,
              **settings: Any):
    """Train ``budget_config(budget, model=<family>, **settings)`` on the training split of
    ``data`` (``mnist``, a data set folder or a particle spec) into the run directory ``out``;
    the trained run, or None in a torchrun process other than rank 0 (which alone writes).

    Refused before anything trains: a directory that holds a run already, unless ``resume``
    (continue its checkpoint, keeping its id) or ``force`` (train again over it). ``run_id``:
    the id of a new training. ``checkpoint_every``: keep the weights of every N-th epoch
    (and the last) as ``checkpoint.<epoch>.pt`` (:func:`ampcheck.train.train`), for
    ``ampcheck check --run RUN --epoch all``.
    """
    import os

    from . import distributed
    from .train import budget_config, train, training_split

    main_rank = os.environ.get("RANK", "0") == "0"
    ckpt, meta_path = out / CHECKPOINT, out / RUN_JSON
    if main_rank and not (resume or force):  # torchrun stops the others if it refuses
        for name in (CHECKPOINT, RUN_JSON):
            if (out / name).exists():
                hint = "" if not ckpt.exists() else (" (after the first epoch), --resume to "
                                                     "continue it")
                raise ConfigError(f"{out / name} exists; use --force to replace it{hint} or "
                                  "--out for another directory")
    if resume and meta_path.exists():
        run_id = read_run(meta_path).get("run_id") or run_id
    elif resume and ckpt.exists():
        run_id = None  # an older run: the checkpoint's own id, or a new one
    source = "--particles" if isinstance(data, dict) else "--data"
    dataset, family = open_data(data, model, source)
    cfg = budget_config(budget, model=family, **settings)
    train_set, _ = training_split(cfg, dataset)

    def started(run) -> None:  # checked and restored, about to train: unfinished from now
        if distributed.is_main():
            write_json_atomic(meta_path, run_meta(data, budget, cfg, run.run_id, "training",
                                                  run.history))

    try:
        run = train(cfg, train_set, out=out, resume=resume, show_progress=show_progress,
                    run_id=run_id, on_start=started, checkpoint_every=checkpoint_every)
    finally:
        distributed.teardown()  # leave torchrun's process group, if train() joined one
    if not distributed.is_main():
        return None
    write_json_atomic(meta_path, run_meta(data, budget, cfg, run.run_id, "complete",
                                          run.history))
    return run


def open_run(run_dir: Path, device: str = "auto", *, vae_only: bool = False):
    """``(meta, cfg, data, train_set, model)`` of a run of ``ampcheck train``: its
    ``run.json``, config, whole data set, training split and trained model (on ``device``;
    ``auto``: the run's own).

    A run that is unfinished, whose ``run.json`` and ``checkpoint.pt`` describe different
    trainings, or whose data set changed since it was trained, is refused with one line; so is
    any run but a VAE's with ``vae_only`` (before anything is loaded).
    """
    from .train import TrainConfig, TrainedModel, training_split

    run_dir = Path(run_dir)
    meta_path = run_dir / RUN_JSON
    meta = read_run(meta_path)
    try:
        cfg = TrainConfig.from_dict(meta["config"], str(meta_path))
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{meta_path} is not a run description of `ampcheck train` "
                         f"({err})") from None
    if meta.get("status", "complete") != "complete":
        done = len(meta.get("history") or ())
        raise InputError(f"{run_dir} is an unfinished training ({meta_path.name} says "
                         f"{meta.get('status')!r}; {done} of {cfg.epochs} epochs recorded): "
                         "finish it with `ampcheck train --resume` first")
    if vae_only and cfg.variant != "vae":
        raise ConfigError(f"{run_dir} is a {cfg.variant} run; the checks probe a VAE (`ampcheck "
                          "train --variant vae`) and train the variants they need themselves")
    device = cfg.device if device == "auto" else device
    data, _ = open_data(meta["data"], cfg.model, source=str(meta_path))
    train_set, _ = training_split(cfg, data)
    model = TrainedModel.load(run_dir / CHECKPOINT, train_set, device=device)
    if (None not in (meta.get("run_id"), model.run_id) and model.run_id != meta["run_id"]) \
            or replace(model.config, device=cfg.device) != cfg:  # an older run has no ids
        raise InputError(f"{run_dir}: {CHECKPOINT} and {RUN_JSON} describe different trainings "
                         "(an interrupted `ampcheck train --force`?); train it again with "
                         "--force, or continue it with --resume")
    return meta, replace(cfg, device=device), data, train_set, model
