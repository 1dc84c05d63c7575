"""The nuisance variables a cryo-EM decoder is given, as features that respect their geometry.

A pose ``R`` in cryoDRGN's convention (:mod:`ampcheck.cryoem.rotations`: the image samples
the volume's transform on the plane spanned by the rows ``R[0]``, ``R[1]``) splits into

* the **viewing direction** ``v = R[2]``, a unit vector (a point on the sphere: its three
  coordinates, never two Euler angles, which tear the sphere at the poles);
* the **in-plane angle** ``psi = atan2(R[1, 2], R[0, 2])``: rotating the image in its plane
  by ``a`` left-multiplies ``R`` by a rotation about z, which adds ``a`` to ``psi`` and leaves
  ``v`` alone. An angle is a point on the circle: its features are ``cos(k psi)``,
  ``sin(k psi)``, ``k = 1..4`` (the fourth harmonic sees a dependence of period 90°, the
  one an encoder invariant to 90° rotations may keep). Undefined where ``v`` is (anti)parallel
  to z; those few images get ``psi = 0``;
* the **shifts** ``(tx, ty)`` in pixels; the **defocus**, the mean of ``dfu`` and ``dfv``
  in µm.

:func:`nuisance_features` returns each variable's features for a linear model (the geometric
coordinates and their squares and products, so that a quadratic dependence is linear in
them) and for a nearest-neighbour model (the geometric coordinates alone, whose Euclidean
distance is the chord distance on the circle or sphere), or the reason it cannot be measured
(absent, or constant: poses without in-plane information, a CTF without defocus).
This module is numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["VARIABLES", "Features", "in_plane_angle", "nuisance_features", "viewing_direction"]

#: The nuisance variables, in the order reports list them.
VARIABLES = ("in_plane", "view", "shift", "defocus")

_CONSTANT_SPREAD = 1e-6  # below this standard deviation a variable is constant


@dataclass(frozen=True)
class Features:
    """One nuisance variable's features ``(n, k)``: ``linear`` for a linear regression,
    ``knn`` for a nearest-neighbour regression (geometric coordinates)."""

    linear: np.ndarray
    knn: np.ndarray


def viewing_direction(rot: np.ndarray) -> np.ndarray:
    """``(n, 3)`` unit viewing directions (the third rows) of poses ``rot (n, 3, 3)``."""
    v = np.asarray(rot, dtype=np.float64).reshape(-1, 3, 3)[:, 2]
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def in_plane_angle(rot: np.ndarray) -> np.ndarray:
    """``(n,)`` in-plane angles ``psi`` in radians, in ``(-pi, pi]``, of poses ``rot``."""
    r = np.asarray(rot, dtype=np.float64).reshape(-1, 3, 3)
    return np.arctan2(r[:, 1, 2], r[:, 0, 2])


def _quadratic(x: np.ndarray) -> np.ndarray:
    """``x`` with its squares and pairwise products appended."""
    i, j = np.triu_indices(x.shape[1])
    return np.concatenate([x, x[:, i] * x[:, j]], axis=1)


def _constant(x: np.ndarray) -> bool:
    return bool(np.all(np.std(x, axis=0) < _CONSTANT_SPREAD))


def nuisance_features(rot: np.ndarray | None, trans: np.ndarray | None,
                      ctf: np.ndarray | None) -> dict[str, Features | str]:
    """Each of :data:`VARIABLES` -> its :class:`Features`, or why it cannot be measured.

    Args:
        rot: ``(n, 3, 3)`` poses, or None. trans: ``(n, 2)`` shifts in pixels, or None.
        ctf: ``(n, 9)`` CTF rows ``[D, apix, dfu, dfv, dfang, volt, cs, w, phase]``, or None.
    """
    out: dict[str, Features | str] = {}
    if rot is None:
        out["in_plane"] = out["view"] = "the data have no poses"
    else:
        psi = in_plane_angle(rot)
        if _constant(np.column_stack([np.cos(psi), np.sin(psi)])):
            out["in_plane"] = ("the poses carry no in-plane information (one in-plane angle "
                               "for every image)")
        else:
            k = np.arange(1, 5)
            harmonics = np.concatenate([np.cos(psi[:, None] * k), np.sin(psi[:, None] * k)],
                                       axis=1)
            out["in_plane"] = Features(harmonics, harmonics[:, [0, 4]])
        v = viewing_direction(rot)
        out["view"] = ("every image has the same viewing direction" if _constant(v)
                       else Features(_quadratic(v), v))
    if trans is None:
        out["shift"] = "the poses carry no shifts"
    else:
        t = np.asarray(trans, dtype=np.float64).reshape(-1, 2)
        out["shift"] = ("every image has the same shift" if _constant(t)
                        else Features(_quadratic(t), t))
    if ctf is None:
        out["defocus"] = "the data have no CTF"
    else:
        c = np.asarray(ctf, dtype=np.float64).reshape(len(ctf), -1)
        if c.shape[1] < 4:
            out["defocus"] = "the CTF has no defocus columns"
        else:
            d = (0.5 * (c[:, 2] + c[:, 3]) / 1e4)[:, None]  # Å -> µm
            out["defocus"] = ("the CTF has no defocus (one value for every image)"
                              if _constant(d) or not np.isfinite(d).all()
                              else Features(_quadratic(d), d))
    return out
