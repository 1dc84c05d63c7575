"""The acquisition settings that every generator of particle stacks shares, and their draws.

:class:`Acquisition` holds the images' number and size, the pixel, the noise, the seed, the
shifts, the CTF ranges and the ground-truth maps' grid, and checks them once for
:class:`~ampcheck.data.synthetic.SynthConfig` (the synthetic molecule) and
:class:`~ampcheck.data.structures.AtomicSynthConfig` (atomic models), which add what their
molecule needs. :func:`draw_acquisition` draws each image's pose, shift and CTF from the seed;
:func:`noise_generator` is the stream of the images' noise.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import numpy as np

from ..cryoem.rotations import random_rotations
from ..errors import ConfigError


def is_integer(value) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Acquisition:
    """Settings of the images (units in the names), checked on construction.

    ``snr = inf`` gives noiseless images; ``max_shift_px`` None is ``0.04·D``; ``apix`` None is
    the generator's default (a subclass says which). A subclass names itself in its errors
    (``_WHAT``) and names the defocus range as its users know it (``_DEFOCUS``).
    """

    _WHAT: ClassVar[str] = "acquisition"
    _DEFOCUS: ClassVar[str] = "defocus_range_angstroms"

    n: int = 1250  # the standard size (synthetic.SIZES), ampcheck run's
    D: int = 24
    apix: float | None = None  # Å/pixel
    snr: float = 0.1
    seed: int = 0
    # the rest by name only: each generator's own fields follow these, so that a position
    # past the seed would name another field than it did before the settings were shared
    _: KW_ONLY
    max_shift_px: float | None = None  # uniform in [-m, m]²; default 0.04·D
    defocus_range_angstroms: tuple[float, float] = (10_000.0, 30_000.0)
    astigmatism_max_angstroms: float = 500.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    volume_grid: int = 5  # ground-truth maps (per class, or of a trajectory's frames)

    def bad(self, msg: str):
        """Refuse the settings: a ConfigError prefixed with what they are for."""
        raise ConfigError(f"{self._WHAT}: {msg}")

    def __post_init__(self):
        bad = self.bad
        if not is_integer(self.n) or self.n < 2:
            bad(f"n must be an integer >= 2, got {self.n!r}")
        if not is_integer(self.D) or self.D < 16 or self.D % 2:
            bad(f"box size D must be an even integer >= 16, got {self.D!r}")
        if not is_integer(self.seed) or self.seed < 0:
            bad(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.apix is not None and not self.apix > 0:
            bad(f"apix must be positive, got {self.apix}")
        if not self.snr > 0:
            bad(f"snr must be positive (inf for noiseless), got {self.snr}")
        if self.max_shift_px is not None and not 0 <= self.max_shift_px <= self.D / 8:
            bad(f"max_shift_px must be in [0, D/8 = {self.D / 8}], got {self.max_shift_px}")
        lo, hi = self.defocus_range_angstroms
        if not 0 < lo <= hi:
            bad(f"{self._DEFOCUS} must be 0 < lo <= hi, got {(lo, hi)}")
        if not 0 <= self.amplitude_contrast < 1:
            bad(f"amplitude_contrast must be in [0, 1), got {self.amplitude_contrast}")
        if not (self.voltage_kv > 0 and self.cs_mm >= 0 and self.astigmatism_max_angstroms >= 0):
            bad("voltage_kv must be positive, cs_mm and astigmatism_max_angstroms non-negative")
        if self.volume_grid < 1:
            bad(f"volume_grid must be >= 1, got {self.volume_grid}")

    @property
    def shift_px(self) -> float:
        """The largest in-plane shift in pixels."""
        return self.max_shift_px if self.max_shift_px is not None else 0.04 * self.D

    def draw(self, apix: float):
        """:func:`draw_acquisition` with these settings at pixel size ``apix`` (Å)."""
        return draw_acquisition(self.n, self.D, apix, self.seed, self.shift_px,
                                self.defocus_range_angstroms, self.astigmatism_max_angstroms,
                                self.voltage_kv, self.cs_mm, self.amplitude_contrast)


def draw_acquisition(n: int, D: int, apix: float, seed: int, shift_px: float,
                     defocus_range_angstroms: tuple[float, float],
                     astigmatism_max_angstroms: float, voltage_kv: float, cs_mm: float,
                     amplitude_contrast: float):
    """Poses ``(n, 3, 3)`` uniform on SO(3), in-plane shifts ``(n, 2)`` uniform in
    ``[−shift_px, shift_px]²``, CTF rows ``(n, 9)``, each from its own seeded stream, and the
    generator of the conformations (the fourth stream), in that order."""
    pose_rng, shift_rng, ctf_rng, conf_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    rot = random_rotations(n, pose_rng)
    shift = shift_rng.uniform(-shift_px, shift_px, size=(n, 2))
    dfu = ctf_rng.uniform(*defocus_range_angstroms, size=n)
    dfv = dfu - ctf_rng.uniform(0, astigmatism_max_angstroms, size=n)
    dfang = ctf_rng.uniform(0, 180, size=n)
    ctf = np.column_stack([
        np.full(n, D), np.full(n, apix), dfu, dfv, dfang,
        np.full(n, voltage_kv), np.full(n, cs_mm), np.full(n, amplitude_contrast),
        np.zeros(n)])
    return rot, shift, ctf, conf_rng


def noise_generator(seed: int) -> np.random.Generator:
    """The stream of the images' noise (the fifth of ``seed``'s)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(5)[4])
