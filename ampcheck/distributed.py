"""Multi-process training on PyTorch's own engine (SPEC §3): ``torchrun`` and DDP.

``torchrun --nproc_per_node=N -m ampcheck train ...`` starts N processes with ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` in their environment. :func:`ampcheck.train.train` notices them
(:meth:`World.current`), joins the process group (:func:`setup`: gloo on a CPU, nccl on CUDA
with each process on ``cuda:LOCAL_RANK``) and does the optimisation that one process does on
the same global batch of ``TrainConfig.resolved_batch_size`` images:

* every rank draws the same seeded permutation and the noise of the whole global batch, and
  takes its contiguous share of both (:meth:`World.shard`); the shares, in rank order, are
  the global batch, so a 2-rank run matches one process up to floating-point reduction order;
* DistributedDataParallel averages the networks' gradients over ranks; each rank's loss is its
  share's mean times a weight that makes that average the global batch's mean;
* the VLT table is not a DDP module (its gradients are sparse): every rank keeps the whole
  table and its SparseAdam state. Each rank backpropagates into the rows of its own images;
  :meth:`World.gather_rows` all-gathers those rows' gradients, and every rank applies the same
  SparseAdam step to the global batch's rows, so that a row's value and optimiser state are
  what one process would have, up to rounding, on every rank (replication costs
  ``n x 2 zdim`` floats per rank, which is nothing next to the images);
* the batch's loss sums are all-gathered (:meth:`World.sum`), bitwise the same on every rank,
  so the divergence guard decides the same everywhere and all ranks stop together;
* only rank 0 writes checkpoints and prints (:attr:`World.is_main`).

Without ``WORLD_SIZE`` (and without a process group) :class:`World` is one process, and
nothing here runs a collective.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
from torch import distributed as dist
from torch import nn

from .errors import ConfigError

_OWNED = False  # whether this process's group was created by setup() (teardown() ends it)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes.

    ``distributed`` is true under ``torchrun`` (also with one process) or once a process
    group exists; then :meth:`sum`, :meth:`gather_rows`, :meth:`wrap` and :meth:`barrier` are
    collectives that every rank must call alike.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    distributed: bool = False

    @classmethod
    def current(cls) -> World:
        """The world of an initialised process group, else of torchrun's environment."""
        local = os.environ.get("LOCAL_RANK", "0")
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), _int("LOCAL_RANK", local), True)
        if "WORLD_SIZE" not in os.environ:
            return cls()
        size = _int("WORLD_SIZE", os.environ["WORLD_SIZE"])
        rank = _int("RANK", os.environ.get("RANK", "0"))
        if size < 1 or not 0 <= rank < size:
            raise ConfigError(f"torchrun environment: RANK={rank} and WORLD_SIZE={size} need "
                              "0 <= RANK < WORLD_SIZE")
        return cls(rank, size, _int("LOCAL_RANK", local), True)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints and prints progress."""
        return self.rank == 0

    def check_batch(self, batch_size: int) -> None:
        """Refuse a global batch that does not split evenly over the ranks."""
        if batch_size % self.size:
            raise ConfigError(
                f"the global batch of {batch_size} images does not split evenly over "
                f"{self.size} processes (WORLD_SIZE={self.size}); use a batch size that is a "
                f"multiple of {self.size}, or a number of processes that divides {batch_size}")

    def shard(self, k: int) -> tuple[slice, float]:
        """This rank's share of a global batch of ``k`` images, and the weight of its loss.

        Shares are contiguous and near-equal, in rank order (one process: the whole batch,
        weight 1). With a share of ``k_r`` images, weighting the share's mean loss by
        ``size * k_r / k`` (1 for equal shares) makes DDP's average over ranks the mean over
        the ``k`` images. A rank whose share is empty (a last batch of fewer than ``size``
        images) takes the batch's first image at weight 0, because every rank must run a
        forward and backward pass for DDP's all-reduce.
        """
        lo, hi = self.rank * k // self.size, (self.rank + 1) * k // self.size
        if lo == hi:
            return slice(0, 1), 0.0
        return slice(lo, hi), self.size * (hi - lo) / k

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values (m,)`` summed over ranks in float64, bitwise the same on every rank.

        An all-gather and a sum in rank order, not an all-reduce, whose rounding need not be
        the same on every rank: decisions taken on the result (the divergence guard) agree.
        """
        values = values.detach().double()
        if not self.distributed:
            return values
        parts = [torch.empty_like(values) for _ in range(self.size)]
        dist.all_gather(parts, values)
        return torch.stack(parts).sum(0)

    def gather_rows(self, grad: torch.Tensor, k: int) -> torch.Tensor:
        """The global batch's sparse gradient ``(n, d)`` from each rank's sparse gradient of
        its share's rows (at most ``ceil(k / size)`` of them), coalesced.

        Row indices and rows are padded to the largest share and all-gathered (collectives
        need equal sizes); the padding (index -1) is dropped.
        """
        g = grad.coalesce()
        index, values = g.indices()[0], g.values()
        pad = -(-k // self.size) - len(index)
        index = torch.cat([index, index.new_full((pad,), -1)])
        values = torch.cat([values, values.new_zeros((pad, *values.shape[1:]))])
        indices = [torch.empty_like(index) for _ in range(self.size)]
        rows = [torch.empty_like(values) for _ in range(self.size)]
        dist.all_gather(indices, index)
        dist.all_gather(rows, values)
        index, values = torch.cat(indices), torch.cat(rows)
        keep = index >= 0
        return torch.sparse_coo_tensor(index[keep][None], values[keep], grad.shape,
                                       check_invariants=False).coalesce()

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel when distributed, else itself.

        Buffers are not broadcast at every forward pass: ampcheck's models keep only
        constants in them (lattices, masks, Fourier frequencies).
        """
        if not self.distributed:
            return module
        ddp = nn.parallel.DistributedDataParallel
        # the option's newer name (the old one warns there); older torch knows the old only
        sync = "forward_sync_buffers"
        if sync not in inspect.signature(ddp).parameters:
            sync = "broadcast_buffers"
        return ddp(module, **{sync: False})

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"torchrun environment: {name} must be an integer, got "
                          f"{value!r}") from None


def setup(world: World, device: torch.device) -> torch.device:
    """Join the process group of a torchrun launch (once per process); this rank's device.

    ``device`` is the configured one, resolved: on CUDA each rank takes ``cuda:LOCAL_RANK``
    (a configured ``cuda:N`` must name that GPU), with nccl; on a CPU gloo.
    """
    global _OWNED
    if not world.distributed:
        return device
    if device.type == "cuda":
        if device.index is not None and device.index != world.local_rank:
            raise ConfigError(f"under torchrun each process trains on the GPU of its "
                              f"LOCAL_RANK (cuda:{world.local_rank}), not {device}; use "
                              "--device cuda or auto")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        except ValueError as err:  # e.g. WORLD_SIZE set by hand, without torchrun's rendezvous
            raise ConfigError(f"WORLD_SIZE is set but the process group cannot start ({err}); "
                              "launch with torchrun, or unset WORLD_SIZE") from None
        _OWNED = True
    return device


def teardown() -> None:
    """Leave the process group that :func:`setup` joined (a no-op otherwise)."""
    global _OWNED
    if _OWNED and dist.is_initialized():
        dist.destroy_process_group()
    _OWNED = False


def is_main() -> bool:
    """Whether this process is rank 0 (or the only one): the one that writes and prints."""
    return World.current().is_main


__all__ = ["World", "setup", "teardown", "is_main"]
