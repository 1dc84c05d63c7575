"""What the checks examine: a model (one per training seed), its data split and capabilities.

Checks work on a *subject*, never on a class name. Its tags say what it can do (the
scikit-learn estimator-tags pattern), and each check declares the tags it needs:

* ``encoder``: the model has an encoder to probe (every VAE);
* ``trainable``: ampcheck's training loop can train the subject's variants (evil twins, a
  lookup table, a homogeneous fit) at the same budget: models built from a
  :class:`~ampcheck.train.TrainConfig`;
* ``heldout``: images the model did not train on are known;
* ``truth``: the data carry ground truth (``z_continuous`` and/or ``z_class``) that is not
  constant (a constant truth carries no information to recover);
* ``poses``: the data's batches carry poses; ``clean``: the data re-noise their clean images
  (:class:`~ampcheck.contracts.NoiseResampling`).

The tags a model's kind decides come from :func:`ampcheck.kinds.kind_tags`, and its name
from :func:`ampcheck.kinds.model_name`, so that results, baselines and configuration name a
model alike. What the data can give beyond the contract (ground-truth volumes) is read once
into the subject's :class:`~ampcheck.contracts.DataCapabilities`.

Any VAE enters through the small structural protocol :class:`~ampcheck.contracts.VAE`;
ampcheck's own trained models (:class:`~ampcheck.train.TrainedModel`) already speak the
data-level interface (:class:`~ampcheck.contracts.CheckableModel`) that checks call, and
:class:`ProtocolModel` gives it to any VAE, with the VAE's declared capabilities (a
``decode_volume`` gets the volume metrics).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import kinds
from ..budgets import DEFAULT_BUDGET
from ..contracts import (
    VAE,
    CheckableModel,
    DataCapabilities,
    Dataset,
    ModelCapabilities,
    data_capabilities,
    missing_members,
    model_capabilities,
)
from ..errors import ConfigError
from ..train import (
    TrainConfig,
    TrainedModel,
    budget_config,
    resolve_device,
    train,
    training_split,
)
from ._common import usable_truth

__all__ = ["VAE", "CheckableModel", "ProtocolModel", "Subject", "TrainingCache", "data_key",
           "split_by_indices", "subject_from", "validate_data", "validate_vae"]

logger = logging.getLogger(__name__)


def _takes_meta(fn: Callable) -> bool:
    try:
        return "meta" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def validate_vae(model: Any, where: str = "the model") -> None:
    """Raise a clear :class:`ConfigError` unless ``model`` follows :class:`VAE`."""
    missing = [m for m in ("encode", "recon_loss") if not callable(getattr(model, m, None))]
    if missing:
        raise ConfigError(f"{where} ({type(model).__name__}) has no {' or '.join(missing)}(); "
                          "a VAE for ampcheck needs encode(x) -> (mu, logvar) and "
                          "recon_loss(x, z) -> per-image loss")


def validate_data(data: Any, where: str = "the data") -> None:
    """Raise a clear :class:`ConfigError` unless ``data`` follows
    :class:`~ampcheck.contracts.Dataset`."""
    if isinstance(data, Dataset):
        return
    missing = missing_members(data, Dataset)
    raise ConfigError(f"{where} ({type(data).__name__}) has no {', '.join(missing)}; expected "
                      "a data set such as ampcheck's ParticleDataset or MnistDataset "
                      "(see ampcheck.contracts.Dataset)")


class ProtocolModel:
    """A :class:`VAE` behind the data-level interface, in batches, on its own device.

    Its :attr:`capabilities` are the VAE's (:func:`~ampcheck.contracts.model_capabilities`),
    read once here: a VAE with ``decode_volume`` decodes volumes for the checks. ``data``: the
    images it was trained on, whose latents :meth:`latents` gives (as a ``TrainedModel``'s).
    """

    def __init__(self, vae: Any, batch_size: int = 256, data: Any = None):
        validate_vae(vae)
        self.vae, self.batch_size, self.data = vae, int(batch_size), data
        self.capabilities: ModelCapabilities = model_capabilities(vae)
        self.device = torch.device("cpu")
        if isinstance(vae, torch.nn.Module):
            vae.eval()  # checks evaluate: no dropout, batch norm on its running statistics
            params = list(vae.parameters())
            self.device = params[0].device if params else self.device
        self._kl_weight = float(getattr(vae, "kl_weight", 1.0))  # optional (see VAE)
        self._enc_meta = _takes_meta(vae.encode)
        self._rec_meta = _takes_meta(vae.recon_loss)

    @property
    def kl_scale(self) -> float:
        return self._kl_weight

    def decode_volume(self, z: np.ndarray) -> np.ndarray:
        """The VAE's volume ``(D, D, D)`` float32 at latent ``z (zdim,)``."""
        if not self.capabilities.decode_volume:
            raise ConfigError(f"{type(self.vae).__name__} has no decode_volume(z); it declares "
                              "no volumes")
        with torch.no_grad():
            vol = self.vae.decode_volume(np.asarray(z, dtype=np.float32))
        if isinstance(vol, torch.Tensor):
            vol = vol.detach().float().cpu().numpy()
        vol = np.asarray(vol, dtype=np.float32)
        if vol.ndim != 3 or len(set(vol.shape)) != 1:
            raise ConfigError(f"{type(self.vae).__name__}.decode_volume returned shape "
                              f"{vol.shape}; expected a cubic volume (D, D, D)")
        return vol

    def _inputs(self, data, idx: np.ndarray, transform=None):
        images = data.images(idx)
        if transform is not None:
            images = np.ascontiguousarray(transform(images))
        x = torch.as_tensor(images, dtype=torch.float32, device=self.device)
        batch = data.get_batch(idx)
        meta = {k: v.to(self.device) for k, v in batch.items() if k != "y"}
        return x, meta

    def _call(self, fn, takes_meta: bool, x, meta, *args):
        return fn(x, *args, meta=meta) if takes_meta else fn(x, *args)

    def latents(self, indices=None) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, logvar)`` of images ``indices`` of the training images ``data``."""
        if self.data is None:
            raise ConfigError(f"{type(self.vae).__name__}: its training images are not known")
        return self.encode(self.data, indices)

    def encode(self, data, indices=None, transform=None) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(len(data)) if indices is None else np.asarray(indices)
        mus, logvars = [], []
        with torch.no_grad():
            for s in range(0, len(idx), self.batch_size):
                x, meta = self._inputs(data, idx[s:s + self.batch_size], transform)
                out = self._call(self.vae.encode, self._enc_meta, x, meta)
                if not (isinstance(out, tuple | list) and len(out) == 2):
                    raise ConfigError(f"{type(self.vae).__name__}.encode must return "
                                      f"(mu, logvar), got {type(out).__name__}")
                mus.append(out[0].float().cpu().numpy())
                logvars.append(out[1].float().cpu().numpy())
        return np.concatenate(mus), np.concatenate(logvars)

    def recon_closure(self, data, indices) -> Callable[[torch.Tensor], torch.Tensor]:
        x, meta = self._inputs(data, np.asarray(indices))
        return lambda z: self._call(self.vae.recon_loss, self._rec_meta, x, meta,
                                    z.to(self.device))

    def recon_loss(self, data, indices, z: np.ndarray) -> np.ndarray:
        idx, z = np.asarray(indices), np.asarray(z, dtype=np.float32)
        out = []
        with torch.no_grad():
            for s in range(0, len(idx), self.batch_size):
                fn = self.recon_closure(data, idx[s:s + self.batch_size])
                out.append(fn(torch.from_numpy(z[s:s + self.batch_size])).float().cpu().numpy())
        return np.concatenate(out)


# ---------------------------------------------------------------------------- training cache
def data_key(data) -> str:
    """A key for "the same images, served the same way": the data set's class and source,
    the view's positions, and a digest of what its first two images reach a model as (so that
    a view with other preprocessing, say without the real-space window, is another key)."""
    h = hashlib.sha1(np.asarray(data.indices, dtype=np.int64).tobytes())
    if len(data):
        y = data.get_batch(np.arange(min(2, len(data))))["y"]
        h.update(np.ascontiguousarray(torch.as_tensor(y).cpu().numpy(), np.float32).tobytes())
    return f"{type(data).__name__}:{data.source}:{len(data)}:{h.hexdigest()[:16]}"


class TrainingCache:
    """Trained variants by (config, data): each is trained once per session and reused.

    The pytest plugin keeps one for the session; ``check_vae`` makes one per call unless
    given one.
    """

    def __init__(self, show_progress: bool = False):
        self.show_progress = show_progress
        self._runs: dict[tuple, TrainedModel] = {}  # in training order

    @staticmethod
    def _key(cfg: TrainConfig, data, kwargs: dict) -> tuple:
        return (tuple(sorted(asdict(cfg).items())), data_key(data),
                tuple(sorted((k, id(v)) for k, v in kwargs.items())))

    def add(self, run: TrainedModel, data) -> None:
        """Adopt ``run`` (say, loaded from a checkpoint) as the training of its config on
        ``data``, so that checks use it instead of training it again."""
        self._runs[self._key(run.config, data, {})] = run

    def train(self, cfg: TrainConfig, data, **kwargs) -> TrainedModel:
        key = self._key(cfg, data, kwargs)
        if key not in self._runs:
            if self.show_progress:
                logger.info("ampcheck: training %s, seed %d, %d epoch(s)", cfg.describe(),
                            cfg.seed, cfg.epochs)
            self._runs[key] = train(cfg, data, show_progress=self.show_progress, **kwargs)
        return self._runs[key]

    def train_ahead(self, jobs: Sequence[tuple[TrainConfig, Any]],
                    processes: int | None = None,
                    meanwhile: Callable[[], Any] | None = None) -> None:
        """Train ``jobs``, the ``(config, training data)`` that checks are about to ask for,
        side by side in forked processes of one torch thread each, and adopt the results in
        the order given, so that the checks then find them here.

        Why: at a cryo-EM batch of 8, two single-thread processes train about 15% more
        images per second than one process with two threads, and a CPU run's numbers do not
        depend on its thread count (``tests/test_train.py``), so the results are those the
        checks would have trained. Only CPU training with at least two jobs and two cores is
        done this way (``processes``: default, one per core); otherwise nothing happens here
        and the checks train as they ask. ``meanwhile``: work for this process while the
        others train (not done when they do not).
        """
        todo, seen = [], set()
        for cfg, data in jobs:
            key = self._key(cfg, data, {})
            if key not in self._runs and key not in seen:
                seen.add(key)
                todo.append((cfg, data))
        n = min(processes or os.cpu_count() or 1, len(todo))
        if n < 2 or "fork" not in multiprocessing.get_all_start_methods() \
                or any(resolve_device(cfg.device).type != "cpu" for cfg, _ in todo):
            return
        threads = max(1, (os.cpu_count() or 1) // n)
        # the longest first (the large encoder, then cryo-EM), so that the processes end together
        order = sorted(range(len(todo)), key=lambda i: (todo[i][0].encoder != "large",
                                                        todo[i][0].model != "cryoem"))
        if self.show_progress:
            logger.info("ampcheck: training %d models in %d processes side by side", len(todo), n)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="ampcheck-ahead-") as tmp:
            global _AHEAD
            _AHEAD = [(cfg, data, Path(tmp) / f"{i}.pt", threads)
                      for i, (cfg, data) in enumerate(todo)]
            try:
                with multiprocessing.get_context("fork").Pool(n) as pool:
                    finished = pool.imap_unordered(_train_ahead_job, order)
                    if meanwhile is not None:
                        meanwhile()
                    for done, i in enumerate(finished, 1):
                        if self.show_progress:
                            logger.info("ampcheck: trained %s, seed %d (%d of %d, %.0f s)",
                                        todo[i][0].describe(), todo[i][0].seed, done,
                                        len(todo), time.perf_counter() - start)
            finally:
                jobs_run, _AHEAD = _AHEAD, []
            for _cfg, data, path, _ in jobs_run:  # in the order given: the order checks ask
                self.add(TrainedModel.load(path, data), data)

    @staticmethod
    def label(cfg: TrainConfig) -> str:
        """``model/variant/encoder/seedN`` (a table's init too, when not the default);
        ``model/variant/seedN`` where an architecture describes the network."""
        init = f"/{cfg.table_init}" if cfg.variant == "vlt" and cfg.table_init != "normal" \
            else ""
        if cfg.architecture is not None:
            return f"{cfg.model}/{cfg.variant}{init}/seed{cfg.seed}"
        return f"{cfg.model}/{cfg.variant}{init}/{cfg.encoder}/seed{cfg.seed}"

    @property
    def runs(self) -> list[TrainedModel]:
        """Every trained run, in training order."""
        return list(self._runs.values())

    @property
    def trained(self) -> list[str]:
        """What was actually trained, in order (for reports)."""
        return [self.label(run.config) for run in self.runs]

    def __len__(self) -> int:
        return len(self._runs)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per trained run: its config, images, epochs, mean seconds per epoch and images per
        second, the last epoch's losses and the whole history (loss curves for reports)."""
        return {self.label(run.config): self.describe(run) for run in self._runs.values()}

    @staticmethod
    def describe(run: TrainedModel) -> dict[str, Any]:
        """One run as :meth:`summary` gives it."""
        h = run.history
        return {"config": asdict(run.config), "images": len(run.data), "epochs": len(h),
                "seconds_per_epoch": float(np.mean([r.seconds for r in h])) if h else None,
                "images_per_second": float(np.mean([r.images_per_second for r in h])) if h
                else None,
                "loss": h[-1].loss if h else None, "recon": h[-1].recon if h else None,
                "history": [asdict(r) for r in h]}


#: The jobs of the :meth:`TrainingCache.train_ahead` call in progress, which its forked
#: workers inherit (a data set need not be picklable): ``(config, data, checkpoint, threads)``.
_AHEAD: list[tuple[TrainConfig, Any, Path, int]] = []


def _train_ahead_job(i: int) -> int:
    """Train job ``i`` of :data:`_AHEAD` in this worker and write its checkpoint."""
    cfg, data, path, threads = _AHEAD[i]
    torch.set_num_threads(threads)
    train(cfg, data, show_progress=False).save(path)
    return i


# ---------------------------------------------------------------------------- the subject
@dataclass
class Subject:
    """A model under test with its data, split, seeds and capabilities.

    Build one with :func:`subject_from`. ``models[seed]`` is the trained model of each seed;
    ``train`` and ``heldout`` are views of ``data``; ``config`` is set for ampcheck-trained
    subjects, whose variants :meth:`variant` trains (through the cache) on ``train``;
    ``capabilities`` are the data's (:func:`~ampcheck.contracts.data_capabilities`).
    ``model_is_variant``: whether ``model(seed)`` is what :meth:`variant` trains without
    overrides, so that the checks that retrain compare their variants with it
    (:meth:`reference`); False for a model trained elsewhere whose variants train at another
    budget than it did.
    """

    name: str
    data: Any
    train: Any
    heldout: Any | None
    seeds: tuple[int, ...]
    model_fn: Callable[[int], Any]
    tags: frozenset[str]
    config: TrainConfig | None = None
    cache: TrainingCache | None = None
    options: dict[str, Any] = field(default_factory=dict)
    capabilities: DataCapabilities = field(default_factory=DataCapabilities)
    model_is_variant: bool = True
    _models: dict[int, Any] = field(default_factory=dict, repr=False)
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)

    def model(self, seed: int) -> CheckableModel:
        if seed not in self._models:
            self._models[seed] = self.model_fn(seed)
        return self._models[seed]

    def with_options(self, options: Mapping[str, Any]) -> Subject:
        """The same subject with ``options`` added to its check options: it shares the trained
        models (``_models``, the cache), so a model trains once whatever options its checks
        run with."""
        return replace(self, options={**self.options, **options}, _models=self._models,
                       _memo=self._memo)

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per ``key`` for this subject: what several checks measure alike
        on its own models (the shift and the rotation check's latent use)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @property
    def data_kind(self) -> str | None:
        """The kind of images: that of the family ampcheck trains, else the data's declared
        kind (:func:`ampcheck.kinds.data_kind`)."""
        if self.config is not None:
            return self.config.family.data_kind
        return kinds.data_kind(self.data)

    def reference(self, seed: int) -> CheckableModel:
        """The model that ``evil_twin`` and ``vlt_equivalence`` compare the variants they
        train with: :meth:`model`, or where that model is not what the variants' training
        makes (``model_is_variant`` False), the ``vae`` variant trained at their budget."""
        return self.model(seed) if self.model_is_variant else self.variant(seed)

    def variant(self, seed: int, *, encoder_from: TrainedModel | None = None,
                **overrides: Any) -> TrainedModel:
        """The subject's config with ``overrides`` (variant, encoder, ...), trained on
        ``train`` at the same budget and ``seed`` (``encoder_from``: for a table initialised
        from an encoder)."""
        if self.config is None or self.cache is None:
            raise ConfigError(f"{self.name} is not trained by ampcheck, so its variants "
                              "cannot be trained")
        extra = {} if encoder_from is None else {"encoder_from": encoder_from}
        return self.cache.train(self.variant_config(seed, **overrides), self.train, **extra)

    def variant_config(self, seed: int, **overrides: Any) -> TrainConfig:
        """The config :meth:`variant` trains (no overrides: the subject's own model's)."""
        if self.config is None:
            raise ConfigError(f"{self.name} is not trained by ampcheck, so its variants "
                              "cannot be trained")
        return replace(self.config, seed=seed, **overrides)


def _truth_tags(data) -> set[str]:
    """``{"truth"}`` when the data carry a ground truth that latents can be measured against:
    ``z_continuous`` or ``z_class`` that is not constant (see
    :func:`~ampcheck.checks._common.usable_truth`)."""
    return {"truth"} if usable_truth(data.truth) else set()


def subject_from(model: Any, data, *, budget: str = DEFAULT_BUDGET,
                 seeds: int | Sequence[int] = 1, device: str = "auto",
                 heldout_fraction: float = 0.2, split_seed: int = 0,
                 train_indices: Sequence[int] | None = None, name: str | None = None,
                 cache: TrainingCache | None = None, variant_config: TrainConfig | None = None,
                 model_is_variant: bool = True) -> Subject:
    """Make a :class:`Subject` of ``model`` on ``data``.

    ``model`` may be:

    * a :class:`~ampcheck.train.TrainConfig`, or a preset string ``"cryoem"``,
      ``"cryoem:<encoder>"`` or ``"mnist"``: ampcheck trains it at ``budget`` on the training
      split, once per seed (all checks apply);
    * a callable ``factory(train_data, seed) -> VAE``: trained by the user's code on the
      training split, once per seed;
    * a trained :class:`VAE` (or a ``TrainedModel``): used as it is; pass ``train_indices``
      (positions in ``data`` it trained on) to enable the held-out checks, and
      ``variant_config``, a ``TrainConfig`` of its own network and settings, to make it
      ``trainable`` (its variants train on its training images; ``model_is_variant``: that
      config trains the model itself, so the variants compare with it, else with the ``vae``
      variant trained as they are).

    ``seeds``: a number of seeds (``0 .. n-1``) or the seeds themselves.
    """
    seed_list = tuple(range(seeds)) if isinstance(seeds, int) else tuple(int(s) for s in seeds)
    if not seed_list:
        raise ConfigError("seeds must name at least one seed")
    validate_data(data)
    cache = cache if cache is not None else TrainingCache()
    tags = set(kinds.kind_tags(model)) | _truth_tags(data)
    caps = data_capabilities(data)
    tags |= {t for t, has in (("poses", caps.poses), ("clean", caps.noise_resampling)) if has}
    if variant_config is not None and not isinstance(model, TrainedModel | VAE):
        raise ConfigError("variant_config is for a trained VAE; a preset, a TrainConfig or a "
                          "factory trains its variants from its own config")

    if isinstance(model, str | TrainConfig):
        cfg = _config_from(model, budget, device)
        train_set, heldout = training_split(cfg, data, heldout_fraction, split_seed)
        label = name or kinds.model_name(cfg)

        def model_fn(seed: int):
            return cache.train(replace(cfg, seed=seed), train_set)

        return Subject(label, data, train_set, heldout, seed_list, model_fn, frozenset(tags),
                       config=cfg, cache=cache, capabilities=caps)

    if isinstance(model, TrainedModel | VAE):
        pass  # used as it is (below)
    elif callable(model):
        train_set, heldout = data.split(heldout_fraction, seed=split_seed)
        factory = model

        def model_fn(seed: int):
            built = factory(train_set, seed)
            if isinstance(built, TrainedModel):
                return built
            validate_vae(built, f"the model factory {getattr(factory, '__name__', factory)!r}'s "
                                "return value")
            return ProtocolModel(built)

        label = name or kinds.model_name(factory)
        return Subject(label, data, train_set, heldout, seed_list, model_fn, frozenset(tags),
                       cache=cache, capabilities=caps)
    else:
        validate_vae(model)
        raise AssertionError("unreachable")  # validate_vae raised

    train_set, heldout = (data, None) if train_indices is None else \
        split_by_indices(data, train_indices)
    vae_like = model if isinstance(model, TrainedModel) else ProtocolModel(model, data=train_set)
    if heldout is not None:
        tags.add("heldout")
    if len(seed_list) > 1:
        raise ConfigError("a model trained elsewhere is one seed; pass a factory to check "
                          "several training seeds")
    if variant_config is not None:
        tags.add("trainable")
    label = name or kinds.model_name(model)
    return Subject(label, data, train_set, heldout, seed_list, lambda seed: vae_like,
                   frozenset(tags), config=variant_config, cache=cache, capabilities=caps,
                   model_is_variant=model_is_variant)


def split_by_indices(data, train_indices: Sequence[int]):
    """``(train_set, heldout)``: the views of ``data`` at ``train_indices`` (positions in it,
    sorted, repeats dropped) and at the other positions (None when there are none)."""
    train_idx = np.unique(np.asarray(train_indices, dtype=np.int64))
    rest = np.setdiff1d(np.arange(len(data)), train_idx)
    return data.subset(train_idx), (data.subset(rest) if len(rest) else None)


def _config_from(model: str | TrainConfig, budget: str, device: str) -> TrainConfig:
    if isinstance(model, TrainConfig):
        return replace(model, device=device) if device != "auto" else model
    family, encoder = kinds.parse_preset(model)
    overrides: dict[str, Any] = {"model": family, "device": device}
    if encoder:
        overrides["encoder"] = encoder
    resolve_device(device)  # fail early on cuda without CUDA
    return budget_config(budget, **overrides)

