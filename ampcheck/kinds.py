"""How ampcheck names models and what their kind decides (torch-free).

:func:`model_name` is the one name a model has in results, baselines
(``<baseline_dir>/<name>/<check>.json``) and ``[tool.ampcheck.models."<name>"]``; presets name
a registered model family (:mod:`ampcheck.families`) and, where it has several, its encoder.
:func:`kind_tags` gives the capabilities that the *kind* of model decides (the data add
``truth``; a trained model given ``train_indices`` adds ``heldout``); :func:`data_kind` the
kind of images a data set declares; :data:`OPTIONS` the per-check options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .families import get_family, trainable_families

#: The training loop's variants: where a model's latent comes from (:mod:`ampcheck.train`).
VARIANTS = ("vae", "vlt", "twin-perm", "twin-noise")


def preset_name(family: str, encoder: str | None = None) -> str:
    """The full preset of ``family`` with ``encoder`` (None: its default): ``cryoem:base``,
    ``cryoem:large``, ``mnist`` (a family with one encoder is named without it)."""
    return get_family(family).preset(encoder)


def parse_preset(text: str) -> tuple[str, str | None]:
    """``"cryoem"`` → ``("cryoem", None)``, ``"cryoem:large"`` → ``("cryoem", "large")``,
    ``"mnist"`` → ``("mnist", None)``: a family that trains at the named budgets, and one of
    its encoder presets; ConfigError naming what is expected otherwise."""
    name, sep, encoder = text.partition(":")
    families = {f.name: f for f in trainable_families()}
    expected = "expected " + " or ".join(
        f"'{f.name}', '{f.name}:<encoder>' ({', '.join(f.encoders)})" if len(f.encoders) > 1
        else f"'{f.name}'" for f in families.values())
    family = families.get(name)
    if family is None or (sep and len(family.encoders) < 2):
        raise ConfigError(f"unknown model preset {text!r}; {expected}")
    if sep and encoder not in family.encoders:
        raise ConfigError(f"unknown encoder {encoder!r} in the model preset {text!r}; {expected}")
    return name, (encoder or None)


def is_train_config(model: Any) -> bool:
    """A :class:`~ampcheck.train.TrainConfig` (recognised without importing torch)."""
    return type(model).__name__ == "TrainConfig" and type(model).__module__ == "ampcheck.train"


def is_trained_vae(model: Any) -> bool:
    """A model used as it is: it follows the VAE contract (:class:`ampcheck.contracts.VAE`:
    ``encode`` and ``recon_loss``)."""
    from .contracts import VAE

    return isinstance(model, VAE)


def model_name(model: Any) -> str:
    """The name of ``model``: a preset in its full form (``cryoem`` → ``cryoem:base``), a
    ``TrainConfig``'s preset (``cryoem:large``, ``mnist``; a family described by an
    architecture, by its name), a factory's ``__name__``, else the model's class name."""
    if isinstance(model, str):
        try:
            return preset_name(*parse_preset(model))
        except ConfigError:
            return model  # not a preset: the caller's own name, or refused where it is used
    if is_train_config(model):
        return preset_name(model.model, model.encoder)
    if callable(model) and hasattr(model, "__name__") and not is_trained_vae(model):
        return model.__name__
    return type(model).__name__


def kind_tags(model: Any) -> frozenset[str]:
    """What the kind of ``model`` decides: every model has an ``encoder``; one ampcheck
    trains (a preset or a ``TrainConfig``) is ``trainable`` and has ``heldout`` images; a
    factory ``(train_data, seed) -> VAE`` has ``heldout`` images; a trained VAE neither."""
    if isinstance(model, str) or is_train_config(model):
        return frozenset({"encoder", "trainable", "heldout"})
    if is_trained_vae(model):
        return frozenset({"encoder"})
    return frozenset({"encoder", "heldout"})


#: The data kinds, each the name of the pytest marker that selects its checks (``-m cryoem``).
DATA_KINDS = ("cryoem", "mnist")


def data_kind(data: Any) -> str | None:
    """The kind of images ``data`` declares (its class attribute ``family``, the data-set
    contract of :mod:`ampcheck.contracts`: ``cryoem``, ``mnist``), None without data or when
    it declares none: the one place a data set's kind is read."""
    family = getattr(type(data), "family", None) if data is not None else None
    return family if family in DATA_KINDS else None


def model_kind(model: Any) -> str | None:
    """The data kind of a model ampcheck trains (a preset or a ``TrainConfig``): its family's
    ``data_kind``; None for a factory or a trained VAE, whose kind is their data's."""
    if isinstance(model, str):
        try:
            return get_family(parse_preset(model)[0]).data_kind
        except ConfigError:
            return None
    if is_train_config(model):
        return model.family.data_kind
    return None


#: Per-check options (``check_vae(options=...)``), with what each does.
OPTIONS = {
    "twin_encoder": "evil_twin: the encoder preset of the twins and their baseline "
                    "(default: the subject's own; the paper's finding is about 'large')",
    "twin_baseline": "evil_twin: what the twins are measured against, 'same' (default: a VAE "
                     "with the twins' encoder) or 'subject' (the subject's own model, as the "
                     "paper sets its large twins, Figs 8-9, beside its baseline, Fig. 3)",
    "shift_transforms": "shift_invariance: transforms such as ['roll:1', 'roll:0,5']",
    "rotation_transforms": "rotation_invariance: transforms such as ['rot90:1', 'rot90:2']",
    "vlt_init": "vlt_equivalence: the table's init, 'normal' (default), 'zero', or "
                "'from_encoder' (frozen at the encoder's latents: a positive control)",
    "table_lr": "vlt_equivalence: the lookup table's learning rate (default: the training "
                "config's, 100 x the networks' rate; an adapter may set its own, as the one "
                "for runs of another program does)",
    "recovery_method": "heldout_generalisation: 'linear' (default) or 'knn' regression",
    "mnist_data": "mnist_control: the MNIST data set (default: MnistDataset.load())",
}
#: Options whose value is an object (a data set): given from Python, never from a file.
OBJECT_OPTIONS = ("mnist_data",)


def validate_options(options: Mapping[str, Any] | None, where: str = "options", *,
                     objects: bool = True) -> dict[str, Any]:
    """``options`` as a dict whose names are all :data:`OPTIONS` (``objects=False``: none of
    :data:`OBJECT_OPTIONS`, for a source of plain values such as a TOML file); a ConfigError
    naming ``where``, the first unknown name and the known ones otherwise."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where} must be a dict {{option: value}} of check options, got "
                          f"{type(options).__name__}")
    known = [k for k in OPTIONS if objects or k not in OBJECT_OPTIONS]
    for name in options:
        if name not in known:
            hint = " (a data set, given from Python only)" if name in OPTIONS else ""
            raise ConfigError(f"{where}: unknown check option {name!r}{hint}; expected one of "
                              f"{', '.join(known)}")
    return dict(options)
