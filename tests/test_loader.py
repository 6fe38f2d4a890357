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
