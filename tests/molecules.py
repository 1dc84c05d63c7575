"""A particle stack of a molecule that ampcheck's generator did not make, for robustness tests.

ampcheck's synthetic data are Gaussian blobs projected exactly in Fourier space. This module
makes another kind of molecule by another route, so that a default that only suits our own
generator shows up: a solid **body** (a soft-edged ellipsoid), a **lid** (a flat ellipsoid)
that opens on a hinge by up to ±35° (``z_continuous``), and a **knob** present or absent
(``z_class``). Each image is the real-space line integral of that density, evaluated directly
at the rotated grid points of the box and summed along z (no Fourier slice, no Gaussians),
displaced in plane by a Fourier phase, multiplied by its CTF, and buried in white Gaussian noise
at the requested SNR (signal variance inside the circular mask over the noise variance). Files
follow cryoDRGN's conventions, as ``ampcheck synth`` writes them: ``particles.mrcs`` (white
particles), ``poses.pkl``, ``ctf.pkl``, ``truth.npz``; no volumes and no manifest.

    python tests/molecules.py OUT [--n 1000] [--box 32] [--snr 0.1] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ampcheck.cryoem import io
from ampcheck.cryoem.ctf import ctf_from_table
from ampcheck.cryoem.lattice import rfft_frequencies
from ampcheck.cryoem.rotations import random_rotations, rotation_about_axis

BOX_ANGSTROMS = 192.0
EDGE_ANGSTROMS = 6.0  # the width of each solid's soft edge: about one pixel at 32 px
HINGE_DEG = 35.0


def _solid(points: np.ndarray, center, semi_axes) -> np.ndarray:
    """A soft-edged ellipsoid: 1 inside, 0 outside, a logistic edge ``EDGE_ANGSTROMS`` wide."""
    u = (points - np.asarray(center)) / np.asarray(semi_axes)
    rho = np.sqrt((u**2).sum(-1))
    return 1.0 / (1.0 + np.exp(-(1.0 - rho) * np.mean(semi_axes) / EDGE_ANGSTROMS * 4))


def density(points: np.ndarray, hinge_deg: float, knob: int) -> np.ndarray:
    """The molecule's density at ``points (..., 3)`` Å for one conformation."""
    body = _solid(points, (-10, 0, 0), (38, 26, 22))
    pivot = np.array([12.0, 0.0, 16.0])
    turn = rotation_about_axis(np.array([0.0, 1.0, 0.0]), np.array([hinge_deg]))[0]
    lid_frame = (points - pivot) @ turn + pivot  # the lid turned by the hinge: R^T (p - c) + c
    lid = _solid(lid_frame, (42, 0, 20), (24, 20, 7))
    out = body + 0.8 * lid
    if knob:
        out = out + 1.2 * _solid(points, (-22, 0, -26), (11, 11, 11))
    return out


def _images(rot: np.ndarray, hinge: np.ndarray, knob: np.ndarray, D: int,
            apix: float) -> np.ndarray:
    """Projections ``(B, D, D)`` along z of the density in each pose (a Riemann sum)."""
    ax = (np.arange(D) - D / 2) * apix
    Z, Y, X = np.meshgrid(ax, ax, ax, indexing="ij")
    grid = np.stack([X, Y, Z], axis=-1).reshape(-1, 3)
    out = np.empty((len(rot), D, D))
    for i in range(len(rot)):
        body_frame = grid @ rot[i]  # the molecule's coordinates of each box point: R^T r
        out[i] = density(body_frame, hinge[i], knob[i]).reshape(D, D, D).sum(0) * apix
    return out


def write_other_molecule(out: str | Path, n: int = 1000, D: int = 32, snr: float = 0.1,
                         seed: int = 0) -> Path:
    """Write the data set (see the module docstring) to ``out``; return its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 31])
    apix = BOX_ANGSTROMS / D
    rot = random_rotations(n, rng)
    z = rng.uniform(size=n)
    knob = (rng.uniform(size=n) < 0.5).astype(np.int64)
    shift = rng.uniform(-0.04 * D, 0.04 * D, size=(n, 2))  # (dx, dy) px
    dfu = rng.uniform(10_000, 30_000, size=n)
    ctf = np.column_stack([np.full(n, D), np.full(n, apix), dfu,
                           dfu - rng.uniform(0, 500, size=n), rng.uniform(0, 180, size=n),
                           np.full(n, 300.0), np.full(n, 2.7), np.full(n, 0.1), np.zeros(n)])
    clean = _images(rot, HINGE_DEG * (2 * z - 1), knob, D, apix)
    ky, kx = rfft_frequencies(D, apix)
    freqs = np.stack(np.broadcast_arrays(kx[None, :], ky[:, None]), axis=-1).reshape(-1, 2)
    spec = np.fft.rfft2(np.fft.ifftshift(clean, axes=(-2, -1)))
    phase = np.exp(-2j * np.pi * apix * (shift[:, 0, None, None] * kx[None, None, :]
                                         + shift[:, 1, None, None] * ky[None, :, None]))
    spec *= phase * ctf_from_table(freqs, ctf).reshape(n, D, D // 2 + 1)
    clean = -np.fft.fftshift(np.fft.irfft2(spec, s=(D, D)), axes=(-2, -1))  # white particles
    ax = np.arange(D) - D // 2
    mask = np.hypot(*np.meshgrid(ax, ax, indexing="ij")) <= D / 2
    noise_std = np.sqrt(clean[:, mask].var(axis=1).mean() / snr)
    noisy = clean + noise_std * rng.standard_normal(clean.shape)
    io.write_stack(out / "particles.mrcs", noisy.astype(np.float32), apix)
    io.write_poses(out / "poses.pkl", rot.astype(np.float32), (-shift / D).astype(np.float32))
    io.write_ctf(out / "ctf.pkl", ctf.astype(np.float32))
    np.savez(out / "truth.npz", z_continuous=z, z_class=knob)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--box", type=int, default=32)
    p.add_argument("--snr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(write_other_molecule(a.out, a.n, a.box, a.snr, a.seed))
