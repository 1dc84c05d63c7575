"""The fixed "evil twin" assignments of training (SPEC §2.4, §3 "twin" variant).

Both are fixed at construction and never change in training:

- :class:`PermutationTwins` — image ``i``'s twin is image ``perm[i]`` for a uniformly random
  derangement ``perm`` (:func:`derangement`; no fixed point, not necessarily an involution).
- :class:`NoiseTwins` — image ``i``'s twin is Gaussian noise with a given mean and std, generated
  on demand from ``(seed, i)`` alone, so it is the same at every epoch, for every batch composition,
  and never needs storing; :meth:`NoiseTwins.matched` takes the data set's pixel moments
  (:func:`empirical_moments`).

The group actions the invariance checks apply are in :mod:`ampcheck.data.transforms`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, InputError
from .transforms import as_int, as_seed

__all__ = ["derangement", "PermutationTwins", "NoiseTwins", "empirical_moments"]


# --------------------------------------------------------------------------------------------
# permutation twins


def derangement(n: int, seed: int) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` with no fixed point, ``(n,)`` int64.

    Rejection sampling: draw uniform permutations from ``np.random.default_rng(seed)`` until one
    has no fixed point (about ``e`` draws on average; at most 2 on average for ``n = 2``).
    Conditioning a uniform distribution on an event keeps it uniform over the event, so every
    derangement is equally likely. ``n = 0`` gives an empty array; ``n = 1`` has no derangement.
    """
    n = as_int(n, "n")
    seed = as_seed(seed)
    if n < 0:
        raise ConfigError(f"derangement size n must be >= 0, got {n}")
    if n == 1:
        raise ConfigError("a single image cannot have a twin: there is no derangement of 1 element")
    rng = np.random.default_rng(seed)
    identity = np.arange(n, dtype=np.int64)
    while True:
        perm = rng.permutation(n).astype(np.int64)
        if not np.any(perm == identity):
            return perm


def _index_array(indices: Any) -> np.ndarray:
    """Indices (int, sequence, numpy array or torch tensor) as an int64 numpy array."""
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    arr = np.asarray(indices)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ConfigError(f"indices must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


class PermutationTwins:
    """Image ``i``'s twin is image ``permutation[i]``, for a fixed random derangement.

    The permutation is drawn once at construction (:func:`derangement` of ``n`` with ``seed``) and
    is read-only afterwards.
    """

    def __init__(self, n: int, seed: int) -> None:
        self._n = as_int(n, "n")
        self._seed = as_seed(seed)
        self._perm = derangement(self._n, self._seed)
        self._perm.setflags(write=False)

    @property
    def n(self) -> int:
        return self._n

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def permutation(self) -> np.ndarray:
        """The derangement, ``(n,)`` int64, read-only."""
        return self._perm

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"PermutationTwins(n={self._n}, seed={self._seed})"

    def twin_index(self, indices: Any) -> Any:
        """The twin of each index: an int for an int, a tensor (same device) for a tensor,
        else an int64 numpy array of the same shape."""
        arr = _index_array(indices)
        if arr.size and (arr.min() < 0 or arr.max() >= self._n):
            raise IndexError(
                f"twin indices must lie in [0, {self._n}), got values in [{arr.min()}, {arr.max()}]"
            )
        out = self._perm[arr]
        if isinstance(indices, torch.Tensor):
            return torch.from_numpy(out).to(indices.device)
        if isinstance(indices, int | np.integer):
            return int(out)
        return out

    def state_dict(self) -> dict[str, Any]:
        """``n``, ``seed`` and the permutation as an int64 tensor (a tensor, not a numpy array, so
        that ``torch.load(..., weights_only=True)`` accepts it)."""
        return {"kind": "permutation", "n": self._n, "seed": self._seed,
                "permutation": torch.from_numpy(np.array(self._perm))}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PermutationTwins:
        """Restore the exact stored permutation (not re-drawn, so it survives numpy upgrades)."""
        try:
            n, seed, perm = state["n"], state["seed"], state["permutation"]
        except (KeyError, TypeError) as exc:
            raise InputError(f"not a PermutationTwins state dict (missing {exc})") from None
        self = cls.__new__(cls)
        self._n, self._seed = as_int(n, "n"), as_seed(seed)
        if isinstance(perm, torch.Tensor):
            perm = perm.detach().cpu().numpy()
        perm = np.array(perm, dtype=np.int64)
        ok = perm.shape == (self._n,) and np.array_equal(np.sort(perm), np.arange(self._n))
        if not ok or np.any(perm == np.arange(self._n)):
            raise InputError(
                f"stored twin permutation is not a derangement of {self._n} elements"
            )
        perm.setflags(write=False)
        self._perm = perm
        return self


# --------------------------------------------------------------------------------------------
# noise twins

_NOISE_STREAM_TAG = 0x6E6F6973  # "nois": keeps NoiseTwins' keys apart from other uses of a seed
_NOISE_FORMAT = "philox-counter-v1"


def _noise_key(seed: int) -> np.ndarray:
    return np.random.SeedSequence([seed, _NOISE_STREAM_TAG]).generate_state(2, np.uint64)


class NoiseTwins:
    """Matched-noise twins: image ``i``'s twin is ``mean + std * N(0, 1)`` noise of ``shape``.

    Twin ``i`` is drawn from a Philox generator with a key derived from ``seed`` and counter
    ``(0, i, 0, 0)``, so it depends on ``(seed, i)`` only — the same at every epoch, whatever the
    batch — and no twin is ever stored. Streams of different indices cannot overlap (each image
    uses far fewer than ``2**64`` counter blocks).
    """

    def __init__(self, shape: int | tuple[int, int], mean: float, std: float, seed: int) -> None:
        if isinstance(shape, int | np.integer) and not isinstance(shape, bool):
            shape = (int(shape), int(shape))
        if not isinstance(shape, tuple | list) or len(shape) != 2:
            raise ConfigError(f"noise twin shape must be (D, D), got {shape!r}")
        shape = (as_int(shape[0], "shape[0]"), as_int(shape[1], "shape[1]"))
        if min(shape) <= 0:
            raise ConfigError(f"noise twin shape must be positive, got {shape}")
        try:
            mean, std = float(mean), float(std)
        except (TypeError, ValueError):
            raise ConfigError(f"mean and std must be numbers, got {mean!r}, {std!r}") from None
        if not math.isfinite(mean):
            raise ConfigError(f"noise twin mean must be finite, got {mean}")
        if not (math.isfinite(std) and std > 0):
            raise ConfigError(f"noise twin std must be finite and > 0, got {std}")
        self._shape, self._mean, self._std = shape, mean, std
        self._seed = as_seed(seed)
        self._key = _noise_key(self._seed)

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def std(self) -> float:
        return self._std

    @property
    def seed(self) -> int:
        return self._seed

    def __repr__(self) -> str:
        return (f"NoiseTwins(shape={self._shape}, mean={self._mean:.6g}, std={self._std:.6g}, "
                f"seed={self._seed})")

    def twins(self, indices: Any) -> np.ndarray:
        """The twins of ``indices`` (int or ``(B,)``), float32 ``(*indices.shape, D, D)``."""
        idx = _index_array(indices)
        if idx.size and idx.min() < 0:
            raise IndexError(f"twin indices must be >= 0, got {idx.min()}")
        out = np.empty((idx.size, *self._shape), dtype=np.float32)
        # One bit generator per call (thread safe); its state is reset for every index.
        bitgen = np.random.Philox(key=self._key)
        gen = np.random.Generator(bitgen)
        empty = np.zeros(4, dtype=np.uint64)
        for b, i in enumerate(idx.ravel().tolist()):  # per image, not per pixel
            bitgen.state = {
                "bit_generator": "Philox",
                "state": {"counter": np.array([0, i, 0, 0], dtype=np.uint64), "key": self._key},
                "buffer": empty, "buffer_pos": 4, "has_uint32": 0, "uinteger": 0,
            }
            gen.standard_normal(out=out[b], dtype=np.float32)
        out *= np.float32(self._std)
        out += np.float32(self._mean)
        return out.reshape(*idx.shape, *self._shape)

    def twins_torch(self, indices: Any, device: torch.device | str | None = None) -> torch.Tensor:
        """As :meth:`twins`, as a float32 tensor on ``device`` (default: the indices' device, else
        CPU). Values are generated on the CPU, so they are identical on every device."""
        if device is None and isinstance(indices, torch.Tensor):
            device = indices.device
        return torch.from_numpy(self.twins(indices)).to(device)

    def state_dict(self) -> dict[str, Any]:
        """Plain ints, floats and strings: the twins themselves are regenerated, never stored."""
        return {"kind": "noise", "format": _NOISE_FORMAT, "shape": self._shape,
                "mean": self._mean, "std": self._std, "seed": self._seed}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> NoiseTwins:
        try:
            fmt = state.get("format", _NOISE_FORMAT)
            args = (tuple(state["shape"]), state["mean"], state["std"], state["seed"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"not a NoiseTwins state dict (missing {exc})") from None
        if fmt != _NOISE_FORMAT:
            raise InputError(f"noise twins stored with generator format {fmt!r}; this version "
                             f"of ampcheck generates {_NOISE_FORMAT!r}")
        return cls(*args)

    @classmethod
    def matched(cls, images_or_stack: Any, seed: int, sample: int | None = None) -> NoiseTwins:
        """Twins with the empirical pixel mean and std of ``images_or_stack`` (see
        :func:`empirical_moments`; ``sample`` images chosen with ``seed`` if given)."""
        mean, std = empirical_moments(images_or_stack, sample=sample, seed=seed)
        if std == 0:
            raise InputError("the images have zero pixel variance: matched noise is undefined")
        first = _to_numpy(images_or_stack[np.arange(1)])
        return cls(tuple(first.shape[-2:]), mean, std, seed)


# --------------------------------------------------------------------------------------------
# empirical moments

_CHUNK_PIXELS = 1 << 22  # pixels per chunk in empirical_moments (32 MiB as float64)


def _to_numpy(batch: Any) -> np.ndarray:
    if isinstance(batch, torch.Tensor):
        return batch.detach().cpu().numpy()
    return np.asarray(batch)


def empirical_moments(images_or_stack: Any, sample: int | None = None,
                      seed: int = 0) -> tuple[float, float]:
    """Pixel mean and standard deviation over all pixels of all images, ``(mean, std)``.

    ``images_or_stack``: a ``(N, D, D)`` array / tensor, or any object with ``len()`` whose
    indexing with an int64 index array returns a ``(B, D, D)`` array (e.g. a memory-mapped stack).
    ``sample``: use a random subset of that many images, chosen with ``seed`` (all images when
    ``None`` or ``>= N``). Images are read in chunks of about ``2**22`` pixels and combined in
    float64 (Chan et al.'s pairwise update), so memory stays bounded. ``std`` is the population
    standard deviation (``ddof=0``).
    """
    try:
        n = len(images_or_stack)
    except TypeError:
        raise ConfigError(
            f"expected images (N, D, D) or a stack with len(), got {type(images_or_stack).__name__}"
        ) from None
    if n == 0:
        raise InputError("cannot compute pixel moments of an empty image set")
    seed = as_seed(seed)
    if sample is None:
        idx = np.arange(n, dtype=np.int64)
    else:
        sample = as_int(sample, "sample")
        if sample <= 0:
            raise ConfigError(f"sample must be a positive number of images, got {sample}")
        if sample >= n:
            idx = np.arange(n, dtype=np.int64)
        else:
            idx = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    is_tensor = isinstance(images_or_stack, torch.Tensor)

    def read(chunk: np.ndarray) -> np.ndarray:
        key = torch.from_numpy(chunk) if is_tensor else chunk
        batch = _to_numpy(images_or_stack[key])
        if batch.ndim < 2 or batch.shape[0] != len(chunk):
            raise InputError(f"indexing the images with {len(chunk)} indices returned shape "
                             f"{batch.shape}; expected ({len(chunk)}, D, D)")
        return batch

    first = read(idx[:1])
    per_chunk = max(1, _CHUNK_PIXELS // max(1, first[0].size))
    count, mean, m2 = 0, 0.0, 0.0
    for start in range(0, len(idx), per_chunk):
        batch = first if start == 0 and per_chunk == 1 else read(idx[start:start + per_chunk])
        a = batch.astype(np.float64, copy=False)
        c = a.size
        if c == 0:
            continue
        m = float(a.mean())
        s = float(np.square(a - m).sum())
        if not (math.isfinite(m) and math.isfinite(s)):
            raise InputError("the images contain non-finite pixel values (NaN or inf)")
        total = count + c
        delta = m - mean
        mean += delta * c / total
        m2 += s + delta * delta * count * c / total
        count = total
    if count == 0:
        raise InputError("cannot compute pixel moments of images with no pixels")
    return mean, math.sqrt(m2 / count)
