"""Tests for xmlc.data.loader: batches equal the data, deterministic shuffling, one CSR slice per batch."""

import numpy as np
import pytest
import torch

from conftest import same, small_data
from xmlc.data.container import XMCData
from xmlc.data.loader import Batch, SparseDataset, make_loader


def collect(loader):
    return list(loader)


def test_batches_match_the_data():
    data = small_data()
    batches = collect(make_loader(data, 64, shuffle=True, seed=1, dense_features=True))
    rows = torch.cat([b.row_ids for b in batches]).numpy()
    assert sorted(rows.tolist()) == list(range(len(data)))
    bag = torch.nn.EmbeddingBag(data.num_features, 1, mode="sum")
    torch.nn.init.ones_(bag.weight)
    for b in batches:
        idx = b.row_ids.numpy()
        assert isinstance(b, Batch) and len(b) == idx.size
        np.testing.assert_array_equal(b.targets.numpy(), data.labels[idx].toarray())
        np.testing.assert_array_equal(b.dense.numpy(), data.features[idx].toarray())
        assert b.indices.dtype == torch.int64 and b.offsets.dtype == torch.int64 and b.weights.dtype == torch.float32
        sums = bag(b.indices, b.offsets, per_sample_weights=b.weights).squeeze(1)
        torch.testing.assert_close(sums, b.dense.sum(1))


def test_shuffle_is_deterministic_and_differs_by_epoch_and_seed():
    data = small_data()
    order = lambda loader: torch.cat([b.row_ids for b in loader]).tolist()
    a = make_loader(data, 32, shuffle=True, seed=5)
    b = make_loader(data, 32, shuffle=True, seed=5)
    epoch1_a, epoch2_a = order(a), order(a)
    assert epoch1_a == order(b) and epoch2_a == order(b)
    assert epoch1_a != epoch2_a
    assert order(make_loader(data, 32, shuffle=True, seed=6)) != epoch1_a
    assert order(make_loader(data, 32, shuffle=False)) == list(range(len(data)))


def test_one_csr_slice_per_batch(monkeypatch):
    data = small_data()
    calls = []
    original = SparseDataset.__getitems__

    def spy(self, indices):
        calls.append(len(indices))
        return original(self, indices)

    monkeypatch.setattr(SparseDataset, "__getitems__", spy)
    batches = collect(make_loader(data, 100, shuffle=False, drop_last=True))
    assert calls == [100, 100, 100] and len(batches) == 3


def test_workers_give_the_same_batches():
    data = small_data()
    single = collect(make_loader(data, 50, shuffle=True, seed=2))
    multi = collect(make_loader(data, 50, shuffle=True, seed=2, num_workers=2))
    assert len(single) == len(multi)
    for a, b in zip(single, multi):
        for name in ("indices", "offsets", "weights", "targets", "row_ids"):
            assert torch.equal(getattr(a, name), getattr(b, name))


def test_distributed_sampler_shards():
    data = small_data()
    ranks = []
    for rank in range(2):
        sampler = torch.utils.data.DistributedSampler(SparseDataset(data), num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(0)
        ranks.append(torch.cat([b.row_ids for b in make_loader(data, 40, shuffle=False, sampler=sampler)]).tolist())
    assert len(ranks[0]) == len(ranks[1]) == len(data) // 2
    assert set(ranks[0]).isdisjoint(ranks[1])


def test_batch_to_and_pin_memory():
    b = next(iter(make_loader(small_data(), 8, shuffle=False)))
    moved = b.to("cpu")
    assert moved.dense is None and torch.equal(moved.targets, b.targets)
    if torch.cuda.is_available():
        pinned = b.pin_memory()
        assert pinned.targets.is_pinned() and pinned.indices.is_pinned()
        loader = make_loader(small_data(), 8, shuffle=False, pin_memory=True, num_workers=1)
        assert next(iter(loader)).targets.is_pinned()
        assert b.to("cuda", non_blocking=True).targets.is_cuda


def test_item_access_and_subset():
    data = small_data()
    ds = SparseDataset(data)
    one = ds[3]
    assert len(one) == 1 and one.row_ids.tolist() == [3]
    sub = data.subset(np.array([4, 2]))
    assert same(sub.labels, data.labels[[4, 2]]) and len(sub) == 2
    with pytest.raises(ValueError, match="rows"):
        XMCData(data.features[:3], data.labels, data.num_features, data.num_labels)


# ---------------------------------------------------------------------------------------
# DeviceLoader: the same batches, gathered on the device


def _device_and_dataloader(data, batch_size, sampler, device="cpu", engine="auto"):
    from xmlc.data.loader import DeviceLoader
    return (list(DeviceLoader(data, batch_size, sampler=sampler, device=device, engine=engine)),
            list(make_loader(data, batch_size, shuffle=False, sampler=sampler)))


def _assert_same_batches(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        for name in ("indices", "offsets", "weights", "targets", "row_ids", "dense"):
            x, y = getattr(a, name), getattr(b, name)
            if y is None:
                assert x is None, name
                continue
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert torch.equal(x.cpu(), y), name


@pytest.mark.parametrize("engine", ["torch", "scipy"])
@pytest.mark.parametrize("window", [1, 3, 32])
@pytest.mark.parametrize("dense", [False, True])
def test_device_loader_equals_dataloader_for_the_same_order(monkeypatch, window, dense, engine):
    """Features, offsets, weights, targets and row ids equal the DataLoader's, batch by batch,
    across window boundaries, with a short last batch, empty rows and rows without labels."""
    from xmlc.data.loader import DeviceLoader
    from xmlc.train.distributed import DistEnv, ResumableSampler
    monkeypatch.setattr(DeviceLoader, "BATCHES_PER_WINDOW", window)
    data = small_data(n=203)
    features, labels = data.features.tolil(), data.labels.tolil()
    features[7, :], labels[11, :] = 0, 0          # a row without features, one without labels
    features, labels = features.tocsr(), labels.tocsr()
    data = XMCData(features.toarray() if dense else features, labels, data.num_features, data.num_labels)
    sampler = ResumableSampler(data, DistEnv(), seed=4, batch_size=16)
    for epoch, skip in [(0, 0), (1, 0), (1, 5)]:   # a new permutation per epoch; a resumed epoch
        sampler.set_epoch(epoch, skip_batches=skip)
        got, want = _device_and_dataloader(data, 16, sampler, engine=engine)
        _assert_same_batches(got, want)
        assert len(got) == len(sampler) // 16 + 1


def test_device_loader_takes_any_sampler_and_drops_explicit_zero_labels():
    data = small_data(n=50)
    labels = data.labels.copy()
    labels.data[::4] = 0                          # stored zeros are not positives
    data = XMCData(data.features, labels, data.num_features, data.num_labels)
    for engine in ("torch", "scipy"):
        got, want = _device_and_dataloader(data, 8, list(range(49, -1, -3)), engine=engine)
        _assert_same_batches(got, want)
    with pytest.raises(ValueError, match="engine"):
        _device_and_dataloader(data, 8, [0], device="meta", engine="scipy")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_loader_on_cuda_equals_dataloader():
    from xmlc.train.distributed import DistEnv, ResumableSampler
    data = small_data(n=1000)
    sampler = ResumableSampler(data, DistEnv(), seed=0, batch_size=64)
    got, want = _device_and_dataloader(data, 64, sampler, device="cuda")
    assert got[0].targets.is_cuda and got[0].indices.is_cuda
    _assert_same_batches(got, want)
