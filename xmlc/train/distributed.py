"""Data-parallel plumbing for the training loop: the process group, the data order that
survives a mid-epoch resume, and the per-step agreement between processes.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every process runs the same loop; these helpers make
each one see its shard of every global batch and take the same decision at every step. With
one process they are no-ops.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from xmlc.errors import ConfigError

__all__ = ["DistEnv", "launched_world_size", "setup_distributed", "teardown_distributed", "data_parallel", "ResumableSampler",
           "steps_per_epoch", "Agreement", "agree", "any_process"]


@dataclass
class DistEnv:
    """This process's place: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")


def launched_world_size() -> int:
    """How many processes torchrun started (``WORLD_SIZE``); 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup_distributed(device_choice: str) -> DistEnv:
    """Device from ``train.device``; under torchrun (WORLD_SIZE > 1) join the process group."""
    use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    if device_choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'train.device' is 'cuda' but no CUDA device is available")
    world_size = launched_world_size()
    if world_size == 1:
        return DistEnv(device=torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistEnv(rank=dist.get_rank(), world_size=world_size,
                   device=torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"))


def teardown_distributed(env: DistEnv, *, barrier: bool = True) -> None:
    """Leave the process group; ``barrier`` first waits for every process (skip it when this
    process fails alone, so that torchrun sees the failure instead of a hang)."""
    if env.world_size > 1 and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def data_parallel(model: nn.Module, env: DistEnv) -> nn.Module:
    """``model`` in DistributedDataParallel when several processes train, else ``model`` itself."""
    if env.world_size == 1:
        return model
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` whose epoch can start after its first ``skip_batches`` batches.

    The order of epoch ``e`` is a permutation seeded by ``seed + e``, identical for any number
    of processes: with one process, batch ``i`` holds positions ``[i*B, (i+1)*B)`` of it; with
    ``W`` processes of ``B/W`` each, the same positions are spread over the processes. Skipping
    is what makes a mid-epoch ``--resume`` see exactly the batches it would have seen.
    """

    def __init__(self, dataset, env, *, seed: int, batch_size: int):
        super().__init__(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed)
        self.batch_size = batch_size
        self.skip = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip_batches * self.batch_size

    def order(self) -> torch.Tensor:
        """(n,) int64 CPU: this process's rows of the current epoch from the first batch not
        skipped, as iterating yields them (``DistributedSampler``'s order, in tensor ops)."""
        n = len(self.dataset)
        if self.shuffle:
            rows = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            rows = torch.arange(n)
        if self.drop_last:
            rows = rows[:self.total_size]
        elif n:   # pad to equal shards by repeating the order, as DistributedSampler does
            rows = rows.repeat(math.ceil(self.total_size / n))[:self.total_size]
        return rows[self.rank:self.total_size:self.num_replicas][self.skip:]

    def __iter__(self):
        return iter(self.order().tolist())

    def __len__(self) -> int:
        return max(super().__len__() - self.skip, 0)


def steps_per_epoch(num_examples: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps in one epoch of ``num_examples`` rows at global batch ``batch_size``.

    Each of the ``world_size`` processes gets ``ceil(N / W)`` rows (``DistributedSampler``
    pads) in batches of ``batch_size // W``, the last one possibly short.

    Example:
        >>> steps_per_epoch(240, 64), steps_per_epoch(241, 64, world_size=2)
        (4, 4)
    """
    return math.ceil(math.ceil(num_examples / world_size) / (batch_size // world_size))


class Agreement(NamedTuple):
    """What every process knows after a forward pass (one small all-reduce under DDP)."""

    loss: float        # the loss, averaged over processes
    nonfinite: bool    # some process's loss is NaN/inf
    stop: bool         # some process was asked to stop (SIGINT/SIGTERM)


def agree(loss: torch.Tensor, stop_requested: bool, env) -> Agreement:
    """The :class:`Agreement` on this step, so that every process takes the same decision."""
    if env.world_size == 1:
        value = loss.item()
        return Agreement(value, not math.isfinite(value), stop_requested)
    flags = torch.stack([loss.float(), (~torch.isfinite(loss)).float(),
                         torch.tensor(float(stop_requested), device=loss.device)])
    dist.all_reduce(flags)
    value, nonfinite, stop_now = flags.tolist()
    return Agreement(value / env.world_size, nonfinite > 0 or not math.isfinite(value), stop_now > 0)


def any_process(flag: bool, env) -> bool:
    """True on every process if ``flag`` is true on any (a collective under DDP)."""
    if env.world_size == 1:
        return flag
    t = torch.tensor(float(flag), device=env.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)
