"""What the checks may ask of a data set and of a model: written contracts (torch-free).

A check calls only what a contract here names. Optional parts (ground-truth volumes, decoded
volumes) are *capabilities*: declared once, read from one frozen record, as scikit-learn's
estimator ``Tags``. A check never follows a private attribute of a data set (its stack's path
to a manifest on disk) nor guesses with ``hasattr`` what a model can do; a VAE given through
the public protocol gets every metric its declared capabilities allow, as ampcheck's own models
do.

* :class:`Dataset`: what every data set serves (``len``, raw ``images``, model-ready
  ``get_batch``, ``truth``, views); optional :class:`TruthVolumes` (ground-truth maps at known
  conformations) and :class:`NoiseResampling` (its clean images under fresh noise);
  :func:`data_capabilities` reads them.
* :class:`VAE`: any VAE, tensors in and out (``encode``, ``recon_loss``); optional
  :class:`VolumeDecoder` (``decode_volume``); :func:`model_capabilities` reads both.
* :class:`CheckableModel`: the data-level interface the checks call, which ampcheck's trained
  models have and :class:`~ampcheck.checks.subject.ProtocolModel` gives any :class:`VAE`; it
  carries its :class:`ModelCapabilities`.

Array annotations name torch only under ``TYPE_CHECKING``: importing the contracts (to read a
report, to type a user's model) never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["CheckableModel", "DataCapabilities", "Dataset", "ModelCapabilities",
           "NoiseResampling", "TruthVolume",
           "TruthVolumes", "VAE", "VolumeDecoder", "data_capabilities", "missing_members",
           "model_capabilities"]

Indices = Sequence[int] | np.ndarray


# ----------------------------------------------------------------------------- data sets
@dataclass(frozen=True)
class TruthVolume:
    """A ground-truth volume at one conformation: the continuous coordinate ``z_continuous``
    and class ``z_class`` of the per-image truth, and the real-space map ``volume (D, D, D)``
    (indexed ``[z, y, x]``, on the images' pixel grid)."""

    z_continuous: float
    z_class: int
    volume: np.ndarray


@runtime_checkable
class Dataset(Protocol):
    """A data set as the checks use it (``ParticleDataset`` and ``MnistDataset`` have it).

    * ``len(data)``: the number of images; ``indices``: their positions ``(n,)`` in the full
      data set (a view keeps them);
    * ``images(idx) -> (B, D, D)`` float32: raw real-space images, before any preprocessing
      (what a transform under test acts on);
    * ``get_batch(idx) -> dict``: what a model trains on: ``y`` (the preprocessed images),
      ``index`` and, for cryo-EM, ``rot (B, 3, 3)``, ``trans (B, 2)`` pixels, ``ctf (B, 9)``;
    * ``preprocess(images)``: raw images to ``y`` (for transformed copies and noise twins);
    * ``truth``: per-image ground truth ``{name: (n, ...)}`` (``z_continuous``, ``z_class``),
      empty when unknown;
    * ``subset(idx)`` and ``split(fraction, seed)``: views sharing everything else;
    * ``source``: which data the images are, in words (reports and caches name it).

    A class attribute ``family`` (``"cryoem"``, ``"mnist"``) says what kind of images these
    are (read by :func:`ampcheck.kinds.data_kind`); it decides defaults such as which shifts
    the invariance check probes.
    """

    @property
    def indices(self) -> np.ndarray: ...

    @property
    def truth(self) -> Mapping[str, np.ndarray]: ...

    @property
    def source(self) -> str: ...

    def __len__(self) -> int: ...

    def images(self, indices: Indices) -> np.ndarray: ...

    def get_batch(self, indices: Indices) -> dict[str, Any]: ...

    def preprocess(self, imgs: Any) -> Any: ...

    def subset(self, indices: Indices) -> Dataset: ...

    def split(self, heldout_fraction: float, seed: int | None = None
              ) -> tuple[Dataset, Dataset]: ...


@runtime_checkable
class TruthVolumes(Protocol):
    """Optional: the data set knows ground-truth volumes at some conformations (an ampcheck
    synthetic data set does; real data do not). ``truth_volumes()`` returns them, an empty
    tuple when there are none; ``has_truth_volumes()`` says whether there are any without
    reading them (a map is megabytes: it is read only when a check compares volumes)."""

    def has_truth_volumes(self) -> bool: ...

    def truth_volumes(self) -> tuple[TruthVolume, ...]: ...


@runtime_checkable
class NoiseResampling(Protocol):
    """Optional: the data set can show a model the same clean particle (same pose, CTF and
    conformation) under fresh noise at its own noise level. ``noise_draw(draw)`` is a view of
    the same images whose ``images`` and ``get_batch`` serve the clean images plus the noise of
    draw ``draw`` (reproducible: the same draw gives the same images, whatever the batch);
    ``resample_noise_problem()`` is None where it can, else why not, in one line (an ampcheck
    synthetic data set can; real data cannot)."""

    def resample_noise_problem(self) -> str | None: ...

    def noise_draw(self, draw: int) -> Dataset: ...


@dataclass(frozen=True)
class DataCapabilities:
    """What a data set can give beyond the :class:`Dataset` contract, read once.

    Attributes:
        truth_volumes: ground-truth volumes exist (``data.has_truth_volumes()``), so decoded
            volumes can be compared with the truth.
        poses: its batches carry poses (``rot``), so latents can be compared with them.
        noise_resampling: it re-noises its clean images (:class:`NoiseResampling`).
    """

    truth_volumes: bool = False
    poses: bool = False
    noise_resampling: bool = False


def data_capabilities(data: Any) -> DataCapabilities:
    """The :class:`DataCapabilities` of ``data``: whether it implements :class:`TruthVolumes`
    and has a volume (no volume is read to know it), whether its first batch carries poses,
    and whether it implements :class:`NoiseResampling` and can."""
    volumes = isinstance(data, TruthVolumes) and data.has_truth_volumes()
    poses = len(data) > 0 and "rot" in data.get_batch([0])
    renoise = isinstance(data, NoiseResampling) and data.resample_noise_problem() is None
    return DataCapabilities(truth_volumes=bool(volumes), poses=bool(poses),
                            noise_resampling=bool(renoise))


def missing_members(obj: Any, protocol: type) -> list[str]:
    """The members of ``protocol`` (:class:`Dataset`, :class:`VAE`, ...) that ``obj`` lacks,
    for an error message that names them."""
    members = sorted(n for n in vars(protocol) if not n.startswith("_") or n == "__len__")
    return [n for n in members if getattr(obj, n, None) is None]


# ----------------------------------------------------------------------------- models
@runtime_checkable
class VAE(Protocol):
    """Any VAE, as ampcheck needs it (tensors in, tensors out).

    ``x`` is a batch of raw images ``(B, D, D)`` (float32, as the data set's ``images``
    returns them, after any transform under test). Models whose methods take a second argument
    ``meta`` receive the batch's pose and CTF too (``rot (B, 3, 3)``, ``trans (B, 2)`` pixels,
    ``ctf (B, 9)``, ``index (B,)``), as a cryo-EM decoder needs them.

    * ``encode(x) -> (mu, logvar)``, each ``(B, zdim)``;
    * ``recon_loss(x, z) -> (B,)``: the per-image reconstruction loss (negative
      log-likelihood up to a constant), differentiable in ``z``.

    An optional attribute ``kl_weight`` (default 1) scales the KL term against this loss, so
    that ``-(recon_loss + kl_weight * KL)`` is the model's ELBO. A cryo-EM VAE that also has
    ``decode_volume`` (:class:`VolumeDecoder`) gets the volume metrics of the checks.
    """

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def recon_loss(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class VolumeDecoder(Protocol):
    """Optional: ``decode_volume(z) -> (D, D, D)``, the real-space volume (indexed
    ``[z, y, x]``, numpy or torch) that the decoder describes at one latent ``z (zdim,)``, on
    the images' pixel grid and in the units of the data (as ``cryodrgn eval_vol`` writes it)."""

    def decode_volume(self, z: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelCapabilities:
    """What a model can do beyond encoding and its reconstruction loss.

    Attributes:
        decode_volume: it decodes a volume at a latent (:class:`VolumeDecoder`), so the
            checks compare decoded volumes (invariance, lookup-table agreement).
    """

    decode_volume: bool = False


def model_capabilities(model: Any) -> ModelCapabilities:
    """The :class:`ModelCapabilities` of a :class:`VAE` (whether it is a
    :class:`VolumeDecoder`)."""
    return ModelCapabilities(decode_volume=isinstance(model, VolumeDecoder))


class CheckableModel(Protocol):
    """The data-level interface checks call: on images ``indices`` of a :class:`Dataset`, in
    batches. ``TrainedModel`` has it; ``ProtocolModel`` wraps a :class:`VAE` into it.

    * ``encode(data, indices, transform) -> (mu, logvar)`` numpy ``(B, zdim)``, after
      ``transform`` of the raw images;
    * ``recon_loss(data, indices, z) -> (B,)`` and ``recon_closure(data, indices)``: the same,
      differentiable in ``z``;
    * ``kl_scale``: the weight of the KL term against ``recon_loss``;
    * ``capabilities``: its :class:`ModelCapabilities`, and ``decode_volume(z)`` where they
      say so.
    """

    @property
    def capabilities(self) -> ModelCapabilities: ...

    @property
    def kl_scale(self) -> float: ...

    def encode(self, data: Dataset, indices: Indices | None = None,
               transform: Callable | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def recon_loss(self, data: Dataset, indices: Indices, z: np.ndarray) -> np.ndarray: ...

    def recon_closure(self, data: Dataset, indices: Indices
                      ) -> Callable[[torch.Tensor], torch.Tensor]: ...

    def decode_volume(self, z: np.ndarray) -> np.ndarray: ...
