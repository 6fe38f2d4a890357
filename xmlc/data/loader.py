"""Batches for training: a map-style :class:`SparseDataset` that slices one CSR block per batch,
the :class:`Batch` it yields (``nn.EmbeddingBag`` inputs and a dense ``(B, L)`` target), and
:func:`make_loader`.

Example:
    >>> loader = make_loader(synthetic_preset("default"), batch_size=256, shuffle=True, seed=0)
    >>> batch = next(iter(loader))   # indices/offsets/weights for EmbeddingBag, targets (B, L)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from xmlc.data.container import XMCData

__all__ = ["Batch", "SparseDataset", "collate_batches", "make_loader", "DeviceLoader", "EVAL_BATCH_SIZE"]

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



# ---------------------------------------------------------------------------------------
# Batches gathered on the training device


class _DeviceCSR(NamedTuple):
    """A CSR matrix on a device, and its row lengths on the host (to size gathers without a sync)."""

    indptr: torch.Tensor         # (N + 1,) int64
    indices: torch.Tensor        # (nnz,) int64
    values: torch.Tensor | None  # (nnz,) float32, or None (labels: every stored entry is a 1)
    lengths: np.ndarray          # (N,) int64, host


def _csr_on(matrix: sp.csr_matrix, device: torch.device, *, values: bool) -> _DeviceCSR:
    indptr = np.asarray(matrix.indptr, dtype=np.int64)
    return _DeviceCSR(torch.from_numpy(indptr).to(device),
                      torch.from_numpy(np.asarray(matrix.indices, dtype=np.int64)).to(device),
                      torch.from_numpy(np.asarray(matrix.data, dtype=np.float32)).to(device) if values else None,
                      np.diff(indptr))


def _gather_rows(csr: _DeviceCSR, rows: torch.Tensor, nnz: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(offsets (W,) of each of ``rows`` in the gathered entries, their lengths (W,), positions (nnz,)
    of those entries in ``csr``): index arithmetic on ``indptr``; ``nnz`` is known on the host, so
    nothing waits on the device."""
    starts = csr.indptr[rows]
    lengths = csr.indptr[rows + 1] - starts
    offsets = torch.cumsum(lengths, 0) - lengths
    shift = torch.repeat_interleave(starts - offsets, lengths, output_size=nnz)
    return offsets, lengths, torch.arange(nnz, device=rows.device).add_(shift)


def _batch_bounds(lengths: np.ndarray, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """(K + 1,) host: batch k of ``rows`` holds entries ``[b[k], b[k + 1])`` of their gather."""
    return np.r_[0, np.cumsum(np.add.reduceat(lengths[rows], np.arange(0, rows.size, batch_size)))]


class _Window(NamedTuple):
    """Consecutive batches of an epoch gathered at once: per batch only views and two small ops remain."""

    rows: torch.Tensor             # (W,) row ids, in order
    x_offsets: torch.Tensor | None  # (W,) start of each row in x_indices (None: dense features)
    x_indices: torch.Tensor | None  # (nnz_x,)
    x_values: torch.Tensor | None   # (nnz_x,)
    x_bounds: np.ndarray | None     # (K + 1,) host: batch k's entries are [x_bounds[k], x_bounds[k + 1])
    y_keys: torch.Tensor           # (nnz_y,) row-in-its-batch * L + label of each positive
    y_bounds: np.ndarray           # (K + 1,) host
    dense: torch.Tensor | None     # (W, D) dense features, or None


class DeviceLoader:
    """Batches gathered on ``device`` from a split that lives there: the :class:`Batch` objects
    :func:`make_loader` yields for the same rows (equal tensors), without per-step host work.

    The features and labels are copied to ``device`` once. Each epoch takes its row order from
    ``sampler`` (``sampler.order()``, a CPU int64 tensor, where it has one; else its iteration),
    copies it to the device once, and gathers :data:`BATCHES_PER_WINDOW` batches at a time
    (index arithmetic on ``indptr``; sizes from host-side row lengths, so nothing waits on the
    device); a batch is then slices of that window, its offsets, and its dense ``(B, L)``
    target filled on the device. Memory: the split once, plus one window.

    Args:
        data: the data set.
        batch_size: rows per batch ``B``; the last batch of an epoch may be shorter.
        sampler: the rows of each epoch, in order (e.g. :class:`xmlc.train.distributed.ResumableSampler`).
        device: where the split lives and batches are built.
        engine: how a window is gathered: ``"torch"``, index arithmetic on the device copy;
            ``"scipy"`` (CPU only), scipy's row slicing of the matrices in place; ``"auto"``:
            scipy on the CPU (faster there: ``benchmarks/bench_loader.py``), torch elsewhere.
    """

    #: batches gathered together (one gather of index arithmetic per this many steps)
    BATCHES_PER_WINDOW = 32

    def __init__(self, data: XMCData, batch_size: int, *, sampler, device: torch.device,
                 engine: Literal["auto", "scipy", "torch"] = "auto"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if engine not in ("auto", "scipy", "torch") or (engine == "scipy" and torch.device(device).type != "cpu"):
            raise ValueError(f"engine must be 'auto', 'torch', or 'scipy' on the CPU; got {engine!r} on {device}")
        self.batch_size, self.sampler, self.device = batch_size, sampler, torch.device(device)
        self.num_labels = data.num_labels
        labels = data.labels.tocsr()
        if labels.nnz and not np.all(labels.data != 0):   # explicit zeros are not positives
            labels = labels.copy()
            labels.eliminate_zeros()
        features = data.features
        self.dense = (torch.from_numpy(np.asarray(features, dtype=np.float32)).to(self.device)
                      if isinstance(features, np.ndarray) else None)
        features = None if self.dense is not None else features.tocsr()
        # "auto": on the CPU the split stays the CSR matrices it is (scipy's compiled row gather
        # beats torch's index arithmetic there); elsewhere it is copied to the device once.
        scipy_gather = engine == "scipy" or (engine == "auto" and self.device.type == "cpu")
        self.host = (features, labels) if scipy_gather else None
        on_device = self.host is None
        self.y = _csr_on(labels, self.device, values=False) if on_device else None
        self.x = _csr_on(features, self.device, values=True) if on_device and features is not None else None

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def _order(self) -> torch.Tensor:
        order = self.sampler.order() if hasattr(self.sampler, "order") else torch.as_tensor(list(self.sampler))
        return order.to(torch.int64)

    def __iter__(self):
        order = self._order()
        rows_host = order.numpy()
        order = order.to(self.device)
        B, K = self.batch_size, self.BATCHES_PER_WINDOW
        for w0 in range(0, rows_host.size, B * K):
            window = self._window(order[w0:w0 + B * K], rows_host[w0:w0 + B * K])
            for k in range(window.y_bounds.size - 1):
                yield self._batch(window, k)

    def _window(self, rows: torch.Tensor, rows_host: np.ndarray) -> _Window:
        if self.host is not None:
            return self._host_window(rows, rows_host)
        B, L = self.batch_size, self.num_labels
        y_bounds = _batch_bounds(self.y.lengths, rows_host, B)
        _, lengths, at = _gather_rows(self.y, rows, int(y_bounds[-1]))
        row_in_batch = torch.arange(rows.numel(), device=self.device).remainder_(B).mul_(L)
        y_keys = torch.repeat_interleave(row_in_batch, lengths, output_size=int(y_bounds[-1]))
        y_keys += self.y.indices.index_select(0, at)
        if self.dense is not None:
            return _Window(rows, None, None, None, None, y_keys, y_bounds, self.dense.index_select(0, rows))
        x_bounds = _batch_bounds(self.x.lengths, rows_host, B)
        x_offsets, _, at = _gather_rows(self.x, rows, int(x_bounds[-1]))
        return _Window(rows, x_offsets, self.x.indices.index_select(0, at), self.x.values.index_select(0, at),
                       x_bounds, y_keys, y_bounds, None)

    def _host_window(self, rows: torch.Tensor, rows_host: np.ndarray) -> _Window:
        """The CPU's window: scipy's row gather (compiled, a copy per row) on the host matrices."""
        B, L = self.batch_size, self.num_labels
        features, labels = self.host
        starts = np.r_[np.arange(0, rows_host.size, B), rows_host.size]
        y = labels[rows_host]
        y_keys = np.repeat(np.arange(rows_host.size, dtype=np.int64) % B * L, np.diff(y.indptr))
        y_keys += y.indices
        y_keys = torch.from_numpy(y_keys)
        if self.dense is not None:
            return _Window(rows, None, None, None, None, y_keys, y.indptr[starts], self.dense.index_select(0, rows))
        x = features[rows_host]
        return _Window(rows, torch.from_numpy(x.indptr[:-1].astype(np.int64)),
                       torch.from_numpy(x.indices.astype(np.int64)), torch.from_numpy(x.data.astype(np.float32)),
                       x.indptr[starts], y_keys, y.indptr[starts], None)

    def _batch(self, w: _Window, k: int) -> Batch:
        r0 = k * self.batch_size
        r1 = min(r0 + self.batch_size, w.rows.numel())
        ya, ye = w.y_bounds[k:k + 2].tolist()
        targets = torch.zeros((r1 - r0) * self.num_labels, dtype=torch.float32, device=self.device)
        targets.index_fill_(0, w.y_keys[ya:ye], 1.0)
        if w.dense is not None:
            return Batch(indices=torch.empty(0, dtype=torch.int64, device=self.device),
                         offsets=torch.zeros(r1 - r0, dtype=torch.int64, device=self.device),
                         weights=torch.empty(0, dtype=torch.float32, device=self.device),
                         targets=targets.view(r1 - r0, -1), row_ids=w.rows[r0:r1], dense=w.dense[r0:r1])
        a, e = w.x_bounds[k:k + 2].tolist()
        return Batch(indices=w.x_indices[a:e], offsets=w.x_offsets[r0:r1] - a, weights=w.x_values[a:e],
                     targets=targets.view(r1 - r0, -1), row_ids=w.rows[r0:r1])
