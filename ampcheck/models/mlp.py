"""The residual MLP that cryoDRGN uses for both its encoder and its decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidLinear(nn.Linear):
    """``x + W x + b`` (square layers only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.in_features
        if (x.numel() // n <= n or x.dtype != torch.float32 or x.device.type not in ("cpu", "cuda")
                or torch.is_autocast_enabled(x.device.type)
                or torch.get_float32_matmul_precision() != "highest"):
            return super().forward(x) + x
        # Many rows (the decoder's lattice points): x W^T + b + x = x (W + I)^T + b, one product
        # and no (rows, n) addition forward or backward, for one (n, n) addition. Only in full
        # fp32 products: in bf16 or TF32, 1 + w would round w to a few bits.
        return F.linear(x, self.weight + torch.eye(n, dtype=x.dtype, device=x.device), self.bias)


class ResidMLP(nn.Module):
    """``in -> hidden``, ``layers`` residual ``hidden -> hidden`` blocks, ``hidden -> out``.

    ReLU after every layer but the last. ``layers = 3, hidden = 256`` is cryoDRGN's "3 x 256"
    (its ``ResidLinearMLP``: five linear maps in all).
    """

    def __init__(self, in_dim: int, hidden: int, layers: int, out_dim: int):
        first = ResidLinear(hidden, hidden) if in_dim == hidden else nn.Linear(in_dim, hidden)
        mods: list[nn.Module] = [first, nn.ReLU()]
        for _ in range(layers):
            mods += [ResidLinear(hidden, hidden), nn.ReLU()]
        mods.append(ResidLinear(hidden, hidden) if out_dim == hidden
                    else nn.Linear(hidden, out_dim))
        super().__init__()
        self.layers = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
