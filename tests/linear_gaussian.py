"""A linear-Gaussian model whose exact posterior is known, and a data set it generates.

Images ``x = W z + s e`` (flattened ``(D, D)``), ``z ~ N(0, I_d)``, ``e ~ N(0, I)``. The
exact posterior is ``N(m, Sigma)`` with ``Sigma = (I + W^T W / s²)^-1`` and
``m = Sigma W^T x / s²``: :class:`ExactPosterior` encodes it (``scale`` multiplies its
variance, to make it overconfident or underconfident on purpose). :class:`LinearGaussianData`
follows :class:`ampcheck.contracts.Dataset` and :class:`~ampcheck.contracts.NoiseResampling`:
a third party's data set that re-noises its clean images, with ``z_continuous`` its first
latent coordinate. The noise of draw ``k`` of image ``i`` is seeded by ``(k, i)`` alone.
"""

from __future__ import annotations

import copy

import numpy as np
import torch


class LinearGaussianData:
    family = "linear-gaussian"

    def __init__(self, n: int = 256, D: int = 8, d: int = 2, s: float = 1.0,
                 w_scale: float = 0.35, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.D, self.s, self.seed = D, float(s), seed
        self.W = rng.normal(size=(D * D, d)) * w_scale
        self.z = rng.normal(size=(n, d))
        self.clean = (self.z @ self.W.T).reshape(n, D, D)
        self._noise = rng.normal(size=(n, D, D))
        self._idx = np.arange(n)
        self._draw: int | None = None

    # the Dataset contract
    @property
    def indices(self) -> np.ndarray:
        return self._idx.copy()

    @property
    def truth(self) -> dict[str, np.ndarray]:
        return {"z_continuous": self.z[self._idx, 0]}

    @property
    def source(self) -> str:
        return f"linear-Gaussian data (seed {self.seed})"

    def __len__(self) -> int:
        return len(self._idx)

    def images(self, indices) -> np.ndarray:
        orig = self._idx[np.asarray(indices, dtype=np.int64)]
        if self._draw is None:
            noise = self._noise[orig]
        else:
            noise = np.stack([np.random.default_rng([self.seed, self._draw, int(i)])
                              .standard_normal((self.D, self.D)) for i in orig])
        return (self.clean[orig] + self.s * noise).astype(np.float32)

    def get_batch(self, indices) -> dict:
        orig = self._idx[np.asarray(indices, dtype=np.int64)]
        return {"y": torch.from_numpy(self.images(indices)), "index": torch.from_numpy(orig)}

    def preprocess(self, imgs):
        return imgs

    def subset(self, indices):
        view = copy.copy(self)
        view._idx = self._idx[np.asarray(indices, dtype=np.int64)]
        return view

    def split(self, heldout_fraction: float, seed: int | None = None):
        perm = np.random.default_rng(self.seed if seed is None else seed).permutation(len(self))
        k = int(round(heldout_fraction * len(self)))
        return self.subset(np.sort(perm[k:])), self.subset(np.sort(perm[:k]))

    # NoiseResampling
    def resample_noise_problem(self) -> str | None:
        return None

    def noise_draw(self, draw: int):
        view = copy.copy(self)
        view._draw = int(draw)
        return view


class ExactPosterior:
    """The exact posterior of :class:`LinearGaussianData`'s model, its variance times
    ``scale`` (1: exact)."""

    def __init__(self, data: LinearGaussianData, scale: float = 1.0):
        W, s2 = data.W, data.s ** 2
        self.Sigma = np.linalg.inv(np.eye(W.shape[1]) + W.T @ W / s2)
        self.A = torch.as_tensor(self.Sigma @ W.T / s2, dtype=torch.float64)
        # the posterior's coordinates: the eigenbasis of Sigma, where it is diagonal
        evals, evecs = np.linalg.eigh(self.Sigma)
        self.rotate = torch.as_tensor(evecs, dtype=torch.float64)
        self.logvar = torch.as_tensor(np.log(evals * scale), dtype=torch.float32)

    def encode(self, x: torch.Tensor):
        m = x.double().reshape(len(x), -1) @ self.A.T @ self.rotate
        return m.float(), self.logvar.expand(len(x), -1).clone()

    def recon_loss(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (x.reshape(len(x), -1) ** 2).sum(1) * 0 + (z ** 2).sum(1)
