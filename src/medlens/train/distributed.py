"""Data-parallel training under ``torchrun``: ranks, shards and gathered results.

``torchrun --nproc-per-node N -m medlens train ...`` (or ``--nnodes`` for several machines)
starts N copies; torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``, and medlens then

- joins the process group (NCCL on GPUs, gloo on CPUs), each rank on ``cuda:LOCAL_RANK``;
- wraps the model in DistributedDataParallel;
- keeps the plan's batch size as the *global* batch: each rank takes ``batch_size / N`` images
  of every step, drawn from its own shard (``order[rank::N]``) of one permutation that every rank
  computes from the same seed, so the ranks see disjoint images and the epoch covers the data;
- splits validation the same way and gathers the probabilities back into the original order,
  so every rank computes the same val AUC from all val images and takes the same
  checkpoint and early-stopping decisions;
- writes checkpoints, curves, logs and the final evaluation from rank 0 only.

Without ``WORLD_SIZE`` > 1 everything here is a no-op (one process, rank 0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from medlens.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True on rank 0, which writes files and talks to the user."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def ranks() -> Ranks:
    """The ranks torchrun gave this process (rank 0 of 1 without torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group when under torchrun; the device this rank trains on."""
    r = ranks()
    if not r.active:
        return r, device
    if device.type == "cuda":
        if r.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {r.local_rank} but only {torch.cuda.device_count()} GPU(s) visible",
                hint="start at most one process per GPU (torchrun --nproc-per-node)",
            )
        device = torch.device("cuda", r.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return r, device


def wrap(model: torch.nn.Module, r: Ranks, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when there are several ranks."""
    if not r.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP (what checkpoints hold)."""
    return getattr(model, "module", model)


def sync_batchnorm_stats(model: torch.nn.Module, r: Ranks) -> None:
    """Average BatchNorm running statistics over the ranks (timm's ``distribute_bn``).

    DDP copies rank 0's buffers to the others at each forward, but each rank then updates them
    with its own batch: without this, rank 1 would validate its shard with other statistics
    than the model rank 0 saves.
    """
    if r.active:
        from timm.utils import distribute_bn

        distribute_bn(model, r.world, reduce=True)


def shard_indices(n: int, r: Ranks) -> np.ndarray:
    """This rank's share of ``n`` cases: ``rank, rank + world, ...`` (all of them with one)."""
    return np.arange(r.rank, n, r.world)


def gather_in_order(part: np.ndarray, n: int, r: Ranks) -> np.ndarray:
    """Every rank's ``shard_indices`` rows put back in the original order of ``n`` rows."""
    if not r.active:
        return part
    parts: list = [None] * r.world
    dist.all_gather_object(parts, part)
    out = np.empty((n, *part.shape[1:]), dtype=part.dtype)
    for rank, rows in enumerate(parts):
        out[rank :: r.world] = rows
    return out


def mean_over_ranks(value: float, r: Ranks) -> float:
    """The mean of ``value`` over all ranks."""
    if not r.active:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / r.world


def barrier(r: Ranks) -> None:
    if r.active and dist.is_initialized():
        dist.barrier()
