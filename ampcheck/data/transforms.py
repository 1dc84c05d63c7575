"""Exact group actions on images: the transforms the invariance checks apply.

Group actions on ``(..., D, D)`` numpy arrays or torch tensors (the result has the input's type):

- :func:`roll` — circular shift by ``dy`` rows (down) and ``dx`` columns (right); the paper's
  "shift one pixel to the right, rightmost column rolled over to the leftmost" is ``roll(x, dx=1)``.
- :func:`rot90` — rotation by ``k * 90°`` counter-clockwise as displayed with row 0 at the top
  (``np.rot90``'s direction). With ``center="fourier"`` (the default) it rotates about pixel
  ``(D//2, D//2)``, the origin of the centred DFT (:func:`ampcheck.cryoem.fft.fft2_center`) and the
  particle centre of cryo-EM images, so the centred DFT of the rotated image is exactly the rotated
  centred DFT. With ``center="geometric"`` it rotates about ``((D-1)/2, (D-1)/2)``, i.e. plain
  ``np.rot90`` / ``torch.rot90``. For odd ``D`` the two agree; for even ``D`` they differ by a
  one-pixel roll.

Both rotations satisfy the same conjugation law with shifts (any rotation about a lattice or
half-lattice point is an affine map of ``Z_D^2`` whose linear part is the 90° rotation ``R``)::

    rot90(roll(x, dy, dx), k=1) == roll(rot90(x, k=1), dy=-dx, dx=dy)      # R(dy, dx) = (-dx, dy)

for either centre; only ``"fourier"`` commutes with the centred DFT without a phase factor.

:class:`Transform` names one action (``"roll(0,1)"``); :func:`parse_transform` reads the
spellings users give (``"roll:1"``, ``"rot90:1"``). The fixed "evil twin" assignments of
training are in :mod:`ampcheck.data.twins`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..errors import ConfigError

__all__ = [
    "roll",
    "rot90",
    "Transform",
    "parse_transform",
    "DEFAULT_TRANSFORMS",
    "as_int",
    "as_seed",
]

Array = np.ndarray | torch.Tensor
Center = Literal["fourier", "geometric"]


# --------------------------------------------------------------------------------------------
# argument checking


def as_int(value: Any, name: str) -> int:
    """``value`` as an ``int`` if it is a Python or numpy integer (not a bool); else a
    :class:`ConfigError` naming the argument ``name``. Shared with :mod:`ampcheck.data.twins`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def as_seed(seed: Any) -> int:
    """``seed`` as a non-negative ``int`` (:func:`as_int`), else a :class:`ConfigError`."""
    seed = as_int(seed, "seed")
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    return seed


def _check_images(images: Any, fn: str, square: bool) -> None:
    if not isinstance(images, np.ndarray | torch.Tensor):
        raise ConfigError(
            f"{fn}() expects a numpy array or torch tensor of shape (..., D, D), "
            f"got {type(images).__name__}"
        )
    if images.ndim < 2:
        raise ConfigError(f"{fn}() expects images of shape (..., D, D), got {tuple(images.shape)}")
    if square and images.shape[-1] != images.shape[-2]:
        raise ConfigError(
            f"{fn}() expects square images (..., D, D), got {tuple(images.shape)}"
        )


# --------------------------------------------------------------------------------------------
# group actions


def roll(images: Array, dy: int = 0, dx: int = 0) -> Array:
    """Circular shift of ``(..., H, W)`` images by ``dy`` rows down and ``dx`` columns right.

    ``out[..., i, j] = images[..., (i - dy) % H, (j - dx) % W]``. Shifts may be negative or larger
    than the image. Returns a new array / tensor of the input's type, dtype and device.
    """
    _check_images(images, "roll", square=False)
    dy, dx = as_int(dy, "dy"), as_int(dx, "dx")
    if isinstance(images, torch.Tensor):
        return torch.roll(images, shifts=(dy, dx), dims=(-2, -1))
    return np.roll(images, (dy, dx), axis=(-2, -1))


def _fourier_offset(k: int, D: int) -> tuple[int, int]:
    # Rotating about D//2 = plain rot90 (about (D-1)/2) followed by this roll. For even D the
    # two centres are half a pixel apart on each axis: rot90 by 90° must then move the image one
    # row down, by 180° one row down and one column right, by 270° one column right.
    s = 2 * (D // 2) - (D - 1)  # 1 for even D, 0 for odd D
    return ((0, 0), (s, 0), (s, s), (0, s))[k]


def rot90(images: Array, k: int = 1, center: Center = "fourier") -> Array:
    """Rotate ``(..., D, D)`` images by ``k * 90°`` counter-clockwise (as displayed, row 0 on top).

    ``center="fourier"`` (default): about pixel ``(D//2, D//2)``, which stays fixed:
    for ``k = 1``, ``out[..., i, j] = images[..., j, (2*(D//2) - i) % D]``. This is the origin of
    the centred DFT, so ``fft2_center(rot90(x, k)) == rot90(fft2_center(x), k)`` exactly.
    ``center="geometric"``: about ``((D-1)/2, (D-1)/2)``, i.e. plain ``np.rot90`` over the last two
    axes: for ``k = 1``, ``out[..., i, j] = images[..., j, D - 1 - i]``. Its centred DFT is the
    rotated centred DFT times a linear phase (for even ``D``).

    ``k`` may be any integer (taken mod 4). Returns a new array / tensor of the input's type.
    """
    _check_images(images, "rot90", square=True)
    k = as_int(k, "k") % 4
    if center not in ("fourier", "geometric"):
        raise ConfigError(f"rot90() center must be 'fourier' or 'geometric', got {center!r}")
    if isinstance(images, torch.Tensor):
        out = torch.rot90(images, k, dims=(-2, -1))  # always a copy
    else:
        out = np.rot90(images, k, axes=(-2, -1)).copy()
    if center == "fourier":
        dy, dx = _fourier_offset(k, images.shape[-1])
        if dy or dx:
            out = roll(out, dy, dx)
    return out


# --------------------------------------------------------------------------------------------
# named transforms


@dataclass(frozen=True)
class Transform:
    """A named exact group action: ``Transform("roll", (dy, dx))`` or ``Transform("rot90", (k,))``.

    Calling it applies the action to ``(..., D, D)`` images (rot90 about the Fourier centre).
    ``name`` is ``"roll(dy,dx)"`` / ``"rot90(k)"``, which :func:`parse_transform` also accepts.
    """

    kind: Literal["roll", "rot90"]
    params: tuple[int, ...]

    def __post_init__(self) -> None:
        arity = {"roll": 2, "rot90": 1}
        if self.kind not in arity:
            raise ConfigError(f"transform kind must be 'roll' or 'rot90', got {self.kind!r}")
        params = tuple(self.params) if isinstance(self.params, tuple | list) else (self.params,)
        if len(params) != arity[self.kind]:
            shape = "(dy, dx)" if self.kind == "roll" else "(k,)"
            raise ConfigError(f"{self.kind} transform takes params {shape}, got {self.params!r}")
        params = tuple(as_int(p, f"{self.kind} parameter") for p in params)
        object.__setattr__(self, "params", params)

    @property
    def name(self) -> str:
        return f"{self.kind}({','.join(str(p) for p in self.params)})"

    def __str__(self) -> str:
        return self.name

    def __call__(self, images: Array) -> Array:
        if self.kind == "roll":
            return roll(images, *self.params)
        return rot90(images, self.params[0])

    def inverse(self) -> Transform:
        """The transform that undoes this one."""
        return Transform(self.kind, tuple(-p for p in self.params))


_INT = r"[-+]?\d+"
_SPEC_COLON = re.compile(rf"^(roll|rot90):\s*({_INT}(?:\s*,\s*{_INT})?)$")
_SPEC_PAREN = re.compile(rf"^(roll|rot90)\(\s*({_INT}(?:\s*,\s*{_INT})?)\s*\)$")


def parse_transform(spec: str | Transform) -> Transform:
    """Parse ``"roll:DX"``, ``"roll:DY,DX"``, ``"rot90:K"`` (or a name such as ``"roll(0,1)"``).

    ``"roll:1"`` is a one-pixel shift to the right (``dy=0, dx=1``). A :class:`Transform` is
    returned unchanged.
    """
    if isinstance(spec, Transform):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"a transform is given as a string such as 'roll:1', got {spec!r}")
    text = spec.strip()
    match = _SPEC_COLON.match(text) or _SPEC_PAREN.match(text)
    if match is None:
        raise ConfigError(
            f"cannot parse transform {spec!r}: expected 'roll:DX', 'roll:DY,DX' or 'rot90:K' "
            "with integer values, e.g. 'roll:1', 'roll:0,1', 'rot90:1'"
        )
    kind = match.group(1)
    values = tuple(int(v) for v in match.group(2).split(","))
    if kind == "roll" and len(values) == 1:
        values = (0, values[0])
    if kind == "rot90" and len(values) != 1:
        raise ConfigError(
            f"cannot parse transform {spec!r}: rot90 takes one integer, e.g. 'rot90:1'"
        )
    return Transform(kind, values)


#: The paper's two probes (§3.4): a one-pixel shift to the right and a 90° rotation.
DEFAULT_TRANSFORMS: tuple[Transform, ...] = (Transform("roll", (0, 1)), Transform("rot90", (1,)))
