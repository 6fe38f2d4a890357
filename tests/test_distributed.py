"""xmlc.train.distributed without a process group: the schedule length and the resumable data order."""

import math

import pytest
import torch

from xmlc.train.distributed import DistEnv, ResumableSampler, steps_per_epoch


def batches_per_process(n: int, batch_size: int, world_size: int) -> list[int]:
    """What each process's loader really yields: its sampler's rows in batches of B / W."""
    local = batch_size // world_size
    return [math.ceil(len(ResumableSampler(range(n), DistEnv(rank=r, world_size=world_size), seed=0,
                                           batch_size=local)) / local) for r in range(world_size)]


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 5, 63, 64, 65, 240, 241, 1000])
def test_steps_per_epoch_is_what_every_process_iterates(n, world_size):
    batch_size = 12 * world_size
    assert batches_per_process(n, batch_size, world_size) == [steps_per_epoch(n, batch_size, world_size)] * world_size


def test_skipping_batches_resumes_the_same_order_and_set_epoch_selects_the_permutation():
    env = DistEnv()
    sampler = ResumableSampler(range(50), env, seed=3, batch_size=8)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, skip_batches=3)
    assert list(sampler) == full[24:] and len(sampler) == 26
    sampler.set_epoch(1)
    other = list(sampler)
    assert sorted(other) == sorted(full) == list(range(50)) and other != full
    assert sampler.epoch == 1


def test_docstring_example():
    import doctest

    from xmlc.train import distributed

    result = doctest.testmod(distributed)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("n, world_size", [(0, 1), (1, 3), (17, 2), (64, 8), (5, 8)])
def test_order_is_the_distributed_samplers_order(n, world_size):
    """ResumableSampler.order (the DeviceLoader's epoch order) = DistributedSampler's iteration,
    padding and sharding included, from the first batch not skipped."""
    from torch.utils.data import DistributedSampler
    rows = list(range(n))
    for rank in range(world_size):
        for epoch, skip in [(0, 0), (3, 0), (3, 1)]:
            ours = ResumableSampler(rows, DistEnv(rank=rank, world_size=world_size), seed=7, batch_size=2)
            torch_sampler = DistributedSampler(rows, num_replicas=world_size, rank=rank, shuffle=True, seed=7)
            ours.set_epoch(epoch, skip_batches=skip)
            torch_sampler.set_epoch(epoch)
            assert ours.order().tolist() == list(torch_sampler)[2 * skip:] == list(ours)
            assert len(ours) == ours.order().numel()
