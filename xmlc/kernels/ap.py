"""Exact average precision (AUPRC) of every label at once, beside its plain per-label reference.

Average precision is ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds,
equal scores forming one step (scikit-learn's ``average_precision_score``). Every positive
raises recall by ``1/P`` at its own score, so AP is also the mean over a label's positives of
the precision at that positive's score:

    AP = mean over positives p of  #{positives scoring >= s_p} / #{entries scoring >= s_p}.

The reference (:func:`binary_clf_curve`, :func:`ap_per_label_reference`,
:func:`tie_counts_reference`) computes this the plain way, one label at a time: sort the
column descending, keep the last index of each distinct score, cumulative true and false
positives there (scikit-learn's ``_binary_clf_curve``).

The fast path (:func:`ap_per_label`, on :func:`tie_counts`) counts the same numbers for all
labels without sorting the ``(N, L)`` score matrix; only the P positives are sorted. Each
label's distinct positive scores ``u_1 < ... < u_d`` cut the score axis into d + 1 *gaps*;
every entry of the matrix is assigned its gap ``#{i: u_i <= score}`` through a lookup table over
equal cells of the label's key range (two comparisons per entry; a binary search in the rare
cells holding more than two positive keys), the gaps are histogrammed, and a suffix sum of the
histogram gives ``#entries >= u_i`` for every i. Scores are compared as order-preserving int32
keys (:func:`xmlc.kernels.keys.sortable_keys`), so equal float32 scores, ``-0.0`` and ``0.0``
included, tie exactly. The matrix is walked in place, in blocks of labels x rows whose slice of
the table stays in cache; no ``(N, L)`` temporary. ``pooled=True`` treats all N x L entries as
one label (micro averaging). ``benchmarks/bench_metrics.py --cases reference`` times both paths.

:func:`binned_counts` (with :func:`binned_counts_reference`) histograms scores on a grid of
equal-width bins instead: the streaming form, whose AP is the exact AP of the scores rounded
down to the grid.

Inputs: ``scores`` a 2-D float32 numpy array without NaN (callers reject NaN:
``xmlc.eval.inputs.eval_inputs``), ``rows``/``cols`` the int64 coordinates of the positive
entries, each once, in any order. Only numpy, torch and :mod:`xmlc.kernels.keys`.

References:
    * scikit-learn ``sklearn/metrics/_ranking.py``: ``_binary_clf_curve``, ``average_precision_score``.
    * M. Zhu, "Recall, Precision and Average Precision", Working Paper 2004-09, Department of
      Statistics & Actuarial Science, University of Waterloo, 2004.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from xmlc.kernels.keys import floats_from_keys, sortable_keys

__all__ = [
    "TieCounts",
    "tie_counts",
    "ap_per_label",
    "binned_counts",
    "binary_clf_curve",
    "tie_counts_reference",
    "ap_per_label_reference",
    "binned_counts_reference",
]

_CELLS_PER_KEY = 4  # lookup-table cells per distinct positive key
_LABEL_BLOCK = 64  # labels per block of the per-label counts (their lookup tables stay in cache)
_BLOCK_ENTRIES = 1 << 16  # entries per block (its temporaries stay in cache)
_POOLED_BLOCK_ENTRIES = 1 << 21  # entries per block of the pooled (micro) counts: one shared table
_CROWDED = -(1 << 40)  # lookup-table mark of a cell that needs a binary search


class TieCounts(NamedTuple):
    """Per positive entry, the counts at its score; P entries sorted by (label, score).

    Attributes:
        labels: ``(P,)`` int64 label of each positive (0 for all when pooled).
        scores: ``(P,)`` float32 its score (``-0.0`` reads ``0.0``).
        pos_ge: ``(P,)`` int64 positives of the same label (pooled: of any label) scoring ``>=`` it.
        all_ge: ``(P,)`` int64 entries of the same label (pooled: all N * L) scoring ``>=`` it.

    ``pos_ge / all_ge`` is the precision at the threshold ``score``: mean it per label for
    average precision, or turn it into F1 with the positive count (:mod:`xmlc.eval.calibrate`).
    """

    labels: np.ndarray
    scores: np.ndarray
    pos_ge: np.ndarray
    all_ge: np.ndarray


def _check_scores(scores) -> None:
    if not isinstance(scores, np.ndarray) or scores.dtype != np.float32 or scores.ndim != 2:
        got = f"{scores.dtype} {scores.ndim}-D array" if isinstance(scores, np.ndarray) else type(scores).__name__
        raise TypeError(f"scores must be a 2-D float32 numpy array, got {got}")


# --------------------------------------------------------------------------------------------
# The fast path
# --------------------------------------------------------------------------------------------


def ap_per_label(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, *, pooled: bool = False) -> np.ndarray:
    """Exact average precision of each label (or of all entries pooled), from :func:`tie_counts`.

    Args:
        scores: ``(N, L)`` float32, no NaN.
        rows, cols: ``(P,)`` int64 coordinates of the positive entries.
        pooled: one group of all N x L entries (micro AP) instead of one per label.

    Returns:
        float64 ``(L,)`` (``(1,)`` when pooled); NaN for a label without a positive.

    Example:
        >>> s = np.array([[0.9, 0.1], [0.4, 0.8], [0.4, 0.3]], np.float32)
        >>> ap_per_label(s, np.array([0, 1, 2]), np.array([0, 1, 0]))
        array([0.83333333, 1.        ])
    """
    counts = tie_counts(scores, rows, cols, pooled=pooled)
    precision = counts.pos_ge / counts.all_ge
    if pooled:
        sums, positives = np.array([precision.sum()]), np.array([precision.size])
    else:
        sums = np.bincount(counts.labels, weights=precision, minlength=scores.shape[1])
        positives = np.bincount(cols, minlength=scores.shape[1])
    with np.errstate(invalid="ignore"):
        return sums / positives  # 0 / 0 = NaN where a label has no positive


def tie_counts(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, *, pooled: bool = False) -> TieCounts:
    """For every positive entry: #positives and #entries scoring at least as high (ties count).

    Per label, or with ``pooled=True`` over all N x L entries as one "label" (micro averages).
    The gap-table algorithm of the module docstring; :func:`tie_counts_reference` is the plain form.

    Args:
        scores: ``(N, L)`` float32, no NaN.
        rows, cols: ``(P,)`` int64 coordinates of the positive entries.
        pooled: one group of all entries instead of one per label.

    Returns:
        :class:`TieCounts`.

    Example:
        >>> s = np.array([[0.9, 0.1], [0.4, 0.8], [0.4, 0.3]], np.float32)
        >>> c = tie_counts(s, np.array([0, 1, 2]), np.array([0, 1, 0]))
        >>> c.labels, c.pos_ge, c.all_ge  # label 0: 0.4 is scored twice, once by a positive
        (array([0, 0, 1]), array([2, 1, 1]), array([3, 1, 1]))
    """
    _check_scores(scores)
    n, l = scores.shape
    nonneg = scores.size == 0 or bool(scores.view(np.int32).min() >= 0)  # keys = the bits: no copy
    group_of_label = np.zeros(l, np.int64) if pooled else np.arange(l, dtype=np.int64)
    num_groups = 1 if pooled else l

    # The positives, sorted by (group, key): one uint64 per positive packs both.
    pos_group = group_of_label[cols]
    pos_key = sortable_keys(scores[rows, cols], nonnegative=nonneg)
    packed = np.sort(_pack(pos_group, pos_key))
    is_first = np.r_[True, packed[1:] != packed[:-1]] if packed.size else np.zeros(0, bool)
    distinct = packed[is_first]  # each group's distinct positive keys, ascending

    table = _gap_table(distinct, num_groups, _CELLS_PER_KEY)
    if pooled:  # one table for every label: no label blocks, large row blocks
        labels_per_block, entries_per_block = l, _POOLED_BLOCK_ENTRIES
    else:  # a block of labels' tables stays in cache
        labels_per_block, entries_per_block = _LABEL_BLOCK, _BLOCK_ENTRIES
    hist = _gap_histogram(scores, nonneg, group_of_label, table, labels_per_block, entries_per_block)

    # all_ge at the distinct key i of group j, its r-th key: the entries of group j in gaps r + 1
    # and up (gap = number of the group's keys <= the entry), a suffix sum of the histogram
    # within the group, whose gaps are hist[gap_start[j]:gap_start[j + 1]].
    suffix = np.cumsum(hist[::-1])[::-1]
    gap_end = table.gap_start[1:]
    suffix -= np.repeat(suffix[gap_end - 1] - hist[gap_end - 1], table.num_keys + 1)
    distinct_group = (distinct >> np.uint64(32)).astype(np.int64)
    distinct_all_ge = suffix[np.arange(distinct.size) + distinct_group + 1]  # gap_start[j] + r + 1 = i + j + 1

    # pos_ge of a positive = positives of its group from the first one with its key to the end.
    key_index = np.cumsum(is_first) - 1  # each positive's distinct key
    group_end = np.cumsum(np.bincount(pos_group, minlength=num_groups))
    labels = (packed >> np.uint64(32)).astype(np.int64)
    pos_ge = group_end[labels] - np.flatnonzero(is_first)[key_index]
    return TieCounts(labels, _unpack_scores(packed), pos_ge, distinct_all_ge[key_index])


def _pack(groups: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """uint64 ``group << 32 | (key + 2**31)``: sorts by group, then by key (int32 ``keys``)."""
    packed = groups.astype(np.uint64)
    packed <<= np.uint64(32)
    packed |= keys.view(np.uint32) ^ np.uint32(0x80000000)  # + 2**31: signed order to unsigned
    return packed


def _unpack_keys(packed: np.ndarray) -> np.ndarray:
    """The int32 keys of :func:`_pack` (its low 32 bits, minus 2**31)."""
    return (packed.astype(np.uint32) ^ np.uint32(0x80000000)).view(np.int32)


def _unpack_scores(packed: np.ndarray) -> np.ndarray:
    return floats_from_keys(_unpack_keys(packed))


class _GapTable(NamedTuple):
    """Lookup table from a key to its gap, per group over equal cells of the group's key range.

    Per group j (``num_keys[j]`` distinct positive keys, ``key_start[j]`` the first in the
    packed array): cell of key k = ``(clip(k, origin_j, top_j) - origin_j) >> shift_j``, with
    one empty cell below the lowest key, about ``cells_per_key`` cells per distinct key. Per
    cell c: ``base[c]`` = global gap index of a key below every positive key in c, and
    ``first[c]``, ``second[c]`` its lowest two positive keys (``INT32_MAX`` if absent); then

        gap(k) = base[c] + (k >= first[c]) + (k >= second[c])

    is exact when c holds at most two positive keys. Crowded cells, holding more, have
    ``base = _CROWDED`` (< 0): their entries are binary-searched. Group j's gaps 0..num_keys[j]
    are global gap indices ``gap_start[j]..gap_start[j + 1] - 1``; its cells
    ``cell_start[j]..cell_start[j + 1] - 1``.
    """

    num_keys: np.ndarray  # (G,) int64
    key_start: np.ndarray  # (G + 1,)
    gap_start: np.ndarray  # (G + 1,) = key_start + group index
    cell_start: np.ndarray  # (G + 1,)
    origin: np.ndarray  # (G,) int32 key of the bottom of cell 0
    top: np.ndarray  # (G,) int32 highest positive key
    shift: np.ndarray  # (G,) uint32 log2 of the cell width
    base: np.ndarray  # (C,) int64
    first: np.ndarray  # (C,) int32
    second: np.ndarray  # (C,) int32
    distinct: np.ndarray  # (K,) uint64 the packed distinct keys, for the binary search


def _gap_table(distinct: np.ndarray, num_groups: int, cells_per_key: float) -> _GapTable:
    group = (distinct >> np.uint64(32)).astype(np.int64)
    key = _unpack_keys(distinct).astype(np.int64)
    num_keys = np.bincount(group, minlength=num_groups)
    key_start = np.r_[0, np.cumsum(num_keys)]
    gap_start = key_start + np.arange(num_groups + 1)
    # Each group's cell width: the smallest power of two giving at most cells_per_key cells per key.
    has = num_keys > 0
    low = np.zeros(num_groups, np.int64)
    top = np.zeros(num_groups, np.int64)
    low[has], top[has] = key[key_start[:-1][has]], key[key_start[1:][has] - 1]
    max_cells = np.maximum((cells_per_key * num_keys).astype(np.int64), 1)
    shift = np.zeros(num_groups, np.int64)
    while np.any(too_many := ((top - low) >> shift) + 1 > max_cells):
        shift[too_many] += 1
    origin = np.maximum(low - (np.int64(1) << shift), np.iinfo(np.int32).min)  # one empty cell below
    num_cells = ((top - origin) >> shift) + 1
    cell_start = np.r_[0, np.cumsum(num_cells)]
    # Each distinct key's cell, and per cell: keys below it (base), its first two keys.
    key_cell = cell_start[group] + ((key - origin[group]) >> shift[group])
    keys_in_cell = np.bincount(key_cell, minlength=int(cell_start[-1]))
    cell_group = np.repeat(np.arange(num_groups), num_cells)
    keys_below = np.cumsum(keys_in_cell) - keys_in_cell - key_start[cell_group]  # within the group
    base = keys_below + gap_start[cell_group]
    base[keys_in_cell > 2] = _CROWDED
    first = np.full(keys_in_cell.size, np.iinfo(np.int32).max, dtype=np.int32)
    second = first.copy()
    if key_cell.size:
        opens_cell = np.r_[True, key_cell[1:] != key_cell[:-1]]
        first[key_cell[opens_cell]] = key[opens_cell]
        seconds = np.flatnonzero(~opens_cell & np.r_[False, opens_cell[:-1]])
        second[key_cell[seconds]] = key[seconds]
    return _GapTable(num_keys, key_start, gap_start, cell_start, origin.astype(np.int32),
                     top.astype(np.int32), shift.astype(np.uint32), base, first, second, distinct)


def _gap_histogram(scores: np.ndarray, nonneg: bool, group_of_label: np.ndarray, table: _GapTable,
                   labels_per_block: int, entries_per_block: int) -> np.ndarray:
    """Entries per global gap index: every entry of ``scores`` looked up in ``table``.

    The matrix is walked in place (no transpose, no (N, L) temporary) in blocks of
    ``labels_per_block`` labels x rows; the block's slices of the table stay in cache when
    blocks of labels have their own tables. Labels of one block must have consecutive groups.
    """
    n, l = scores.shape
    hist = np.zeros(int(table.gap_start[-1]), dtype=np.int64)
    width = max(1, min(l, labels_per_block))
    rows = max(1, entries_per_block // width)
    buffers = [np.empty(rows * width, dtype) for dtype in (np.int32, np.intp, np.int64, np.int32, np.bool_)]
    for c0 in range(0, l, width):
        c1 = min(l, c0 + width)
        w = c1 - c0
        groups = group_of_label[c0:c1]
        g_lo, g_hi = int(groups[0]), int(groups[-1]) + 1
        cell0, cell1 = table.cell_start[g_lo], table.cell_start[g_hi]
        gap0, gap1 = int(table.gap_start[g_lo]), int(table.gap_start[g_hi])
        key0 = int(table.key_start[g_lo])
        block_keys = table.distinct[key0:table.key_start[g_hi]]  # binary searches stay in cache
        base = table.base[cell0:cell1]
        if gap0:  # gap indices local to the block (crowded cells stay negative)
            base = np.where(base < 0, base, base - gap0)
        first, second = table.first[cell0:cell1], table.second[cell0:cell1]
        origin, top, shift = table.origin[groups], table.top[groups], table.shift[groups]
        cell_offset = table.cell_start[groups] - cell0
        h = np.zeros(gap1 - gap0, dtype=np.int64)
        for r0 in range(0, n, rows):
            raw = scores[r0:r0 + rows, c0:c1]
            m = raw.shape[0]
            key, cell, gap, tmp, ge = (b[: m * w].reshape(m, w) for b in buffers)
            np.clip(sortable_keys(raw, nonnegative=nonneg), origin, top, out=key)
            np.subtract(key, origin, out=tmp)  # in [0, 2**32): read as uint32
            np.right_shift(tmp.view(np.uint32), shift, out=tmp.view(np.uint32))
            np.add(tmp.view(np.uint32), cell_offset, out=cell)
            # mode="clip": the cells are in range by construction, and "raise" would buffer `out`
            base.take(cell, out=gap, mode="clip")
            first.take(cell, out=tmp, mode="clip")
            np.greater_equal(key, tmp, out=ge)
            gap += ge
            second.take(cell, out=tmp, mode="clip")
            np.greater_equal(key, tmp, out=ge)
            gap += ge
            crowded = np.flatnonzero(gap < 0)
            if crowded.size:
                r, c = np.divmod(crowded, w)
                g = groups[c]
                query = _pack(g, sortable_keys(raw[r, c], nonnegative=nonneg))
                # keys of the block <= the query, minus the keys of the groups before g, plus g's gap start
                found = np.searchsorted(block_keys, query, side="right") + key0
                gap.ravel()[crowded] = found - table.key_start[g] + table.gap_start[g] - gap0
            h += np.bincount(gap.ravel(), minlength=gap1 - gap0)
        hist[gap0:gap1] += h
    return hist


def binned_counts(scores: torch.Tensor, targets: torch.Tensor, num_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Histogram a batch into ``(L, T)`` positive and all-entry counts; no ``(B, L, T)`` temporary.

    Bin ``b = floor(score * T)`` clamped to ``[0, T - 1]``: bins are the T equal-width
    intervals of [0, 1]; scores outside [0, 1] fall in the end bins. One ``bincount`` on
    ``label * T + bin`` indices.

    Args:
        scores: ``(B, L)`` tensor, any float dtype and device.
        targets: ``(B, L)`` tensor, positive where ``> 0``, on the device of ``scores``.
        num_bins: T.

    Returns:
        ``(pos_hist, all_hist)``, int64 ``(L, T)`` each.

    Example:
        >>> pos, all_ = binned_counts(torch.tensor([[0.05, 0.95], [0.55, 0.5]]), torch.tensor([[1, 0], [0, 1]]), 2)
        >>> pos.tolist(), all_.tolist()
        ([[1, 0], [0, 1]], [[1, 1], [0, 2]])
    """
    b, l = scores.shape
    bins = (scores.float() * num_bins).floor_().clamp_(0, num_bins - 1).long()
    bins += torch.arange(l, device=scores.device).mul_(num_bins)
    flat = bins.reshape(-1)
    all_hist = torch.bincount(flat, minlength=l * num_bins)
    pos_hist = torch.bincount(flat[targets.reshape(-1) > 0], minlength=l * num_bins)
    return pos_hist.view(l, num_bins), all_hist.view(l, num_bins)


# --------------------------------------------------------------------------------------------
# The plain reference: one label at a time
# --------------------------------------------------------------------------------------------


def binary_clf_curve(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positives at each distinct score threshold, highest threshold first.

    scikit-learn's ``_binary_clf_curve`` without weights: sort the scores descending, keep the
    last index of each run of equal scores, and take the cumulative positives there.

    Args:
        y_true: ``(n,)`` {0, 1} (or bool). y_score: ``(n,)`` scores.

    Returns:
        ``(fps, tps, thresholds)``: int64 ``(d,)``, int64 ``(d,)`` and the d distinct scores
        descending; ``tps[i]`` / ``fps[i]`` count the entries scoring ``>= thresholds[i]``.

    Example:
        >>> binary_clf_curve(np.array([1, 0, 1]), np.array([0.9, 0.4, 0.4]))
        (array([0, 1]), array([1, 2]), array([0.9, 0.4]))
    """
    order = np.argsort(y_score, kind="mergesort")[::-1]
    y_score, y_true = y_score[order], np.asarray(y_true)[order].astype(np.int64)
    last_of_run = np.r_[np.flatnonzero(np.diff(y_score)), y_score.size - 1] if y_score.size else np.zeros(0, int)
    tps = np.cumsum(y_true)[last_of_run]
    fps = 1 + last_of_run - tps
    return fps, tps, y_score[last_of_run]


def _columns(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, pooled: bool):
    """(group, y_true, y_score) per label, or one group of all entries when pooled."""
    _check_scores(scores)
    y = np.zeros(scores.shape, dtype=bool)
    y[rows, cols] = True
    if pooled:
        return [(0, y.ravel(), scores.ravel())]
    return [(j, y[:, j], scores[:, j]) for j in range(scores.shape[1])]


def ap_per_label_reference(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, *,
                           pooled: bool = False) -> np.ndarray:
    """:func:`ap_per_label` the plain way: ``AP = sum_n (R_n - R_{n-1}) P_n`` per label.

    Args, Returns: as :func:`ap_per_label`.

    Example:
        >>> s = np.array([[0.9, 0.1], [0.4, 0.8], [0.4, 0.3]], np.float32)
        >>> ap_per_label_reference(s, np.array([0, 1, 2]), np.array([0, 1, 0]))
        array([0.83333333, 1.        ])
    """
    groups = _columns(scores, rows, cols, pooled)
    out = np.full(len(groups), np.nan)
    for j, y_true, y_score in groups:
        fps, tps, _ = binary_clf_curve(y_true, y_score)
        if tps.size and tps[-1] > 0:
            precision = tps / (tps + fps)
            recall = tps / tps[-1]
            out[j] = np.sum(np.diff(recall, prepend=0.0) * precision)
    return out


def tie_counts_reference(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, *,
                         pooled: bool = False) -> TieCounts:
    """:func:`tie_counts` the plain way: each positive looks up its score on its label's curve.

    Args, Returns: as :func:`tie_counts`.
    """
    out = []
    for j, y_true, y_score in _columns(scores, rows, cols, pooled):
        fps, tps, thresholds = binary_clf_curve(y_true, y_score)
        pos = np.sort(y_score[y_true]) + np.float32(0.0)  # -0.0 reads 0.0
        at = np.searchsorted(-thresholds, -pos)  # thresholds descend: the index of each score
        out.append((np.full(pos.size, j, np.int64), pos, tps[at], tps[at] + fps[at]))
    if not out:
        return TieCounts(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))
    return TieCounts(*(np.concatenate(parts) for parts in zip(*out)))


def binned_counts_reference(scores: torch.Tensor, targets: torch.Tensor,
                            num_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`binned_counts` the plain way: each label's column binned and counted in turn."""
    s, t = scores.float().cpu().numpy(), targets.cpu().numpy() > 0
    pos_hist = np.zeros((s.shape[1], num_bins), np.int64)
    all_hist = np.zeros((s.shape[1], num_bins), np.int64)
    for j in range(s.shape[1]):
        bins = np.clip(np.floor(s[:, j] * np.float32(num_bins)), 0, num_bins - 1).astype(np.int64)
        all_hist[j] = np.bincount(bins, minlength=num_bins)
        pos_hist[j] = np.bincount(bins[t[:, j]], minlength=num_bins)
    return torch.from_numpy(pos_hist), torch.from_numpy(all_hist)
