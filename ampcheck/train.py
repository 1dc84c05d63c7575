"""The one training loop (SPEC §3): every variant differs only in where the latent comes from.

* ``vae``: ``q(z|x)`` from the encoder applied to the image itself;
* ``twin-perm`` / ``twin-noise``: the encoder applied to the image's fixed evil twin (another
  image by a derangement, or matched noise) while the loss is still against the image;
* ``vlt``: a Variational Lookup Table, ``index -> (mu, logvar)``, in place of the encoder.

The model family (:mod:`ampcheck.families`) builds the network, which supplies ``prepare``,
``encode``, ``recon_loss`` and ``kl_weight``; the loss is ``mean_i(recon_i) + beta *
kl_weight * mean_i(KL_i)``, Adam for the networks and sparse Adam for a table. The loop reads
top to bottom; randomness comes from one seeded generator, so the same seed on a CPU gives the
same history, and a run resumed from a checkpoint continues exactly as if it had not stopped.
(On CUDA, kernels are not forced to be deterministic: runs agree to rounding.) Under
``torchrun`` the processes train together with DistributedDataParallel and do the optimisation
of one process on the same global batch (see :mod:`ampcheck.distributed`).
"""

from __future__ import annotations

import logging
import math
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._progress import progress
from .budgets import get_budget
from .checkpoints import (
    CHECKPOINT,
    FORMAT,
    check_moments,
    epoch_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from .contracts import ModelCapabilities, model_capabilities
from .data.fingerprint import fingerprint
from .data.twins import NoiseTwins, PermutationTwins
from .distributed import World, setup
from .errors import ConfigError, InputError, TrainingDiverged, first_line
from .families import (
    Family,
    architecture_family,
    get_family,
    registered_families,
    trainable_families,
)
from .kinds import VARIANTS
from .models.table import TABLE_INITS, LatentTable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run. ``None`` means the model family's default
    (:mod:`ampcheck.families`: learning rate, batch size, KL weight, encoder preset).

    ``model`` names the family. ``table_lr`` defaults to 100 x ``lr``: a table row receives
    one update per epoch, so with Adam it moves about ``table_lr`` per epoch; at the networks'
    1e-4 it would hardly leave its initial value within a budget (the paper trains its VLT
    with its own optimiser settings). The ``invariant`` encoder trains on unwindowed images: a
    real-space window is not shift invariant.

    ``architecture``: the network of a family that is described by text of its own (a guest
    family's, which its adapter writes and its ``build`` reads; the ``encoder`` preset then
    does not apply); None for a family built from its presets. ``weight_decay`` is Adam's.
    """

    model: str = "cryoem"
    variant: str = "vae"
    encoder: str | None = None
    zdim: int | None = None
    epochs: int = 1
    batch_size: int | None = None
    lr: float | None = None
    beta: float | None = None
    table_init: str = "normal"
    table_lr: float | None = None
    freeze_table: bool = False
    max_images: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    explode_factor: float = 1e4
    architecture: str | None = None
    weight_decay: float = 0.0

    def __post_init__(self):
        def bad(msg):
            raise ConfigError(f"training config: {msg}")

        try:
            family = get_family(self.model)
        except ConfigError:
            bad(f"model must be one of {', '.join(f.name for f in registered_families())}, "
                f"got {self.model!r}")
        if self.encoder is None:
            object.__setattr__(self, "encoder", family.default_encoder)
        if self.variant not in VARIANTS:
            bad(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.encoder not in family.encoders and len(family.encoders) > 1:
            bad(f"encoder must be one of {', '.join(family.encoders)}, got {self.encoder!r}")
        if self.encoder not in family.encoders:
            presets = [f.title for f in registered_families() if len(f.encoders) > 1]
            bad(f"{family.title} has one encoder; encoder presets are for "
                f"{' and '.join(presets) or 'no family'}")
        if family.architecture and self.architecture is None:
            bad(f"{family.title} is described by an architecture; give architecture")
        if self.architecture is not None and not family.architecture:
            bad(f"architecture describes the network of a family that has one; {family.title} "
                "is built from its encoder preset and zdim and takes none")
        if not 0 <= self.seed < 2**63:
            bad(f"seed must be an integer from 0 to 2**63 - 1, got {self.seed}")
        if self.table_init not in TABLE_INITS:
            bad(f"table_init must be one of {', '.join(TABLE_INITS)}, got {self.table_init!r}")
        if self.variant != "vlt" and (self.freeze_table or self.table_lr is not None
                                      or self.table_init != "normal"):
            bad("table_init, table_lr and freeze_table apply to the vlt variant only")
        for name in ("zdim", "batch_size", "max_images"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value < 1):
                bad(f"{name} must be a positive integer, got {value}")
        if int(self.epochs) != self.epochs or self.epochs < 0:
            bad(f"epochs must be a non-negative integer, got {self.epochs}")
        for name in ("lr", "table_lr", "beta", "weight_decay"):
            value = getattr(self, name)
            if value is not None and not (value >= 0 and math.isfinite(value)):
                bad(f"{name} must be a finite non-negative number, got {value}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            bad(f"device must be auto, cpu or cuda[:N], got {self.device!r}")

    @classmethod
    def from_dict(cls, values: dict, source: str = "a checkpoint") -> TrainConfig:
        """The config that :func:`dataclasses.asdict` wrote to ``source``; any unknown key,
        value of the wrong type or out of range is an :class:`InputError` naming ``source``.

        A config written before model families were registered gave a guest's network as the
        ``architecture`` of the family of its kind of images: it is read as the registered
        family of that kind that an architecture describes (:func:`architecture_family`)."""
        if not isinstance(values, dict):
            raise InputError(f"{source}: the training settings are not a mapping")
        if values.get("architecture") is not None and isinstance(values.get("model"), str):
            values = {**values, "model": architecture_family(values["model"])}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(map(str, values)) - known)
        if unknown:
            raise InputError(f"{source}: unknown training settings {', '.join(unknown)}")
        for name, value in values.items():
            kinds = _SETTING_TYPES[name]
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise InputError(f"{source}: training setting {name} = {value!r:.40}; expected "
                                 f"{' or '.join(k.__name__ for k in kinds)}")
        try:
            return cls(**values)
        except ConfigError as err:
            raise InputError(f"{source}: {err}") from None

    @property
    def family(self) -> Family:
        """The model family this config trains (:mod:`ampcheck.families`)."""
        return get_family(self.model)

    def describe(self) -> str:
        """``family variant (encoder)`` for log lines: ``cryoem vlt (base)``, ``mnist vae
        (base)``; ``family variant`` where an architecture describes the network."""
        if self.architecture is not None:
            return f"{self.model} {self.variant}"
        return f"{self.model} {self.variant} ({self.encoder})"

    @property
    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else self.family.lr

    @property
    def resolved_table_lr(self) -> float:
        """The lookup table's learning rate: ``table_lr``, else 100 x the networks' rate."""
        return self.table_lr if self.table_lr is not None else 100 * self.resolved_lr

    @property
    def resolved_batch_size(self) -> int:
        return self.batch_size if self.batch_size is not None else self.family.batch_size


# The types TrainConfig.from_dict accepts for each setting (JSON gives ints for whole floats).
_SETTING_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "variant": (str,), "encoder": (str,), "table_init": (str,),
    "device": (str,), "zdim": (int, type(None)), "batch_size": (int, type(None)),
    "max_images": (int, type(None)), "epochs": (int,), "seed": (int,),
    "lr": (float, int, type(None)), "beta": (float, int, type(None)),
    "table_lr": (float, int, type(None)), "freeze_table": (bool,), "amp": (bool,),
    "explode_factor": (float, int), "architecture": (str, type(None)),
    "weight_decay": (float, int),
}


def budget_config(budget: str, **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` at the named budget (:mod:`ampcheck.budgets`: the family's
    epochs, image cap and learning rate there), with any other field overridden."""
    model = overrides.get("model", "cryoem")
    named = get_budget(budget)
    families = {f.name: f for f in trainable_families()}
    if model not in families:
        raise ConfigError(f"unknown model {model!r}; expected one of {', '.join(families)}")
    b = named.training(families[model])
    return TrainConfig(**{"epochs": b.epochs, "max_images": b.max_images, "lr": b.lr,
                          **overrides})


CURVE_POINTS = 25  # loss-curve points kept per epoch (means over consecutive batches)


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean loss and its parts, wall time, images seen, and ``curve``, the mean
    loss over up to ``CURVE_POINTS`` consecutive runs of batches (for loss-curve plots)."""

    epoch: int
    loss: float
    recon: float
    kl: float
    seconds: float
    images: int
    curve: tuple[float, ...] = ()

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def _curve(losses: list[float], sizes: list[int], points: int = CURVE_POINTS
           ) -> tuple[float, ...]:
    """Image-weighted mean losses over ``points`` near-equal runs of consecutive batches."""
    chunks = np.array_split(np.arange(len(losses)), min(points, len(losses)))
    w, v = np.asarray(sizes, float), np.asarray(losses, float)
    return tuple(float(np.average(v[c], weights=w[c])) for c in chunks if len(c))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; expected auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def build_model(cfg: TrainConfig, data, device: torch.device | None = None) -> torch.nn.Module:
    """The network of the config's model family, sized for ``data`` (built on ``device`` by a
    family that needs it there, else on the CPU)."""
    return cfg.family.network(cfg, data, device or torch.device("cpu"))


def model_view(cfg: TrainConfig, data):
    """The data as this config's model sees it: unwindowed for the invariant encoder."""
    if cfg.encoder == "invariant" and getattr(data, "windowed", False):
        return data.without_window()
    return data


def training_split(cfg: TrainConfig, data, heldout_fraction: float = 0.2, split_seed: int = 0):
    """``(train_set, heldout)``: the views of ``data`` that ampcheck trains ``cfg`` on and
    holds out. ``ampcheck train`` and the checks share it, so that a run trained by one is the
    run the other would train."""
    train_set, heldout = data.split(heldout_fraction, seed=split_seed)
    if cfg.max_images is not None and cfg.max_images < len(train_set):
        # what the budget trains on: a seeded random subset (real stacks are often ordered
        # by micrograph, so the first images would not be like the held-out ones)
        keep = np.random.default_rng(split_seed).choice(len(train_set), cfg.max_images,
                                                        replace=False)
        train_set = train_set.subset(np.sort(keep))
    return train_set, heldout


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` per row ``(B,)``."""
    return -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(-1)


@dataclass
class TrainedModel:
    """A trained network and its latent source, history and config.

    ``data`` is the (possibly capped) training set it was trained on. Methods that take
    ``data`` accept any data set of the same kind (``None``: the training set) and work in
    batches of ``batch_size`` images.
    """

    config: TrainConfig
    model: torch.nn.Module
    data: Any
    table: LatentTable | None = None
    twins: PermutationTwins | NoiseTwins | None = None
    history: list[EpochRecord] = field(default_factory=list)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    run_id: str | None = None  # one training from its first epoch, kept by --resume
    fingerprint: str | None = None  # of ``data``, once computed (data_fingerprint)

    @property
    def beta(self) -> float:
        if self.config.beta is not None:
            return self.config.beta
        return self.config.family.default_beta(self.model.zdim)

    def _latent(self, idx: torch.Tensor, batch: dict, prep: dict):
        """``(mu, logvar)`` of training images ``idx`` from the run's latent source."""
        variant = self.config.variant
        if variant == "vlt":
            return self.table(idx.to(self.device))
        if variant == "twin-perm":
            twin = _to(self.data.get_batch(self.twins.twin_index(idx.numpy())), self.device)
            return self.model.encode(self.model.prepare(twin)["x_enc"])
        if variant == "twin-noise":
            noise = self.data.preprocess(torch.from_numpy(self.twins.twins(idx.numpy())))
            return self.model.encode(self.model.prepare({**batch, "y": noise.to(self.device)})
                                     ["x_enc"])
        return self.model.encode(prep["x_enc"])

    def _map(self, data, indices, fn: Callable, batch_size: int) -> list[np.ndarray]:
        """Apply ``fn(local_indices, batch)`` over batches; concatenate each returned array."""
        data = self.data if data is None else model_view(self.config, data)
        idx = np.arange(len(data)) if indices is None else np.asarray(indices)
        parts: list[tuple] = []
        with torch.no_grad():
            for s in range(0, len(idx), batch_size):
                i = idx[s:s + batch_size]
                out = fn(i, data, _to(data.get_batch(i), self.device))
                parts.append(tuple(o.float().cpu().numpy() for o in out))
        return [np.concatenate(col) for col in zip(*parts, strict=True)]

    def latents(self, indices=None, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, logvar)`` ``(n, zdim)`` of training images from the run's latent source (the
        table rows of a VLT, the twins' encodings of an evil-twin run)."""
        def fn(i, data, batch):
            return self._latent(torch.from_numpy(i), batch, self.model.prepare(batch))

        mu, logvar = self._map(None, indices, fn, batch_size)
        return mu, logvar

    def encode(self, data=None, indices=None, transform: Callable | None = None,
               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """The encoder's ``(mu, logvar)`` on images of ``data``, optionally after
        ``transform`` of the raw real-space images (e.g. a 1-pixel roll); each image keeps its
        own pose and CTF."""
        if self.config.variant == "vlt":
            raise ConfigError("a VLT run has no trained encoder; use latents() for its table")

        def fn(i, data, batch):
            if transform is not None:
                images = torch.as_tensor(np.ascontiguousarray(transform(data.images(i))))
                batch["y"] = data.preprocess(images).to(self.device)
            return self.model.encode(self.model.prepare(batch)["x_enc"])

        mu, logvar = self._map(data, indices, fn, batch_size)
        return mu, logvar

    def recon_loss(self, data, indices, z: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Per-image reconstruction loss ``(B,)`` of images ``indices`` at latents ``z``."""
        z = np.asarray(z, dtype=np.float32)
        pos = {int(k): n for n, k in enumerate(np.asarray(indices))}

        def fn(i, data, batch):
            zi = torch.from_numpy(z[[pos[int(k)] for k in i]]).to(self.device)
            return (self.model.recon_loss(self.model.prepare(batch), zi),)

        return self._map(data, indices, fn, batch_size)[0]

    def recon_closure(self, data, indices) -> Callable[[torch.Tensor], torch.Tensor]:
        """A differentiable ``z (B, zdim) -> (B,)`` reconstruction loss of images ``indices``
        (prepared once), to optimise latents against the fixed decoder."""
        data = self.data if data is None else model_view(self.config, data)
        prep = self.model.prepare(_to(data.get_batch(np.asarray(indices)), self.device))
        return lambda z: self.model.recon_loss(prep, z.to(self.device))

    @property
    def kl_scale(self) -> float:
        """The weight of ``KL(q || p)`` against :meth:`recon_loss` in the training objective."""
        return self.beta * self.model.kl_weight

    def elbo(self, data, indices, mu: np.ndarray, logvar: np.ndarray, samples: int = 1,
             seed: int = 0, batch_size: int = 256) -> np.ndarray:
        """Per-image ELBO ``(B,)`` of images ``indices`` under ``q = N(mu, exp(logvar))``.

        The negative of the training objective, per image: ``-(E_q[recon] + beta * kl_weight *
        KL(q || N(0, I)))``, the expectation by ``samples`` reparameterised draws (seeded). For
        the MNIST VAE it is the ELBO in nats; for the cryo-EM loss (mean squared error per
        pixel, KL over the number of pixels) it is a Gaussian-likelihood ELBO up to scale and
        a constant. Higher is better.
        """
        mu, logvar = np.asarray(mu, np.float32), np.asarray(logvar, np.float32)
        pos = {int(k): n for n, k in enumerate(np.asarray(indices))}
        gen = torch.Generator().manual_seed(seed)

        def fn(i, data, batch):
            rows = [pos[int(k)] for k in i]
            m = torch.from_numpy(mu[rows]).to(self.device)
            lv = torch.from_numpy(logvar[rows]).to(self.device)
            prep = self.model.prepare(batch)
            recon = sum(self.model.recon_loss(prep, m + torch.randn(m.shape, generator=gen)
                                              .to(self.device) * torch.exp(0.5 * lv))
                        for _ in range(samples)) / samples
            return (-(recon + self.beta * self.model.kl_weight * kl_divergence(m, lv)),)

        return self._map(data, indices, fn, batch_size)[0]

    @property
    def capabilities(self) -> ModelCapabilities:
        """What the network can do beyond encoding (:mod:`ampcheck.contracts`): the cryo-EM
        VAE decodes volumes, the MNIST VAE does not."""
        return model_capabilities(self.model)

    def decode_volume(self, z) -> np.ndarray:
        """The volume ``(D, D, D)`` at latent ``z`` (cryo-EM models)."""
        if not self.capabilities.decode_volume:
            raise ConfigError(f"a {self.config.model} model has no volumes")
        return self.model.decode_volume(z, norm=self.data.norm)

    # ----------------------------------------------------------------- persistence
    def data_fingerprint(self) -> str:
        """The fingerprint of ``data`` (:mod:`ampcheck.data.fingerprint`), computed once."""
        if self.fingerprint is None:
            self.fingerprint = fingerprint(self.data)
        return self.fingerprint

    def state(self, optimizers: dict | None = None, generator: torch.Generator | None = None
              ) -> dict:
        """The checkpoint of this run (:mod:`ampcheck.checkpoints`)."""
        return {
            "format": FORMAT,
            "config": asdict(self.config),
            "data": {"n": len(self.data), "D": int(self.data.D),
                     "fingerprint": self.data_fingerprint()},
            "run_id": self.run_id,
            "model": self.model.state_dict(),
            "table": None if self.table is None else self.table.state_dict(),
            "twins": None if self.twins is None else self.twins.state_dict(),
            "history": [asdict(r) for r in self.history],
            "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
            "generator": None if generator is None else generator.get_state(),
        }

    def save(self, path, optimizers: dict | None = None,
             generator: torch.Generator | None = None) -> None:
        """Write a checkpoint atomically (readable with ``weights_only=True``); a failed write
        (a full disk) raises :class:`~ampcheck.errors.OutputError` and leaves the old one."""
        write_checkpoint(path, self.state(optimizers, generator))

    @classmethod
    def load(cls, path, data, device: str | None = None) -> TrainedModel:
        """A model saved by :meth:`save` with the training set it was trained on (``device``
        overrides the one it was trained on, e.g. ``"cpu"`` for a GPU run)."""
        state = read_checkpoint(path)
        cfg = TrainConfig.from_dict(state["config"], str(path))
        if device is not None:
            cfg = replace(cfg, device=device)
        run = _assemble(cfg, data, state, str(path))
        run.model.eval()  # as train() leaves it (a decoder may decode volumes in eval mode only)
        return run


def _capped(cfg: TrainConfig, data):
    if cfg.max_images is not None and cfg.max_images < len(data):
        return data.subset(np.arange(cfg.max_images))
    return data


class _RawImages:
    """A data set's raw images behind ``len`` and integer indexing (for NoiseTwins.matched)."""

    def __init__(self, data):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, idx) -> np.ndarray:
        return self.data.images(np.atleast_1d(idx))


def _assemble(cfg: TrainConfig, data, state: dict | None = None, source: str = "checkpoint",
              device: torch.device | None = None) -> TrainedModel:
    """Model, latent source and twins for ``cfg`` on ``data``; restored from ``state``; on
    ``device`` (default: the config's)."""
    device = resolve_device(cfg.device) if device is None else device
    data = model_view(cfg, _capped(cfg, data))
    n, prints = len(data), None  # the fingerprint: computed when a checkpoint needs it
    if state is not None:
        saved = state["data"]
        if (saved["n"], saved["D"]) != (n, int(data.D)):
            raise InputError(f"{source} was trained on {saved['n']} images of {saved['D']} px, "
                             f"not on this data set ({n} of {data.D} px)")
        if saved.get("fingerprint") is not None:  # older checkpoints hold none
            prints = fingerprint(data)
        if saved.get("fingerprint") not in (None, prints):
            raise InputError(f"{source} was trained on another data set of {n} images of "
                             f"{data.D} px (the images, poses or CTF differ)")
    model = build_model(cfg, data, device)
    table = twins = None
    if cfg.variant == "vlt":
        init = "zero" if cfg.table_init == "from_encoder" else cfg.table_init
        table = LatentTable(n, model.zdim, init,
                            generator=torch.Generator().manual_seed(cfg.seed + 1))
    elif cfg.variant in ("twin-perm", "twin-noise") and state is not None:
        try:
            twins = (PermutationTwins if cfg.variant == "twin-perm"
                     else NoiseTwins).from_state_dict(state["twins"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"{source}: its evil twins are missing or damaged ({err})") from None
    elif cfg.variant == "twin-perm":
        twins = PermutationTwins(n, cfg.seed)
    elif cfg.variant == "twin-noise":
        twins = NoiseTwins.matched(_RawImages(data), seed=cfg.seed, sample=min(n, 1000))
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            if table is not None:
                table.load_state_dict(state["table"])
        except (RuntimeError, KeyError, TypeError, AttributeError) as err:
            # "Error(s) in loading state_dict for CryoVAE:" then one line per problem
            lines = [x.strip() for x in str(err).splitlines() if x.strip()] or [repr(err)]
            why = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
            raise InputError(f"{source}: its weights do not fit a {cfg.describe()} model "
                             f"({why[:200]})") from None
        bad = [k for k, v in state["model"].items()
               if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise InputError(f"{source}: the weights hold NaN or infinite values ({bad[0]}; a "
                             "diverged or damaged training)")
    model.to(device)
    if table is not None:
        table.to(device)
    trained = TrainedModel(cfg, model, data, table, twins, device=device, fingerprint=prints)
    if state is not None:
        try:
            trained.history = [EpochRecord(**{**r, "curve": tuple(r.get("curve", ()))})
                               for r in state["history"]]
        except TypeError as err:
            raise InputError(f"{source}: a damaged training history ({err})") from None
        trained.run_id = state.get("run_id")
    return trained


def train(cfg: TrainConfig, data, *, out: str | Path | None = None, resume: bool = False,
          encoder_from: TrainedModel | None = None, show_progress: bool = True,
          run_id: str | None = None,
          on_start: Callable[[TrainedModel], None] | None = None,
          checkpoint_every: int | None = None) -> TrainedModel:
    """Train ``cfg`` on ``data`` (a ParticleDataset or an MnistDataset).

    Args:
        out: a directory for ``checkpoint.pt``, written atomically after every epoch.
        resume: continue from ``out/checkpoint.pt`` if it exists (same config and data).
        encoder_from: for ``table_init="from_encoder"``, the trained model whose encoder
            fills the table (its latents on the same images).
        run_id: the training's identity, recorded in every checkpoint (default: a new one, or
            the resumed checkpoint's); a resumed checkpoint of another id is refused.
        on_start: called with the run once everything is checked and restored, before the
            first epoch (``ampcheck train`` marks its run unfinished there).
        checkpoint_every: with ``out``, also keep the weights of every epoch that this number
            divides, and of the last, as ``checkpoint.<epoch>.pt``
            (:func:`~ampcheck.checkpoints.epoch_checkpoint`: the model alone, no optimiser
            state), for the profile over epochs; None: none kept.
        show_progress: a progress bar over each epoch's batches where stderr is a terminal,
            and one INFO record per epoch (loss, seconds, images/s) on the
            ``ampcheck.train`` logger; the application decides where records go.

    Under ``torchrun`` every process calls this alike; they train on shares of each global
    batch of ``cfg.resolved_batch_size`` images (which must divide by the number of
    processes), and rank 0 alone writes ``out`` and logs.
    """
    if resume and out is None:
        raise ConfigError("resume=True needs out=<the run's directory>")
    if checkpoint_every is not None and (out is None or isinstance(checkpoint_every, bool)
                                         or not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise ConfigError(f"checkpoint_every must be a positive number of epochs, with out=, "
                          f"got {checkpoint_every!r}")
    world = World.current()  # one process unless launched by torchrun
    world.check_batch(cfg.resolved_batch_size)
    if cfg.family.needs_poses and getattr(data, "rot", None) is None:
        raise ConfigError(f"{data!r} has no poses: a cryo-EM model is trained on images with "
                          "their poses (give poses= or a poses.pkl)")
    ckpt = Path(out) / CHECKPOINT if out is not None else None
    state = None
    if resume and ckpt.exists():
        state = read_checkpoint(ckpt)
        if not state.get("optimizers") or state.get("generator") is None:
            raise InputError(f"{ckpt}: a saved model, not a resumable training checkpoint")
        if replace(TrainConfig.from_dict(state["config"], str(ckpt)), epochs=cfg.epochs) != cfg:
            raise ConfigError(f"{ckpt}: the checkpoint was made with another configuration")
        if len(state["history"]) > cfg.epochs:
            raise ConfigError(f"{ckpt} has {len(state['history'])} epochs already; asked for "
                              f"{cfg.epochs} (give --epochs {len(state['history'])} or more)")
        if run_id is not None and state.get("run_id") not in (None, run_id):
            raise ConfigError(f"{ckpt} belongs to another training than the one to resume (an "
                              "interrupted `ampcheck train --force` before its first epoch?); "
                              "use --force to train again")
    run = _assemble(cfg, data, state, str(ckpt), setup(world, resolve_device(cfg.device)))
    run.run_id = run_id or run.run_id or secrets.token_hex(8)
    model, table, device = run.model, run.table, run.device
    n, bs, beta = len(run.data), cfg.resolved_batch_size, run.beta

    if cfg.variant == "vlt" and cfg.table_init == "from_encoder" and state is None:
        if encoder_from is None:
            raise ConfigError("table_init='from_encoder' needs encoder_from=<a trained model>")
        table.fill(*(torch.from_numpy(a).to(device)
                     for a in encoder_from.encode(run.data, np.arange(n))))

    uses_encoder = cfg.variant != "vlt"
    params = [p for name, p in model.named_parameters()
              if uses_encoder or not name.startswith("encoder.")]
    # One fused kernel for the whole update instead of a handful of passes over each parameter,
    # gradient and moment: Adam is memory-bound, and the 5 x 1024 encoder's 8.8 M parameters
    # made it about 15 ms of a 200 ms step on 2 CPU cores (5 ms fused).
    optimizers = {"model": torch.optim.Adam(params, lr=cfg.resolved_lr,
                                            weight_decay=cfg.weight_decay, fused=True)}
    if table is not None and not cfg.freeze_table:
        optimizers["table"] = torch.optim.SparseAdam(table.parameters(),
                                                     lr=cfg.resolved_table_lr)
    elif table is not None:
        table.requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed)
    if state is not None:
        try:
            for k, o in optimizers.items():
                saved = state["optimizers"][k]
                if k == "model":  # a checkpoint from before fused Adam resumes fused all the same
                    saved = {**saved, "param_groups": [{**g, "fused": True}
                                                       for g in saved["param_groups"]]}
                check_moments(saved, [p for g in o.param_groups for p in g["params"]])
                o.load_state_dict(saved)
            gen.set_state(state["generator"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            raise InputError(f"{ckpt}: its optimiser state is missing or damaged "
                             f"({first_line(err)[:160]})") from None

    if on_start is not None:
        on_start(run)

    # bf16 for the networks only: each model keeps its geometry (translations, rotated
    # coordinates, Fourier features, CTF) in float32.
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                              enabled=cfg.amp and device.type == "cuda")
    objective = world.wrap(_Objective(run, autocast))  # in DDP under torchrun
    model.train()
    for epoch in range(len(run.history), cfg.epochs):
        start, sums, seen = time.perf_counter(), np.zeros(3), 0
        batch_losses, batch_sizes = [], []
        reference = run.history[-1].loss if run.history else None
        order = torch.randperm(n, generator=gen)
        batches = [order[s:s + bs] for s in range(0, n, bs)]
        bar = progress(batches, len(batches), f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       enabled=show_progress and world.is_main and sys.stderr.isatty())
        for b, idx in enumerate(bar, 1):
            k = len(idx)
            eps = torch.randn((k, model.zdim), generator=gen)  # the whole global batch's noise
            part, weight = world.shard(k)  # this rank's share (the whole batch in one process)
            recon, kl = objective(idx[part], eps[part].to(device))
            loss = recon.mean() + beta * model.kl_weight * kl.mean()
            if world.distributed:
                loss = weight * loss
                values = _global_means(world, recon, kl, weight, k, run.kl_scale)
            else:
                values = loss.item(), recon.mean().item(), kl.mean().item()
            _guard(values[0], epoch, b, sums[0] / seen if seen else reference,
                   cfg.explode_factor)
            for o in optimizers.values():
                o.zero_grad(set_to_none=True)
            loss.backward()
            if world.distributed and "table" in optimizers:  # the global batch's rows
                grad = table.rows.weight.grad
                table.rows.weight.grad = world.gather_rows(grad, k) / world.size
            for o in optimizers.values():
                o.step()
            batch_losses.append(values[0])
            sums += k * np.array(values)
            seen += k
            batch_sizes.append(k)
        loss_, recon_, kl_ = (float(v) for v in sums / seen)
        record = EpochRecord(epoch + 1, loss_, recon_, kl_, time.perf_counter() - start, seen,
                             _curve(batch_losses, batch_sizes))
        run.history.append(record)
        if show_progress and world.is_main:
            logger.info("%s epoch %d/%d: loss %.5g, recon %.5g, KL %.4g (%.1f s, "
                        "%.0f images/s)", cfg.describe(), record.epoch, cfg.epochs, loss_,
                        recon_, kl_, record.seconds, seen / record.seconds)
        if ckpt is not None and world.is_main:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            if checkpoint_every and (record.epoch % checkpoint_every == 0
                                     or record.epoch == cfg.epochs):
                run.save(epoch_checkpoint(ckpt.parent, record.epoch))  # before checkpoint.pt:
                # a run resumed after a kill between the two writes this one again
            run.save(ckpt, optimizers, gen)
    world.barrier()  # all ranks return together, after rank 0's last checkpoint
    model.eval()
    return run


class _Objective(nn.Module):
    """Per-image ``(recon (B,), kl (B,))`` of training images ``idx (B,)`` at reparameterisation
    noise ``eps (B, zdim)``: the forward pass that DistributedDataParallel wraps.

    It holds as a submodule only what DDP averages gradients of: the whole model, or a VLT's
    decoder alone (its encoder is idle, and DDP insists that every parameter it holds gets a
    gradient). The table stays outside: its sparse gradients are gathered by hand.
    """

    def __init__(self, run: TrainedModel, autocast: torch.autocast):
        super().__init__()
        self.trained = run.model.decoder if run.config.variant == "vlt" else run.model
        self.run, self.autocast = run, autocast

    def forward(self, idx: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        run, model = self.run, self.run.model
        batch = _to(run.data.get_batch(idx.numpy()), run.device)
        prep = model.prepare(batch)
        with self.autocast:
            mu, logvar = run._latent(idx, batch, prep)
            z = mu.float() + eps * torch.exp(0.5 * logvar.float())
            recon = model.recon_loss(prep, z).float()
        return recon, kl_divergence(mu.float(), logvar.float())


def _global_means(world: World, recon: torch.Tensor, kl: torch.Tensor, weight: float, k: int,
                  kl_scale: float) -> tuple[float, float, float]:
    """``(loss, recon, kl)`` means over the global batch of ``k`` images from every rank's
    share ``recon, kl (k_r,)``, the same on every rank (a share of weight 0 counts nothing)."""
    local = torch.stack([recon.sum(), kl.sum()]) if weight else recon.new_zeros(2)
    recon_, kl_ = (world.sum(local) / k).tolist()
    return recon_ + kl_scale * kl_, recon_, kl_


def _guard(value: float, epoch: int, batch: int, reference: float | None,
           factor: float) -> None:
    """Stop with a clear message on a NaN, infinite or exploding loss ``value``.

    ``reference`` is this epoch's mean loss so far (the previous epoch's for its first batch).
    Under torchrun every rank sees the same global values, so all ranks stop together.
    """
    where = f"epoch {epoch + 1}, batch {batch}"
    if not math.isfinite(value):
        raise TrainingDiverged(f"training diverged at {where}: the loss is {value}")
    if reference is not None and value > factor * max(reference, 1e-12):
        raise TrainingDiverged(f"training diverged at {where}: the loss {value:.3g} is over "
                               f"{factor:g} times the running mean ({reference:.3g})")
