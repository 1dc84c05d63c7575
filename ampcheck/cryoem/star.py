"""RELION ``.star`` particle files (3.0 single block, 3.1+ with ``data_optics``), read through
the ``starfile`` package, in cryoDRGN's conventions.

:func:`read_star_particles` turns a star's angles, origins and CTF columns into cryoDRGN's poses
(rotation matrices, translations in fractions of the box) and CTF rows ``(N, 9)``, as
``cryodrgn parse_pose_star`` and ``parse_ctf_star`` do; :func:`write_star` writes them back.
Which images the ``_rlnImageName`` entries name is :mod:`ampcheck.cryoem.stack`'s business.
"""

from __future__ import annotations

import linecache
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ampcheck.cryoem.poses import check_ctf, check_poses
from ampcheck.cryoem.rotations import R_from_relion, R_to_relion
from ampcheck.errors import InputError
from ampcheck.files import atomic_path

__all__ = ["StarParticles", "read_star_particles", "write_star", "read_image_names"]

PathLike = str | os.PathLike

@dataclass(frozen=True, eq=False)
class StarParticles:
    """Particles of a RELION ``.star`` file, in cryoDRGN's conventions.

    Attributes:
        image_names: ``_rlnImageName`` entries, ``000012@stack.mrcs``.
        rot: ``(N, 3, 3)`` float32 rotation matrices.
        trans: ``(N, 2)`` float32 translations in fractions of the box.
        ctf: ``(N, 9)`` float32 CTF parameters (columns as :data:`CTF_COLUMNS`).
        D: image side in pixels; apix: pixel size in Å (both of the images the star describes).
    """

    image_names: tuple[str, ...]
    rot: np.ndarray
    trans: np.ndarray
    ctf: np.ndarray
    D: int
    apix: float

    def __len__(self) -> int:
        return len(self.image_names)


_OPTICS_COLUMNS = ("rlnImagePixelSize", "rlnImageSize", "rlnVoltage", "rlnSphericalAberration",
                   "rlnAmplitudeContrast")
_REQUIRED = ("rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnDefocusU",
             "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage", "rlnSphericalAberration",
             "rlnAmplitudeContrast")


def _read_star_blocks(path: Path) -> dict[str, pd.DataFrame]:
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected a RELION .star file)")
    # starfile reads lines through the linecache module and empties that cache only after a
    # parse that succeeds: after one that fails, the next read of the same path would be
    # served the old lines, even once the file is fixed. So the cache is checked before and
    # emptied after every read.
    linecache.checkcache(str(path))
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as e:
        raise InputError(f"{path}: could not parse it as a RELION .star file ({e})") from e
    finally:
        linecache.clearcache()
    return {k: v if isinstance(v, pd.DataFrame) else pd.DataFrame([v]) for k, v in blocks.items()}


def _particle_tables(blocks: dict[str, pd.DataFrame], path: Path
                     ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The particles table (with ``rlnImageName``, one row or more) and the optics table."""
    tables = [blocks["particles"]] if "particles" in blocks else []
    found = next((df for df in tables + list(blocks.values()) if "rlnImageName" in df.columns),
                 None)
    if found is None:
        raise InputError(f"{path}: no table with an _rlnImageName column; expected a RELION "
                         "particle table (data_particles, or a single data_ block)")
    if found.empty:
        raise InputError(f"{path}: the particle table has no rows; expected one per image")
    return found, blocks.get("optics")


def read_image_names(path: Path) -> pd.Series:
    """The ``_rlnImageName`` entries (``000012@stack.mrcs``) of a star's particle table, one
    per image, in the file's order. Raises :class:`InputError` for a file that is not a RELION
    particle table, or one without rows."""
    particles, _ = _particle_tables(_read_star_blocks(path), path)
    return particles["rlnImageName"]


def _merge_optics(p: pd.DataFrame, optics: pd.DataFrame | None, path: Path) -> pd.DataFrame:
    """Copy each particle's optics-group values into ``p`` (particle values take precedence)."""
    if optics is None or optics.empty:
        return p
    p = p.copy()
    if "rlnOpticsGroup" not in p.columns or "rlnOpticsGroup" not in optics.columns:
        if len(optics) != 1:
            raise InputError(f"{path}: {len(optics)} optics groups but no _rlnOpticsGroup column "
                             "to tell them apart")
        for col in _OPTICS_COLUMNS:
            if col in optics.columns and col not in p.columns:
                p[col] = optics[col].iloc[0]
        return p
    table = optics.set_index("rlnOpticsGroup")
    twice = table.index[table.index.duplicated()]
    if len(twice):
        raise InputError(f"{path}: data_optics defines optics group {twice[0]} more than "
                         "once; expected one row per _rlnOpticsGroup")
    unknown = set(p["rlnOpticsGroup"]) - set(table.index)
    if unknown:
        raise InputError(f"{path}: particles refer to optics group(s) "
                         f"{sorted(unknown, key=str)} that data_optics does not define")
    for col in _OPTICS_COLUMNS:
        if col in table.columns and col not in p.columns:
            p[col] = p["rlnOpticsGroup"].map(table[col]).to_numpy()
    return p


def _numeric(p: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    x = pd.to_numeric(p[col], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        raise InputError(f"{path}: column _{col} has missing or non-numeric values")
    return x


def _one_value(x: np.ndarray, name: str, path: Path, rtol: float = 0.0,
               groups: pd.Series | None = None) -> float:
    """The one value of ``x`` (per particle), or an :class:`InputError` naming the optics
    groups (``groups``: each particle's ``_rlnOpticsGroup``) or the values that differ
    (``name``: plural, e.g. "pixel sizes").

    ampcheck trains on images of one size and one pixel size (a model's lattice and CTF are
    built for one box): a star whose optics groups differ in them is refused, not mixed."""
    with np.errstate(over="ignore"):  # a spread past float64's range is still a spread
        spread = np.abs(x - x[0]).max()  # x has a value: tables without rows are refused
    if spread <= rtol * abs(x[0]):
        return float(x[0])
    fix = ("select the particles of one optics group, or bring the stacks to one pixel size "
           "and image size, e.g. with `cryodrgn downsample`")
    if groups is not None:
        k = int(np.argmax(np.abs(x - x[0]) > rtol * abs(x[0])))
        a, b = groups.iloc[0], groups.iloc[k]
        raise InputError(f"{path}: optics groups {a} and {b} have different {name} ({x[0]:g} "
                         f"and {x[k]:g}); ampcheck trains on images of one image size and one "
                         f"pixel size, so expected one {name[:-1]} for the whole data set: {fix}")
    raise InputError(f"{path}: particles have different {name} ({np.unique(x)[:5]}); "
                     f"expected one {name[:-1]} for the whole data set: {fix}")


_ORIGIN_ROUNDING_PX = 0.01  # pixel and Å origins closer than this agree (values rounded)


def _origins_px(p: pd.DataFrame, apix: float, path: Path) -> np.ndarray:
    """``(N, 2)`` origins in pixels, as cryoDRGN 4.3.1's ``parse_pose_star`` reads them:
    ``_rlnOriginX/Y`` (pixels) where the star has both, else ``_rlnOriginX/YAngst`` / apix,
    else 0.

    A star with both (RELION 3.1 writes only Å; a converter may keep stale pixel columns)
    whose two disagree by more than rounding gets a warning naming both: cryoDRGN, and so
    ampcheck, train on the pixel columns."""
    columns = set(p.columns)
    pixels = angst = None
    if {"rlnOriginX", "rlnOriginY"} <= columns:
        pixels = np.stack([_numeric(p, "rlnOriginX", path), _numeric(p, "rlnOriginY", path)], 1)
    if {"rlnOriginXAngst", "rlnOriginYAngst"} <= columns:
        angst = np.stack([_numeric(p, "rlnOriginXAngst", path),
                          _numeric(p, "rlnOriginYAngst", path)], 1) / apix
    if pixels is not None and angst is not None:
        off = np.abs(pixels - angst).max(axis=1)
        if (off > _ORIGIN_ROUNDING_PX).any():
            k = int(np.argmax(off > _ORIGIN_ROUNDING_PX))
            warnings.warn(f"{path}: _rlnOriginX/Y (pixels) and _rlnOriginX/YAngst (Å, / "
                          f"{apix:g} Å/px) disagree on {int((off > _ORIGIN_ROUNDING_PX).sum())} "
                          f"particle(s), by up to {off.max():.3g} px (first: particle {k}, "
                          f"0-based, ({pixels[k, 0]:g}, {pixels[k, 1]:g}) px against "
                          f"({angst[k, 0]:g}, {angst[k, 1]:g}) px); using _rlnOriginX/Y, as "
                          "cryoDRGN's parse_pose_star does", stacklevel=3)
    if pixels is not None:
        return pixels
    return angst if angst is not None else np.zeros((len(p), 2))


def read_star_particles(path: PathLike, D: int | None = None, apix: float | None = None, *,
                        fallback_D: int | None = None,
                        fallback_apix: float | None = None) -> StarParticles:
    """Read poses and CTF of a RELION 3.0 or 3.1+ ``.star`` file, as cryoDRGN's parse scripts do.

    Angles ``(_rlnAngleRot, _rlnAngleTilt, _rlnAnglePsi)`` become rotations (:func:`R_from_relion`);
    translations ``_rlnOriginX/Y`` (pixels) or else ``_rlnOriginX/YAngst`` (Å, / apix), divided
    by ``D``, become fractions of the box (no sign flip); missing origins are 0. ``D`` and ``apix``
    (image size in pixels and Å/pixel of the images the star describes) come from the optics table
    (each particle's optics group; groups that differ in them are refused); the arguments
    override it. ``fallback_D`` / ``fallback_apix`` are used only where the star gives none (an
    old single-block file), as cryoDRGN's ``-D`` / ``--Apix``; without them such a file is
    refused, naming what to pass.
    """
    path = Path(path)
    particles, optics = _particle_tables(_read_star_blocks(path), path)
    p = _merge_optics(particles, optics, path)
    missing = [f"_{c}" for c in _REQUIRED if c not in p.columns]
    if missing:
        raise InputError(f"{path}: missing required column(s) {', '.join(missing)}")
    n = len(p)
    groups = p["rlnOpticsGroup"] if "rlnOpticsGroup" in p.columns else None
    if D is None:
        if "rlnImageSize" in p.columns:
            D = _one_value(_numeric(p, "rlnImageSize", path), "image sizes", path, 0.0, groups)
        elif fallback_D is not None:
            D = fallback_D
        else:
            raise InputError(f"{path}: no _rlnImageSize (an old single-block RELION file?); "
                             "pass D= (the image size in pixels)")
    if apix is None:
        if "rlnImagePixelSize" in p.columns:
            px = _numeric(p, "rlnImagePixelSize", path)
        elif {"rlnDetectorPixelSize", "rlnMagnification"} <= set(p.columns):  # RELION 3.0
            px = (_numeric(p, "rlnDetectorPixelSize", path) * 1e4
                  / _numeric(p, "rlnMagnification", path))
        elif fallback_apix is not None:
            px = np.array([float(fallback_apix)])
        else:
            raise InputError(f"{path}: no _rlnImagePixelSize (an old single-block RELION file?); "
                             "pass apix= (the pixel size in Å)")
        apix = _one_value(px, "pixel sizes", path, 1e-4, groups)
    if not (D >= 2 and D % 2 == 0 and apix > 0):  # D: a whole even number
        raise InputError(f"{path}: image size D = {D:g} and pixel size {apix:g} Å; expected an "
                         "even D and a positive pixel size")
    D = int(D)
    euler = np.stack([_numeric(p, c, path) for c in ("rlnAngleRot", "rlnAngleTilt",
                                                      "rlnAnglePsi")], axis=1)
    rot = R_from_relion(euler)
    with np.errstate(all="ignore"):  # an overflow is non-finite and refused by check_poses
        trans = _origins_px(p, apix, path) / D
    rot32, trans32 = check_poses(path, rot, trans, None)
    phase = _numeric(p, "rlnPhaseShift", path) if "rlnPhaseShift" in p.columns else np.zeros(n)
    ctf = np.stack([np.full(n, float(D)), np.full(n, apix),
                    *(_numeric(p, c, path) for c in ("rlnDefocusU", "rlnDefocusV",
                                                     "rlnDefocusAngle", "rlnVoltage",
                                                     "rlnSphericalAberration",
                                                     "rlnAmplitudeContrast")),
                    phase], axis=1)
    names = tuple(p["rlnImageName"].astype(str))
    return StarParticles(names, rot32, trans32, check_ctf(path, ctf, None), D, float(apix))


def write_star(path: PathLike, image_names: Sequence[str], rot: np.ndarray,
               trans: np.ndarray | None, ctf: np.ndarray, D: int, apix: float) -> None:
    """Write particles as a RELION 3.1 ``.star`` (data_optics + data_particles), atomically.

    ``rot (N, 3, 3)``; ``trans (N, 2)`` fractions of the box (written as ``_rlnOriginX/YAngst``);
    ``ctf (N, 9)`` (its voltage, cs and amplitude contrast form the optics groups; its D and apix
    columns are ignored in favour of ``D`` and ``apix``). :func:`read_star_particles` reads it back.
    """
    names = [str(s) for s in image_names]
    n = len(names)
    rot, trans = check_poses(path, np.asarray(rot), None if trans is None else np.asarray(trans),
                              n)
    ctf = check_ctf(path, np.asarray(ctf), n).astype(np.float64)
    trans = np.zeros((n, 2)) if trans is None else trans.astype(np.float64)
    with warnings.catch_warnings():  # tilt 0 or 180: any split of rot + psi is a valid answer
        warnings.filterwarnings("ignore", "Gimbal lock", UserWarning)
        euler = R_to_relion(rot.astype(np.float64))
    groups, group_of = np.unique(ctf[:, 5:8], axis=0, return_inverse=True)
    optics = pd.DataFrame({
        "rlnOpticsGroupName": [f"opticsGroup{g + 1}" for g in range(len(groups))],
        "rlnOpticsGroup": np.arange(1, len(groups) + 1),
        "rlnImagePixelSize": float(apix),
        "rlnImageSize": int(D),
        "rlnImageDimensionality": 2,
        "rlnVoltage": groups[:, 0],
        "rlnSphericalAberration": groups[:, 1],
        "rlnAmplitudeContrast": groups[:, 2],
    })
    particles = pd.DataFrame({
        "rlnImageName": names,
        "rlnAngleRot": euler[:, 0], "rlnAngleTilt": euler[:, 1], "rlnAnglePsi": euler[:, 2],
        "rlnOriginXAngst": trans[:, 0] * D * apix, "rlnOriginYAngst": trans[:, 1] * D * apix,
        "rlnDefocusU": ctf[:, 2], "rlnDefocusV": ctf[:, 3], "rlnDefocusAngle": ctf[:, 4],
        "rlnPhaseShift": ctf[:, 8],
        "rlnOpticsGroup": group_of.reshape(-1) + 1,
    })
    with atomic_path(path) as tmp:
        starfile.write({"optics": optics, "particles": particles}, tmp)
