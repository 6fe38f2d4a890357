"""Batches for training: a map-style :class:`SparseDataset` that slices one CSR block per batch,
the :class:`Batch` it yields (``nn.EmbeddingBag`` inputs and a dense ``(B, L)`` target), and
:func:`make_loader`.

Example:
    >>> loader = make_loader(synthetic_preset("default"), batch_size=256, shuffle=True, seed=0)
    >>> batch = next(iter(loader))   # indices/offsets/weights for EmbeddingBag, targets (B, L)
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from xmlc.data.container import XMCData

__all__ = ["Batch", "SparseDataset", "collate_batches", "make_loader", "EVAL_BATCH_SIZE"]

#: Rows per batch when scoring (validation, test, evaluate, predict): no gradients are kept, so
#: a larger batch than training's costs only the (B, L) scores.
EVAL_BATCH_SIZE = 1024


@dataclass
class Batch:
    """One mini-batch: EmbeddingBag inputs for the features, a dense target.

    Attributes:
        indices: ``(nnz,)`` int64 feature indices (``nn.EmbeddingBag`` input).
        offsets: ``(B,)`` int64 start of each example in ``indices``.
        weights: ``(nnz,)`` float32 feature values (``per_sample_weights``).
        targets: ``(B, L)`` float32 {0, 1}.
        row_ids: ``(B,)`` int64 example indices into the dataset.
        dense: ``(B, D)`` float32 features, only when asked for, else None.
    """

    indices: torch.Tensor
    offsets: torch.Tensor
    weights: torch.Tensor
    targets: torch.Tensor
    row_ids: torch.Tensor
    dense: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.targets.shape[0]

    def _apply(self, fn) -> "Batch":
        return Batch(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device, non_blocking: bool = False) -> "Batch":
        """All tensors moved to ``device``."""
        return self._apply(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """All tensors in pinned memory (called by ``DataLoader(pin_memory=True)``)."""
        return self._apply(lambda t: t.pin_memory())


def _batch_from_csr(X: sp.csr_matrix, Y: sp.csr_matrix, row_ids: np.ndarray, dense: bool) -> Batch:
    offsets = X.indptr[:-1].astype(np.int64)
    return Batch(
        indices=torch.from_numpy(X.indices.astype(np.int64)),
        offsets=torch.from_numpy(offsets),
        weights=torch.from_numpy(X.data.astype(np.float32, copy=True)),
        targets=torch.from_numpy(Y.toarray().astype(np.float32, copy=False)),
        row_ids=torch.from_numpy(np.asarray(row_ids, dtype=np.int64).copy()),
        dense=torch.from_numpy(X.toarray().astype(np.float32, copy=False)) if dense else None,
    )


def collate_batches(batches: list[Batch]) -> Batch:
    """Concatenate ``Batch`` objects (the collate for per-item fetching); one Batch passes through."""
    if isinstance(batches, Batch):
        return batches
    if len(batches) == 1:
        return batches[0]
    sizes = torch.tensor([b.indices.numel() for b in batches])
    shift = torch.cumsum(sizes, 0) - sizes
    return Batch(
        indices=torch.cat([b.indices for b in batches]),
        offsets=torch.cat([b.offsets + s for b, s in zip(batches, shift.tolist())]),
        weights=torch.cat([b.weights for b in batches]),
        targets=torch.cat([b.targets for b in batches]),
        row_ids=torch.cat([b.row_ids for b in batches]),
        dense=None if batches[0].dense is None else torch.cat([b.dense for b in batches]),
    )


class SparseDataset(Dataset):
    """A map-style dataset over ``XMCData`` that fetches whole batches.

    ``DataLoader`` calls ``__getitems__(indices)`` with a batch of indices: features and
    labels are sliced once per batch (one CSR row gather each) and only the labels of
    the batch become dense ``(B, L)``. ``dataset[i]`` gives a ``Batch`` of one.

    Args:
        data: the data set.
        dense_features: also build ``Batch.dense`` ``(B, D)``.
    """

    def __init__(self, data: XMCData, *, dense_features: bool = False):
        self.data = data
        self.dense_features = dense_features
        # CSR with int64-safe, sorted indices; kept as is (no copy of the data). A dense
        # float32 ndarray (.npy input) stays dense and batches carry it as Batch.dense.
        self.features = data.features if isinstance(data.features, np.ndarray) else data.features.tocsr()
        self.labels = data.labels.tocsr()

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, indices) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(self.features, np.ndarray):   # dense features (.npy input): Batch.dense only
            empty = torch.empty(0, dtype=torch.int64)
            return Batch(indices=empty, offsets=torch.zeros(idx.size, dtype=torch.int64),
                         weights=torch.empty(0, dtype=torch.float32),
                         targets=torch.from_numpy(self.labels[idx].toarray().astype(np.float32, copy=False)),
                         row_ids=torch.from_numpy(idx.copy()), dense=torch.from_numpy(self.features[idx]))
        return _batch_from_csr(self.features[idx], self.labels[idx], idx, self.dense_features)

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])


def make_loader(
    data: XMCData,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    dense_features: bool = False,
    sampler=None,
) -> DataLoader:
    """A ``DataLoader`` yielding ``Batch`` objects, one CSR slice per batch.

    Args:
        data: the data set.
        batch_size: examples per batch ``B``.
        shuffle: reshuffle every epoch with a ``torch.Generator`` seeded from ``seed``
            (deterministic across runs: epoch e sees the same order every time).
            Ignored when ``sampler`` is given; the sampler then owns the order (e.g.
            ``DistributedSampler(dataset, shuffle=True, seed=seed)`` with ``set_epoch``).
        seed: shuffling seed.
        num_workers: worker processes; Batches cross process boundaries as tensors.
        pin_memory: pin batches (``Batch.pin_memory``) for fast host-to-device copies.
        drop_last: drop a last incomplete batch.
        dense_features: also build ``Batch.dense`` ``(B, D)``.
        sampler: optional index sampler (e.g. ``DistributedSampler``); wrapped in a
            ``BatchSampler`` so the dataset still fetches one batch at a time.

    Returns:
        ``DataLoader`` over a ``SparseDataset``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dataset = SparseDataset(data, dense_features=dense_features)
    if sampler is None:
        if shuffle:
            generator = torch.Generator()
            generator.manual_seed(int(seed))
            sampler = RandomSampler(dataset, generator=generator)
        else:
            sampler = SequentialSampler(dataset)
    batch_sampler = BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)
    # The loader's own generator (worker base seeds) is seeded too, so starting an iterator
    # never draws from the global torch RNG: dropout masks do not depend on when epochs begin.
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collate_batches,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(int(seed)),
    )

