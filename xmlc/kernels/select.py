"""The ``k`` largest entries of a tensor as a 0/1 mask, ties broken by flat index, lowest first.

* Fast: :func:`top_k_mask`. float32 values become order-preserving int32 keys
  (:func:`xmlc.kernels.keys.sortable_keys`); a two-level radix select (a 65,536-bin histogram
  of the high 16 bits finds the bin holding the k-th largest key, a second of the low 16 bits
  of that bin's keys finds the key) gives the threshold, and one comparison writes the mask.
  Two bincounts instead of a sort, a ``topk`` or a quickselect over a copy with int64
  indices; the int32 buffer of high bits is reused for the mask. Other dtypes take the
  threshold from ``torch.kthvalue``.
* Reference: :func:`top_k_mask_reference`, a stable descending ``torch.sort`` whose first
  ``k`` indices are set. ``tests/test_kernels_select.py`` pins the two equal.

:data:`RANK_FIRST` is a finite value above every loss of a dtype: added to the positives'
losses by one fused ``addcmul``, it ranks them first (the plain way is
``masked_fill(positives, inf)``).

Used by :func:`xmlc.losses.ohem` (element mode). Its place is earned by the "k largest mask"
and "positives first" rows of ``python benchmarks/bench_losses.py --tricks``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xmlc.kernels.keys import sortable_keys

__all__ = ["top_k_mask", "top_k_mask_reference", "RANK_FIRST"]

#: A finite value above every loss, per dtype (see the module docstring).
RANK_FIRST = {torch.float16: 6e4, torch.bfloat16: 1e38, torch.float32: 1e38, torch.float64: 1e300}


def _radix_kth_largest(keys: Tensor, k: int) -> tuple[int, int, Tensor]:
    """The k-th largest of int32 ``keys`` (1-D) by a two-level radix select.

    Returns:
        ``(key, number of keys >= key, scratch)``, where ``scratch`` is the int32 buffer of
        high bits (same shape as ``keys``), free for the caller to reuse.
    """
    high = torch.bitwise_right_shift(keys, 16).add_(32768)  # in [0, 65536)
    counts = torch.bincount(high, minlength=65536).flip(0).cumsum_(0)  # keys in bins >= 65535 - j
    j = int(torch.searchsorted(counts, k))
    above = int(counts[j - 1]) if j > 0 else 0
    bin_high = 65535 - j
    low = torch.bitwise_and(keys[high == bin_high], 0xFFFF)
    counts_low = torch.bincount(low, minlength=65536).flip(0).cumsum_(0)
    j_low = int(torch.searchsorted(counts_low, k - above))
    key = ((bin_high - 32768) << 16) | (65535 - j_low)
    return key, above + int(counts_low[j_low]), high


def top_k_mask(values: Tensor, k: int) -> Tensor:
    """0/1 mask of the ``k`` largest entries of ``values``, without a sort.

    Args:
        values: any shape, floating point, no NaN.
        k: how many entries to keep; ``k <= 0`` keeps none, ``k >= numel`` keeps all.

    Returns:
        A mask of the shape and dtype of ``values``. Ties at the threshold are broken by flat
        (row-major) index, lowest first; equal means equal value (``-0.0`` ties with ``0.0``).

    Example:
        >>> top_k_mask(torch.tensor([[0.1, 2.0], [0.5, 0.5]]), 2)
        tensor([[0., 1.],
                [1., 0.]])
    """
    flat = values.reshape(-1)
    n = flat.numel()
    if k >= n:
        return torch.ones_like(values)
    if k <= 0:
        return torch.zeros_like(values)
    if flat.dtype == torch.float32:
        keys = sortable_keys(flat.contiguous())
        threshold, n_ge, scratch = _radix_kth_largest(keys, k)
        mask = scratch.view(torch.float32).copy_(keys >= threshold)  # reuse the int32 buffer
    else:
        mask = torch.empty_like(flat)
        keys = flat
        threshold = torch.kthvalue(flat, n - k + 1).values
        torch.ge(flat, threshold, out=mask)
        n_ge = int(mask.sum())
    surplus = n_ge - k
    if surplus > 0:  # more ties at the threshold than places left: drop the last by index
        tied = torch.nonzero(keys == threshold).squeeze(1)
        mask[tied[tied.numel() - surplus :]] = 0.0
    return mask.view_as(values)


def top_k_mask_reference(values: Tensor, k: int) -> Tensor:
    """The plain algorithm of :func:`top_k_mask`: a stable descending sort, the first ``k`` set.

    A stable sort keeps equal values in index order, so ties go to the lowest flat index.
    """
    flat = values.reshape(-1)
    mask = torch.zeros_like(flat)
    order = torch.sort(flat, descending=True, stable=True).indices
    mask[order[: max(k, 0)]] = 1.0
    return mask.view_as(values)
