"""The Variational Lookup Table (VLT): a per-image ``(mu, logvar)`` in place of an encoder."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

TABLE_INITS = ("normal", "zero", "from_encoder")
INIT_LOGVAR = -8.0  # narrow posteriors at the start (cryoDRGN runs end near logvar -5)


class LatentTable(nn.Module):
    """``index -> (mu, logvar)`` rows, trained by backpropagation with sparse gradients.

    Sparse gradients (``torch.optim.SparseAdam``) touch only the rows of a batch, so a table
    for 10^6 images costs memory for its rows and nothing per step beyond the batch.

    Args:
        n: number of images (rows).
        zdim: latent dimension.
        init: ``normal`` (mu ~ N(0, 1)), ``zero`` (mu = 0); both with logvar = -8.
            ``from_encoder`` starts like ``zero`` and is filled by :meth:`fill`.
        generator: the random generator for ``normal``.
    """

    def __init__(self, n: int, zdim: int, init: str = "normal",
                 generator: torch.Generator | None = None):
        super().__init__()
        if init not in TABLE_INITS:
            raise ConfigError(f"table init must be one of {', '.join(TABLE_INITS)}, got {init!r}")
        if n < 1 or zdim < 1:
            raise ConfigError(f"a latent table needs n >= 1 and zdim >= 1, got {n}, {zdim}")
        self.zdim = zdim
        self.rows = nn.Embedding(n, 2 * zdim, sparse=True)
        with torch.no_grad():
            self.rows.weight[:, zdim:] = INIT_LOGVAR
            if init == "normal":
                self.rows.weight[:, :zdim] = torch.randn(n, zdim, generator=generator)
            else:
                self.rows.weight[:, :zdim] = 0.0

    def __len__(self) -> int:
        return self.rows.num_embeddings

    def forward(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.rows(index)
        return out[:, : self.zdim], out[:, self.zdim :]

    @torch.no_grad()
    def fill(self, mu: torch.Tensor, logvar: torch.Tensor) -> None:
        """Set every row, e.g. from a trained encoder's outputs ``(n, zdim)`` each."""
        if mu.shape != (len(self), self.zdim) or logvar.shape != mu.shape:
            raise ConfigError(f"table of {len(self)} x {self.zdim} cannot take values of "
                              f"shape {tuple(mu.shape)} / {tuple(logvar.shape)}")
        self.rows.weight.copy_(torch.cat([mu, logvar], dim=1))
