"""What every ampcheck data set shares: a view over rows of underlying arrays or a stack.

A data set keeps ``_idx``, the positions of its images in the full data; :meth:`subset` and
:meth:`split` return views that share everything else. Subclasses provide ``get_batch``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ampcheck.errors import ConfigError


class IndexedView(Dataset):
    """Index bookkeeping for a data set whose images are rows ``_idx`` of a larger whole."""

    _idx: np.ndarray
    seed: int

    def subset(self, indices: Sequence[int] | np.ndarray):
        """A view of images ``indices`` (of this data set), sharing everything else."""
        sub = copy.copy(self)
        sub._idx = self._idx[self._local(indices)]
        return sub

    def split(self, heldout_fraction: float, seed: int | None = None) -> tuple[Any, Any]:
        """Seeded random split into disjoint ``(train, heldout)`` subsets that cover the data.

        ``heldout`` holds ``round(heldout_fraction * n)`` images; both keep the data's order.
        ``seed`` defaults to the data set's own.
        """
        if not 0 < heldout_fraction < 1:
            raise ConfigError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
        k = int(round(heldout_fraction * self.n))
        if not 0 < k < self.n:
            raise ConfigError(f"heldout_fraction {heldout_fraction} of {self.n} images leaves an "
                              "empty training or held-out set")
        perm = np.random.default_rng(self.seed if seed is None else seed).permutation(self.n)
        return self.subset(np.sort(perm[k:])), self.subset(np.sort(perm[:k]))

    def __len__(self) -> int:
        return len(self._idx)

    def __getitem__(self, i: int | Sequence[int] | np.ndarray) -> dict[str, Any]:
        if not isinstance(i, (int, np.integer)):
            return self.get_batch(i)
        item = {k: v[0] for k, v in self.get_batch([i]).items()}
        item["index"] = int(item["index"])
        return item

    def _local(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Validated positions in this view (booleans, negatives and arrays accepted)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.nonzero(idx)[0]
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        n = len(self._idx)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for a dataset of {n} images")
        return idx % max(n, 1)

    @property
    def n(self) -> int:
        """Number of images in this data set (or view)."""
        return len(self._idx)

    @property
    def indices(self) -> np.ndarray:
        """``(n,)`` positions of this view's images in the full data set."""
        return self._idx.copy()
