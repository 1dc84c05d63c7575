"""The registry of model families: what ampcheck can train, each with its defaults (torch-free).

A :class:`Family` says how to build its network for a data set, its default learning rate,
batch size and KL weight, its training at each named budget (:mod:`ampcheck.budgets`), its
encoder presets and the kind of images it trains on. The training loop, the checks, the
command line and :mod:`ampcheck.kinds` build, name and describe models through it and never
by a family's name, so that a family registered later (a guest behind an adapter, or a
user's own) is trained and checked as ampcheck's own are::

    from ampcheck.families import Family, register_family
    register_family(Family("mine", "my VAE", data_kind="mnist", build=build_mine, lr=1e-3,
                           batch_size=64, beta=1.0, training={...}))

``build`` may be a ``"module:function"`` string, imported when a network is first built, so
that registering a family (and importing this module) loads no torch. The guests that ampcheck
ships register themselves when :mod:`ampcheck.adapters` is imported; :func:`get_family`
imports it when asked for a name that no one has registered yet, so that a saved config that
names a guest loads without importing its adapter first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .budgets import BUDGETS, Training
from .errors import ConfigError

__all__ = ["CRYOEM_ENCODERS", "Family", "architecture_family", "default_family", "get_family",
           "register_family", "registered_families", "trainable_families",
           "unregister_family"]


@dataclass(frozen=True)
class Family:
    """A model family ampcheck can train.

    Attributes:
        name: what configs (``TrainConfig.model``), presets and results call it.
        title: its network in messages (``"the cryo-EM VAE"``).
        data_kind: the kind of images it trains on (``"cryoem"``, ``"mnist"``): the data-set
            contract's ``family`` attribute and the pytest marker of its checks.
        build: ``(config, data, device) -> network`` (a module following the training loop's
            model interface: ``prepare``, ``encode``, ``recon_loss``, ``kl_weight``, ``zdim``,
            its parameters in the submodules ``encoder`` and ``decoder``), or the
            ``"module:function"`` that is one.
        lr, batch_size: the networks' default learning rate and batch size.
        beta: the default KL weight; None: ``1 / zdim`` (cryoDRGN's).
        training: its :class:`~ampcheck.budgets.Training` at every named budget, or none at
            all for a family whose adapter gives the training settings.
        encoders: its encoder presets, the default first; a family with one is named without
            it (``mnist``), one with several by ``family:encoder`` (``cryoem:large``).
        architecture: its networks are described by ``TrainConfig.architecture`` (text that
            ``build`` reads), which such a config must give and other configs must not.
        needs_poses: it trains on images with their poses (cryo-EM decoders render at them).
        encoder_name: how results name its encoder where ``architecture`` describes it
            (None: by the config's encoder preset).
        throughput: measured training images per second on two CPU cores per embedded data
            set, ``{size: (box, training images, images/s)}``, for expected times in help.
    """

    name: str
    title: str
    data_kind: str
    build: Callable[[Any, Any, Any], Any] | str
    lr: float
    batch_size: int
    beta: float | None = None
    training: Mapping[str, Training] = field(default_factory=dict)
    encoders: tuple[str, ...] = ("base",)
    architecture: bool = False
    needs_poses: bool = False
    encoder_name: str | None = None
    throughput: Mapping[str, tuple[int, int, float]] = field(default_factory=dict)

    @property
    def default_encoder(self) -> str:
        return self.encoders[0]

    def preset(self, encoder: str | None = None) -> str:
        """The preset name of this family with ``encoder`` (None: the default):
        ``cryoem:base``, ``mnist``."""
        if len(self.encoders) > 1:
            return f"{self.name}:{encoder or self.default_encoder}"
        return self.name

    def default_beta(self, zdim: int) -> float:
        return 1.0 / zdim if self.beta is None else float(self.beta)

    def network(self, config: Any, data: Any, device: Any) -> Any:
        """Build the network of ``config`` for ``data`` on ``device`` (``build``)."""
        build = self.build
        if isinstance(build, str):
            module, _, attr = build.partition(":")
            build = getattr(importlib.import_module(module), attr)
        return build(config, data, device)


_REGISTRY: dict[str, Family] = {}
_GUESTS = "ampcheck.adapters"  # the package whose import registers the guests ampcheck ships
_guests_loaded = False


def register_family(family: Family, *, replace: bool = False) -> Family:
    """Add ``family`` to the registry and return it. Refused (ConfigError): a name taken by
    another family (unless ``replace``), a name that is not a plain word, training at some
    named budgets but not at all, no encoder preset."""
    if not isinstance(family, Family):
        raise ConfigError(f"register_family takes a Family, got {type(family).__name__}")
    name = family.name
    if not (isinstance(name, str) and name.replace("_", "").replace("-", "").isalnum()):
        raise ConfigError(f"a family's name must be a word (letters, digits, _ or -), got "
                          f"{name!r}")
    missing = [b for b in BUDGETS if b not in family.training]
    unknown = sorted(set(family.training) - set(BUDGETS))
    if unknown or (family.training and missing):
        raise ConfigError(f"the {name} family's training must name every budget "
                          f"({', '.join(BUDGETS)}) or none; "
                          + (f"unknown: {', '.join(unknown)}" if unknown
                             else f"missing: {', '.join(missing)}"))
    if not family.encoders or not all(isinstance(e, str) and e for e in family.encoders):
        raise ConfigError(f"the {name} family needs at least one encoder preset name")
    old = _REGISTRY.get(name)
    if old is not None and old != family and not replace:
        raise ConfigError(f"a model family named {name!r} is registered already ({old.title}); "
                          "give replace=True to replace it")
    _REGISTRY[name] = family
    return family


def unregister_family(name: str) -> None:
    """Remove the family called ``name`` (a test's or a notebook's own) from the registry."""
    _REGISTRY.pop(name, None)


def registered_families() -> tuple[Family, ...]:
    """Every registered family, in the order registered (ampcheck's own first)."""
    return tuple(_REGISTRY.values())


def trainable_families() -> tuple[Family, ...]:
    """The families that train at the named budgets: those a preset or ``ampcheck train
    --model`` may name."""
    return tuple(f for f in _REGISTRY.values() if f.training)


def default_family(data_kind: str | None) -> Family:
    """The family that trains on images of ``data_kind`` unless told otherwise: the first
    registered one that trains at the named budgets; a ConfigError when there is none."""
    for family in trainable_families():
        if family.data_kind == data_kind:
            return family
    raise ConfigError(f"no model family trains on {data_kind} images; expected images of "
                      f"{', '.join(dict.fromkeys(f.data_kind for f in trainable_families()))}")


def architecture_family(name: str) -> str:
    """``name``, or where it names a family that no architecture describes, the one registered
    family of the same kind of images that one does (how a config written before families
    were registered named a guest's network: ``architecture`` under its images' family)."""
    family = _REGISTRY.get(name)
    if family is None or family.architecture:
        return name
    _load_guests()
    guests = [f.name for f in _REGISTRY.values()
              if f.architecture and f.data_kind == family.data_kind]
    return guests[0] if len(guests) == 1 else name


def _load_guests() -> None:
    """Import the guests that ampcheck ships (they register themselves), once."""
    global _guests_loaded
    if not _guests_loaded:
        _guests_loaded = True
        importlib.import_module(_GUESTS)


def get_family(name: str) -> Family:
    """The family called ``name``, registering the shipped guests first when no one has
    registered it yet; a ConfigError naming the known families otherwise."""
    if isinstance(name, str) and name not in _REGISTRY:
        _load_guests()
    family = _REGISTRY.get(name) if isinstance(name, str) else None
    if family is None:
        raise ConfigError(f"unknown model family {name!r}; expected one of "
                          f"{', '.join(_REGISTRY)}")
    return family


# ----------------------------------------------------------------------------- ampcheck's own
#: The encoder presets of the cryo-EM VAE, the default first (their sizes:
#: ``ampcheck.models.encoders``).
CRYOEM_ENCODERS = ("base", "small", "large", "invariant")

# The budgets' training, per family. smoke: about half a minute per cryo-EM harness on the
# ci data set; standard: each of at most 1,000 training images seen 12 times at 10x cryoDRGN's
# learning rate, so that every variant's latents (a lookup table's rows move once per epoch)
# recover the hinge of the standard data set; medium: five epochs of the whole set at
# cryoDRGN's rate; full: the paper's (cryoDRGN's defaults: 50 epochs, lr 1e-4, batch 8).
register_family(Family(
    "cryoem", "the cryo-EM VAE", data_kind="cryoem", build="ampcheck.models.build:cryoem_vae",
    lr=1e-4, batch_size=8, beta=None, encoders=CRYOEM_ENCODERS, needs_poses=True,
    training={"smoke": Training(1, max_images=1000),
              "standard": Training(12, max_images=1000, lr=1e-3),
              "medium": Training(5), "full": Training(50)},
    throughput={"standard": (24, 1000, 364.0), "ci": (64, 1600, 48.0)}))
register_family(Family(
    "mnist", "the MNIST VAE", data_kind="mnist", build="ampcheck.models.build:mnist_vae",
    lr=1e-3, batch_size=128, beta=1.0,
    training={"smoke": Training(20), "standard": Training(50), "medium": Training(50),
              "full": Training(100)}))
