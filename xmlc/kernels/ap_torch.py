"""Exact per-label counts with torch ops on the scores' device: the engine of the metrics when the
scores live on an accelerator (``xmlc.kernels.ap`` is the host engine; both return the same numbers).

:func:`tie_counts_torch` counts, for every positive entry, the positives and the entries of its
label scoring at least as high (ties count), as :func:`xmlc.kernels.ap.tie_counts` does, and in
the same order. Only the P positives are sorted: their ``(label, score)`` pairs packed into one
int64 key each (the label in the high 32 bits, :func:`xmlc.kernels.keys.sortable_keys` in the low
32), so that one ``torch.sort`` orders them by label, then by score, and equal float32 scores
(``-0.0`` and ``0.0`` included) get equal keys. Each label's distinct positive keys cut its score
axis into gaps; every entry of the matrix finds its gap with one ``torch.searchsorted`` of its own
packed key, the gaps are counted (``torch.bincount``) in row blocks, and a suffix sum of that
histogram within each label gives ``#entries >= s`` at every distinct positive score s. Memory:
the positives, the histogram and one row block of keys; the (N, L) matrix is read in place.

:func:`ap_per_label_torch`, :func:`best_fbeta_torch` and :func:`kth_largest_torch` reduce the
counts (or the scores) per label with ``index_add_`` / ``scatter_reduce_`` and a sort of label
blocks; no loop over labels or rows. ``tests/test_kernels_ap.py`` pins every one equal to the host
engine and to scikit-learn on CPU tensors.

References: as :mod:`xmlc.kernels.ap`.
"""

from __future__ import annotations

import torch

from xmlc.kernels.ap import TieCounts
from xmlc.kernels.keys import floats_from_keys, sortable_keys

__all__ = ["tie_counts_torch", "ap_per_label_torch", "best_fbeta_torch", "kth_largest_torch", "topk_torch"]

_LOW = (1 << 32) - 1
_HALF = 1 << 31


def _block_entries(device: torch.device) -> int:
    """Matrix entries per block: large on an accelerator (few launches), cache-sized on the CPU."""
    return 1 << 24 if device.type != "cpu" else 1 << 20


def _packed(groups: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """int64 ``group << 32 | (key + 2**31)``: orders by group, then by float32 score."""
    return (groups << 32) | (sortable_keys(scores.contiguous(), nonnegative=False).long() + _HALF)


def tie_counts_torch(scores: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, *,
                     pooled: bool = False) -> TieCounts:
    """:func:`xmlc.kernels.ap.tie_counts` with torch ops on ``scores``' device.

    Args:
        scores: ``(N, L)`` float32 tensor, no NaN.
        rows, cols: ``(P,)`` int64 tensors on the same device: the positive entries, each once.
        pooled: one group of all N x L entries (micro averages) instead of one per label.

    Returns:
        :class:`xmlc.kernels.ap.TieCounts` of tensors on the device, P entries sorted by
        (label, score) (labels all 0 when pooled).

    Example:
        >>> s = torch.tensor([[0.9, 0.1], [0.4, 0.8], [0.4, 0.3]])
        >>> c = tie_counts_torch(s, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 0]))
        >>> c.labels.tolist(), c.pos_ge.tolist(), c.all_ge.tolist()
        ([0, 0, 1], [2, 1, 1], [3, 1, 1])
    """
    n, l = scores.shape
    device = scores.device
    groups = 1 if pooled else l
    pos_group = torch.zeros_like(cols) if pooled else cols
    packed = torch.sort(_packed(pos_group, scores[rows, cols])).values
    is_first = torch.ones_like(packed, dtype=torch.bool)
    is_first[1:] = packed[1:] != packed[:-1]
    first_at = torch.nonzero(is_first).squeeze(1)
    distinct = packed[first_at]   # each group's distinct positive keys, ascending
    distinct_group = distinct >> 32
    hist = _gap_histogram(scores, distinct, groups, pooled)
    # entries of group j at or above its r-th key: gaps r + 1 .. of group j, whose gaps are
    # gap_start[j] .. gap_start[j + 1] - 1 (gap_start[j] = key_start[j] + j)
    suffix = torch.cat([hist.flip(0).cumsum(0).flip(0), hist.new_zeros(1)])
    num_keys = torch.bincount(distinct_group, minlength=groups)
    gap_end = torch.cumsum(num_keys, 0) + torch.arange(1, groups + 1, device=device)   # gap_start[j + 1]
    index = torch.arange(distinct.numel(), device=device)
    distinct_all_ge = suffix[index + distinct_group + 1] - suffix[gap_end[distinct_group]]
    key_index = torch.cumsum(is_first, 0) - 1
    group_end = torch.cumsum(torch.bincount(pos_group, minlength=groups), 0)
    labels = packed >> 32
    pos_ge = group_end[labels] - first_at[key_index]
    values = floats_from_keys(((packed & _LOW) - _HALF).int())
    return TieCounts(labels, values, pos_ge, distinct_all_ge[key_index])


def _gap_histogram(scores: torch.Tensor, distinct: torch.Tensor, groups: int, pooled: bool) -> torch.Tensor:
    """Entries per global gap index (``#distinct keys <= the entry's packed key`` plus its group),
    counted over row blocks of ``scores``."""
    n, l = scores.shape
    hist = torch.zeros(distinct.numel() + groups, dtype=torch.int64, device=scores.device)
    if n == 0 or l == 0:
        return hist
    step = max(1, _block_entries(scores.device) // l)
    label_high = torch.zeros(1, l, dtype=torch.int64, device=scores.device) if pooled else \
        torch.arange(l, device=scores.device)[None, :]
    for r0 in range(0, n, step):
        block = scores[r0:r0 + step]
        keys = _packed(label_high.expand(block.shape[0], l), block).reshape(-1)
        gap = torch.searchsorted(distinct, keys, right=True)
        gap += (keys >> 32)   # + the group: global gap index
        hist += torch.bincount(gap, minlength=hist.numel())
    return hist


def ap_per_label_torch(scores: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, *,
                       pooled: bool = False) -> torch.Tensor:
    """:func:`xmlc.kernels.ap.ap_per_label` on the device: float64 ``(L,)`` (``(1,)`` pooled), NaN
    for a label without a positive."""
    counts = tie_counts_torch(scores, rows, cols, pooled=pooled)
    precision = counts.pos_ge.double() / counts.all_ge.double()
    groups = 1 if pooled else scores.shape[1]
    sums = torch.zeros(groups, dtype=torch.float64, device=scores.device).index_add_(0, counts.labels, precision)
    positives = torch.bincount(counts.labels, minlength=groups).double()
    return sums / positives   # 0 / 0 = NaN where a label has no positive


def best_fbeta_torch(counts: TieCounts, positives: torch.Tensor, b2: float, groups: int) -> torch.Tensor:
    """Per group, the score whose threshold maximises F-beta (ties: the higher score), NaN without
    positives: ``(1 + b2) pos_ge / (b2 positives + all_ge)`` at each positive's score.

    Args:
        counts: :func:`tie_counts_torch` (per label, or pooled with ``groups = 1``).
        positives: ``(groups,)`` positives per group. b2: beta squared. groups: L, or 1 pooled.

    Returns:
        float64 ``(groups,)``; the same values :mod:`xmlc.eval.calibrate` picks on the host.
    """
    fb = (1 + b2) * counts.pos_ge.double() / (b2 * positives[counts.labels].double() + counts.all_ge.double())
    device = fb.device
    top = torch.full((groups,), -torch.inf, dtype=torch.float64, device=device)
    top.scatter_reduce_(0, counts.labels, fb, "amax")
    reaching = fb == top[counts.labels]
    score = torch.where(reaching, counts.scores.double(), torch.tensor(-torch.inf, dtype=torch.float64, device=device))
    best = torch.full((groups,), -torch.inf, dtype=torch.float64, device=device)
    best.scatter_reduce_(0, counts.labels, score, "amax")
    return torch.where(torch.isneginf(best), torch.tensor(torch.nan, dtype=torch.float64, device=device), best)


def kth_largest_torch(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per label j the ``k[j]``-th largest score of column j (float64 ``(L,)``, NaN where k is 0),
    from a sort of blocks of columns."""
    n, l = scores.shape
    out = torch.full((l,), torch.nan, dtype=torch.float64, device=scores.device)
    step = max(1, _block_entries(scores.device) // max(n, 1))
    for c0 in range(0, l, step):
        block = torch.sort(scores[:, c0:c0 + step], dim=0).values   # ascending, per column
        kk = k[c0:c0 + step]
        at = (n - kk).clamp(0, max(n - 1, 0))
        picked = block.gather(0, at[None, :]).squeeze(0).double() if n else out[c0:c0 + step]
        out[c0:c0 + step] = torch.where(kk > 0, picked, out[c0:c0 + step])
    return out


def topk_torch(scores: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (N, k), hits (N, k) bool): each row's k top-scored labels (``torch.topk``, sorted)
    and whether each is a positive (a ``searchsorted`` of row-major keys ``row * L + col``)."""
    n, l = scores.shape
    pos_keys = torch.sort(rows * l + cols).values
    idx_parts, hit_parts = [], []
    step = max(1, _block_entries(scores.device) // max(l, 1))
    for r0 in range(0, n, step):
        idx = torch.topk(scores[r0:r0 + step], k, dim=1, sorted=True).indices
        keys = (torch.arange(r0, r0 + idx.shape[0], device=scores.device)[:, None] * l + idx).reshape(-1)
        if pos_keys.numel():
            loc = torch.searchsorted(pos_keys, keys).clamp_(max=pos_keys.numel() - 1)
            hit = pos_keys[loc] == keys
        else:
            hit = torch.zeros_like(keys, dtype=torch.bool)
        idx_parts.append(idx)
        hit_parts.append(hit.view(idx.shape))
    if not idx_parts:
        empty = torch.zeros((0, k), dtype=torch.int64, device=scores.device)
        return empty, empty.bool()
    return torch.cat(idx_parts), torch.cat(hit_parts)
