"""Rotations: uniform sampling on SO(3), in-plane rotations and RELION Euler angles.

Convention (cryoDRGN's): an image of a volume ``V`` in pose ``R`` is the central slice whose
2-D frequency ``k = (kx, ky)`` samples ``V̂`` at ``R.T @ (kx, ky, 0)``, i.e. the row vector
``(kx, ky, 0) @ R``. In real space the volume is rotated so that a point ``r`` moves to
``R @ r`` before projection along z. ``x`` runs along image columns, ``y`` along rows.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

# RELION's Euler convention differs from scipy's "zxz" by these sign flips and ±90° offsets;
# the same mapping cryoDRGN uses, so that poses parsed from a .star file agree with its own.
_RELION_FLIP = np.array([[1, -1, 1], [-1, 1, -1], [1, -1, 1]], dtype=np.float64)


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3, 3)`` rotation matrices drawn uniformly (Haar measure) on SO(3)."""
    return Rotation.random(n, random_state=rng).as_matrix()


def inplane_rotation(theta_deg: np.ndarray | float) -> np.ndarray:
    """``(..., 3, 3)`` rotations by ``theta_deg`` degrees about the z (viewing) axis."""
    t = np.deg2rad(np.asarray(theta_deg, dtype=np.float64))
    c, s = np.cos(t), np.sin(t)
    out = np.zeros(t.shape + (3, 3))
    out[..., 0, 0], out[..., 0, 1] = c, -s
    out[..., 1, 0], out[..., 1, 1] = s, c
    out[..., 2, 2] = 1.0
    return out


def rotation_about_axis(axis: np.ndarray, angle_deg: np.ndarray | float) -> np.ndarray:
    """Right-handed rotations by ``angle_deg`` degrees (scalar or ``(B,)``) about ``axis``:
    ``(3, 3)`` or ``(B, 3, 3)``."""
    axis = np.asarray(axis, dtype=np.float64)
    angle = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))[..., None]
    return Rotation.from_rotvec(angle * axis / np.linalg.norm(axis)).as_matrix()


def R_from_relion(euler_deg: np.ndarray) -> np.ndarray:
    """RELION (rlnAngleRot, rlnAngleTilt, rlnAnglePsi) in degrees ``(N, 3)`` -> ``(N, 3, 3)``."""
    euler = np.array(euler_deg, dtype=np.float64).reshape(-1, 3)
    euler[:, 0] += 90.0
    euler[:, 2] -= 90.0
    return Rotation.from_euler("zxz", euler, degrees=True).as_matrix() * _RELION_FLIP


def R_to_relion(rot: np.ndarray) -> np.ndarray:
    """Inverse of :func:`R_from_relion`: ``(N, 3, 3)`` -> ``(N, 3)`` degrees in ``[-180, 180)``."""
    rot = np.asarray(rot, dtype=np.float64).reshape(-1, 3, 3)
    euler = Rotation.from_matrix(rot * _RELION_FLIP).as_euler("zxz", degrees=True)
    euler[:, 0] -= 90.0
    euler[:, 2] += 90.0
    return (euler + 180.0) % 360.0 - 180.0
