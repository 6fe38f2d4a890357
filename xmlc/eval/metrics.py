"""Evaluation metrics for multilabel classification with thousands of labels.

Exact and streaming (binned) average precision (AUPRC), P@k, nDCG@k, PSP@k, F1 at given
thresholds, the positive-rate ratio, and :func:`evaluate_all`, one flat dict of all of them.

Conventions:
    * ``scores`` are probabilities, ``(N, L)`` float32 torch tensors (numpy accepted). Exact
      metrics compare scores in float32; ``-0.0`` equals ``0.0``; NaN raises.
    * ``targets`` are dense ``{0, 1}`` tensors/arrays ``(N, L)`` or a scipy sparse matrix (CSR),
      which is never densified.
    * A label is *predicted* when ``score >= threshold`` (the same rule as
      :func:`xmlc.eval.calibrate.apply_thresholds`).

Return types, one rule for every functional metric: an averaged value (``average="macro"`` or
``"micro"``, and every metric without an ``average`` argument: P@k, nDCG@k, PSP@k, the
positive-rate ratio) is a Python ``float``; ``average="none"`` gives a float32 tensor ``(L,)``.
Per-bucket results come from their own functions as ``dict[str, float]``. The
``torchmetrics.Metric`` classes return tensors from ``compute()``, as torchmetrics requires.

Empty-label policy (``empty``): a label with no positive in the evaluation set has no defined
average precision (recall is 0/0). ``"ignore"`` (default) leaves it out of macro averages and
returns NaN for it under ``average="none"``; ``"zero"`` counts it as 0 (torchmetrics >= 1.4).
Either way :func:`evaluate_all` reports how many there were (``num_labels_no_positive``).

Metric math lives once. Every metric starts from :func:`eval_inputs` (validation, the positive
entries). Exact AP, micro and macro, and the F1-optimal thresholds of :mod:`xmlc.eval.calibrate` come
from one counts step, :func:`tie_counts`; the binned AP from ``_binned_counts``; both end in
``_ap_from_counts``. :func:`evaluate_all` validates once and calls the steps of the public
functions; the ``torchmetrics.Metric`` classes (``xmlc/_streaming.py``, loaded on first use)
call the public functions or the same steps.

References:
    * Average precision: scikit-learn ``average_precision_score`` (step-wise, ties form one step).
    * P@k, nDCG@k: the Extreme Classification Repository (Bhatia et al., 2016).
    * PSP@k: Jain, Prabhu, Varma, "Extreme Multi-label Loss Functions for Recommendation,
      Tagging, Ranking & Other Missing Label Applications", KDD 2016.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from xmlc.kernels.keys import floats_from_keys, sortable_keys
from xmlc.stats import BUCKET_NAMES

__all__ = [
    "EvalInputs",
    "eval_inputs",
    "TieCounts",
    "tie_counts",
    "average_precision",
    "binned_average_precision",
    "precision_at_k",
    "ndcg_at_k",
    "psp_at_k",
    "f1_score",
    "positive_rate_ratio",
    "positive_rate_ratio_by_bucket",
    "predicted_counts",
    "evaluate_all",
    "MultilabelAUPRC",
    "BinnedAveragePrecision",
    "threshold_metrics",
    "metrics_table",
    "TABLE_METRICS",
    "results_table",
    "metrics_report",
]

Average = Literal["macro", "micro", "none"]
Empty = Literal["ignore", "zero"]
_AVERAGES = ("macro", "micro", "none")
_EMPTY = ("ignore", "zero")
_CELLS_PER_KEY = 4  # lookup-table cells per distinct positive key (tie_counts)
_LABEL_BLOCK = 64  # labels per block of the per-label counts (their lookup tables stay in cache)
_BLOCK_ENTRIES = 1 << 16  # entries per block (its temporaries stay in cache)
_POOLED_BLOCK_ENTRIES = 1 << 21  # entries per block of the pooled (micro) counts: one shared table
_CROWDED = -(1 << 40)  # lookup-table mark of a cell that needs a binary search
_ROW_CHUNK = 2048


# --------------------------------------------------------------------------------------------
# Input validation and conversion
# --------------------------------------------------------------------------------------------


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


class EvalInputs(NamedTuple):
    """Scores and the positive entries of their targets, validated once (:func:`eval_inputs`).

    Attributes:
        scores: ``(N, L)`` float32 numpy array, no NaN (a view of the caller's array when possible).
        rows, cols: ``(P,)`` int64 row and column of each positive entry, in row-major order.
        counts: ``(L,)`` int64 positives per label.
    """

    scores: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    counts: np.ndarray


def eval_inputs(scores, targets) -> EvalInputs:
    """Validate ``scores`` and ``targets`` and extract the positives: the first step of every metric.

    Args:
        scores: ``(N, L)`` torch tensor or numpy array (converted to float32; NaN raises).
        targets: ``(N, L)`` {0, 1} torch tensor, numpy array or scipy sparse matrix (never
            densified).

    Returns:
        :class:`EvalInputs`.

    Example:
        >>> inputs = eval_inputs(torch.tensor([[0.9, 0.1], [0.4, 0.8]]), torch.tensor([[1, 0], [1, 1]]))
        >>> inputs.rows, inputs.cols, inputs.counts
        (array([0, 1, 1]), array([0, 0, 1]), array([2, 1]))
    """
    s = _scores_np(scores)
    if s.size and np.isnan(s.min()):  # NaN propagates through min; no (N, L) temporary
        raise ValueError("scores contain NaN")
    rows, cols = _positive_entries(targets, s.shape)
    return EvalInputs(s, rows, cols, np.bincount(cols, minlength=s.shape[1]).astype(np.int64))


def _scores_np(scores) -> np.ndarray:
    """Scores as a 2-D float32 numpy array (zero-copy for CPU float32 tensors)."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach()
        if scores.dtype != torch.float32:
            scores = scores.float()
        scores = scores.cpu().numpy()
    elif isinstance(scores, np.ndarray):
        if scores.dtype != np.float32:
            scores = scores.astype(np.float32)
    else:
        raise TypeError(f"scores must be a torch.Tensor or numpy.ndarray, got {type(scores).__name__}")
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (N, L), got shape {tuple(scores.shape)}")
    return scores


def _positive_entries(targets, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``targets`` against ``shape``; (rows, cols) int64 of its positives, row-major."""
    n, l = shape
    if sp.issparse(targets):
        t = sp.csr_matrix(targets)
        if t.shape != (n, l):
            raise ValueError(f"targets shape {t.shape} does not match scores shape {(n, l)}")
        if not t.has_canonical_format:
            t = t.copy()
            t.sum_duplicates()
        if t.nnz and not np.all((t.data == 1) | (t.data == 0)):
            bad = t.data[(t.data != 1) & (t.data != 0)][0]
            raise ValueError(f"targets must hold only 0/1, found {bad!r}")
        keep = t.data != 0
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(t.indptr))[keep]
        return rows, t.indices[keep].astype(np.int64)
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().cpu().numpy()
    if not isinstance(targets, np.ndarray):
        raise TypeError(
            "targets must be a torch.Tensor, numpy.ndarray or scipy sparse matrix, "
            f"got {type(targets).__name__}"
        )
    if targets.shape != (n, l):
        raise ValueError(f"targets shape {targets.shape} does not match scores shape {(n, l)}")
    flat = []
    for r0 in range(0, n, _ROW_CHUNK):
        block = targets[r0:r0 + _ROW_CHUNK].reshape(-1)
        f = np.flatnonzero(block if block.dtype == np.bool_ else block != 0)  # bool: SIMD fast path
        if targets.dtype != np.bool_ and f.size:
            vals = block[f]
            if not np.all(vals == 1):
                raise ValueError(f"targets must hold only 0/1, found {vals[vals != 1][0]!r}")
        flat.append(f + r0 * l)
    rows, cols = np.divmod(np.concatenate(flat) if flat else np.zeros(0, np.int64), max(l, 1))
    return rows.astype(np.int64, copy=False), cols.astype(np.int64, copy=False)


def _thresholds_np(thresholds, num_labels: int) -> np.ndarray:
    """A scalar or (L,) threshold as a float32 array broadcastable against (N, L)."""
    if isinstance(thresholds, torch.Tensor):
        thresholds = thresholds.detach().cpu().numpy()
    t = np.asarray(thresholds, dtype=np.float32)
    if t.ndim == 0:
        return t.reshape(1)
    if t.shape != (num_labels,):
        raise ValueError(f"thresholds must be a scalar or shape ({num_labels},), got shape {t.shape}")
    return t


# --------------------------------------------------------------------------------------------
# The counts pipeline: one step shared by exact AP (macro, micro, none) and calibration
# --------------------------------------------------------------------------------------------


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


def tie_counts(inputs: EvalInputs, *, pooled: bool = False) -> TieCounts:
    """For every positive entry: #positives and #entries scoring at least as high (ties count).

    Per label (or, with ``pooled=True``, over all N x L entries as one "label", for micro
    averages), with no sort of the score matrix: only the positives are sorted. Each label's
    distinct positive scores ``u_1 < ... < u_d`` cut the score axis into d + 1 *gaps*; every
    entry of the matrix is assigned its gap ``#{i: u_i <= score}`` through a lookup table
    (:func:`_gap_table`, :func:`_gap_histogram`), the gaps are histogrammed, and a suffix sum
    of the histogram gives ``#entries >= u_i`` for every i. Scores are compared as
    order-preserving int32 keys (:func:`xmlc._keys.sortable_keys`), so equal scores tie exactly.

    Args:
        inputs: from :func:`eval_inputs`.
        pooled: one group of all entries (micro) instead of one per label.

    Returns:
        :class:`TieCounts`.

    Example:
        >>> inputs = eval_inputs(torch.tensor([[0.9, 0.1], [0.4, 0.8], [0.4, 0.3]]),
        ...                      torch.tensor([[1, 0], [0, 1], [1, 0]]))
        >>> c = tie_counts(inputs)
        >>> c.labels, c.pos_ge, c.all_ge  # label 0: 0.4 is scored twice, once by a positive
        (array([0, 0, 1]), array([2, 1, 1]), array([3, 1, 1]))
    """
    scores = inputs.scores
    n, l = scores.shape
    nonneg = scores.size == 0 or bool(scores.view(np.int32).min() >= 0)  # keys = the bits: no copy
    group_of_label = np.zeros(l, np.int64) if pooled else np.arange(l, dtype=np.int64)
    num_groups = 1 if pooled else l

    # The positives, sorted by (group, key): one uint64 per positive packs both.
    pos_group = group_of_label[inputs.cols]
    pos_key = sortable_keys(scores[inputs.rows, inputs.cols], nonnegative=nonneg)
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


def _ap_from_counts(ap_sum: torch.Tensor, n_pos: torch.Tensor, average: str, empty: str) -> torch.Tensor:
    """Reduce per-label sums of precision-at-each-positive into AP (macro / none).

    ``ap_sum[j]`` is the sum over label j's positives of the precision at that positive's
    tie group; ``n_pos[j]`` its number of positives.
    """
    ap = ap_sum.double() / n_pos.double()  # NaN where n_pos == 0
    if empty == "zero":
        ap = torch.where(n_pos > 0, ap, torch.zeros_like(ap))
    if average == "none":
        return ap.float()
    if average == "micro":  # inputs already pooled into one "label"
        return ap.float().reshape(())
    valid = ~torch.isnan(ap)
    if not valid.any():
        return torch.tensor(float("nan"))
    return ap[valid].mean().float()


def _binned_counts(scores: torch.Tensor, targets: torch.Tensor, num_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Histogram a batch into (L, T) positive and all-entry counts; no (B, L, T) temporary.

    Bin ``b = floor(score * T)`` clamped to ``[0, T - 1]``: bins are the T equal-width
    intervals of [0, 1]; scores outside [0, 1] fall in the end bins.
    """
    b, l = scores.shape
    bins = (scores.float() * num_bins).floor_().clamp_(0, num_bins - 1).long()
    bins += torch.arange(l, device=scores.device).mul_(num_bins)
    flat = bins.reshape(-1)
    all_hist = torch.bincount(flat, minlength=l * num_bins)
    pos_hist = torch.bincount(flat[targets.reshape(-1) > 0], minlength=l * num_bins)
    return pos_hist.view(l, num_bins), all_hist.view(l, num_bins)


def _binned_ap(pos_hist: torch.Tensor, all_hist: torch.Tensor, average: str, empty: str) -> torch.Tensor:
    """AP from (L, T) histograms: exact AP of the scores rounded down to the bin grid."""
    if average == "micro":
        pos_hist, all_hist = pos_hist.sum(0, keepdim=True), all_hist.sum(0, keepdim=True)
    pos_hist, all_hist = pos_hist.double(), all_hist.double()
    pos_ge = pos_hist.flip(1).cumsum(1).flip(1)
    all_ge = all_hist.flip(1).cumsum(1).flip(1)
    prec = torch.where(pos_hist > 0, pos_ge / all_ge.clamp_min(1), torch.zeros_like(pos_ge))
    return _ap_from_counts((pos_hist * prec).sum(1), pos_hist.sum(1), average, empty)



# --------------------------------------------------------------------------------------------
# Functional metrics
# --------------------------------------------------------------------------------------------


def average_precision(
    scores,
    targets,
    *,
    average: Average = "macro",
    empty: Empty = "ignore",
) -> float | torch.Tensor:
    """Exact average precision (area under the step-wise precision-recall curve).

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds, as in scikit-learn:
    equal scores form one step. Computed as the mean over positives of the precision at
    that positive's score, for all labels at once.

    Args:
        scores: ``(N, L)`` probabilities.
        targets: ``(N, L)`` {0, 1} dense or scipy sparse.
        average: ``"macro"`` (mean of per-label AP), ``"micro"`` (AP of all entries pooled),
            ``"none"`` (per-label ``(L,)``).
        empty: policy for labels with no positive: ``"ignore"`` (left out of macro; NaN under
            ``"none"``) or ``"zero"`` (AP = 0).

    Returns:
        float for ``"macro"`` / ``"micro"`` (NaN if no label has a positive under ``"ignore"``);
        float32 tensor ``(L,)`` for ``"none"``.

    Example:
        >>> s = torch.tensor([[0.9, 0.1], [0.4, 0.8], [0.4, 0.3]])
        >>> t = torch.tensor([[1, 0], [0, 1], [1, 0]])
        >>> average_precision(s, t, average="none")
        tensor([0.8333, 1.0000])
        >>> round(average_precision(s, t), 4)
        0.9167
    """
    _check_choice("average", average, _AVERAGES)
    _check_choice("empty", empty, _EMPTY)
    return _average_precision(eval_inputs(scores, targets), average, empty)


def _average_precision(inputs: EvalInputs, average: str, empty: str) -> float | torch.Tensor:
    counts = tie_counts(inputs, pooled=average == "micro")
    precision = counts.pos_ge / counts.all_ge
    if average == "micro":
        ap_sum, n_pos = torch.tensor([precision.sum()]), torch.tensor([precision.size])
    else:
        ap_sum = torch.from_numpy(np.bincount(counts.labels, weights=precision, minlength=inputs.scores.shape[1]))
        n_pos = torch.from_numpy(inputs.counts)
    return _as_result(_ap_from_counts(ap_sum, n_pos, average, empty))


def _as_result(value: torch.Tensor) -> float | torch.Tensor:
    """The module's return rule: a scalar becomes a Python float, an ``(L,)`` tensor stays."""
    return float(value) if value.ndim == 0 else value


def binned_average_precision(
    scores,
    targets,
    *,
    num_bins: int = 1000,
    average: Average = "macro",
    empty: Empty = "ignore",
) -> float | torch.Tensor:
    """Average precision on a grid of ``num_bins`` equal-width score bins over [0, 1].

    Equals the exact AP of the scores rounded down to the grid (ties within a bin merge), so
    it can only lose resolution inside a bin; see :class:`BinnedAveragePrecision` for the
    streaming form and the measured distance from exact.

    Args:
        scores: ``(N, L)`` probabilities (torch or numpy; stays on its device).
        targets: ``(N, L)`` {0, 1} dense or scipy sparse (densified: this is the batch form).
        num_bins: number of bins T >= 2; bin ``floor(score * T)``, clamped to ``[0, T - 1]``.
        average, empty: as in :func:`average_precision`.

    Returns:
        float for ``"macro"`` / ``"micro"``; float32 tensor ``(L,)`` for ``"none"``.

    Example:
        >>> s = torch.tensor([[0.91, 0.1], [0.45, 0.8], [0.42, 0.3]])
        >>> t = torch.tensor([[1, 0], [0, 1], [1, 0]])
        >>> binned_average_precision(s, t, num_bins=10, average="none")  # 0.45 and 0.42 tie
        tensor([0.8333, 1.0000])
    """
    _check_choice("average", average, _AVERAGES)
    _check_choice("empty", empty, _EMPTY)
    _check_num_bins(num_bins)
    s = torch.as_tensor(scores)
    t = _dense_targets(targets, s.shape).to(s.device)
    pos_hist, all_hist = _binned_counts(s, t, num_bins)
    return _as_result(_binned_ap(pos_hist, all_hist, average, empty))


def _check_num_bins(num_bins) -> None:
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
        raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")


def _dense_targets(targets, shape) -> torch.Tensor:
    if sp.issparse(targets):
        targets = targets.toarray()
    t = torch.as_tensor(targets)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"targets shape {tuple(t.shape)} does not match scores shape {tuple(shape)}")
    return t


def _topk_hits(inputs: EvalInputs, k: int) -> np.ndarray:
    """(N, k) bool: whether the j-th highest-scored label of each example is a positive."""
    scores, pos = inputs.scores, inputs
    n, l = scores.shape
    k = min(k, l)
    pos_keys = np.sort(pos.rows * l + pos.cols)
    out = np.empty((n, k), dtype=bool)
    st = torch.from_numpy(scores)
    for r0 in range(0, n, _ROW_CHUNK):
        idx = torch.topk(st[r0:r0 + _ROW_CHUNK], k, dim=1, sorted=True).indices.numpy()
        keys = (np.arange(r0, r0 + idx.shape[0])[:, None] * l + idx).ravel()
        loc = np.searchsorted(pos_keys, keys).clip(max=max(pos_keys.size - 1, 0))
        hit = pos_keys[loc] == keys if pos_keys.size else np.zeros(keys.size, bool)
        out[r0:r0 + idx.shape[0]] = hit.reshape(idx.shape)
    return out


def precision_at_k(scores, targets, k: int) -> float:
    """P@k = mean over examples of (#positives among the k top-scored labels) / k.

    Examples without positives count as 0 (Extreme Classification Repository convention).
    Score ties inside the top k are broken by ``torch.topk``.

    Args:
        scores: ``(N, L)`` scores (any monotone scale: probabilities or logits).
        targets: ``(N, L)`` {0, 1} dense or scipy sparse (never densified).
        k: number of top-scored labels per example, ``>= 1``; ``k > L`` counts all L.

    Returns:
        float in [0, 1].

    Example:
        >>> s = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7]])
        >>> t = torch.tensor([[1, 0, 0], [0, 0, 1]])
        >>> precision_at_k(s, t, 1), precision_at_k(s, t, 2)
        (0.5, 0.5)
    """
    k = _check_k(k)
    return float(_topk_hits(eval_inputs(scores, targets), k).sum(1).mean() / k)


def _check_k(k) -> int:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return int(k)


def _ndcg(hits: np.ndarray, n_pos: np.ndarray, k: int) -> float:
    """Mean nDCG@k from the (N, >= k) top-k hits and the positives per example."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits[:, :k].astype(np.float64) @ disc[: hits[:, :k].shape[1]]
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(n_pos, k)]
    return float(np.mean(np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1), 0.0)))


def ndcg_at_k(scores, targets, k: int) -> float:
    """nDCG@k = DCG@k / ideal DCG@k with DCG@k = sum_{r<=k} y_(r) / log2(r + 1), averaged.

    The ideal DCG uses ``min(k, #positives)`` positives; examples without positives count as 0.

    Args:
        scores: ``(N, L)`` scores. targets: ``(N, L)`` {0, 1} dense or scipy sparse.
        k: cut-off rank, ``>= 1``.

    Returns:
        float in [0, 1], the mean over the N examples.

    Example:
        >>> s = torch.tensor([[0.9, 0.1, 0.5]])
        >>> t = torch.tensor([[0, 0, 1]])
        >>> round(ndcg_at_k(s, t, 2), 4)  # the positive at rank 2: 1 / log2(3)
        0.6309
    """
    k = _check_k(k)
    inputs = eval_inputs(scores, targets)
    return _ndcg(_topk_hits(inputs, k), np.bincount(inputs.rows, minlength=inputs.scores.shape[0]), k)


def _psp(inputs: EvalInputs, k: int, prop: np.ndarray) -> float:
    scores, pos = inputs.scores, inputs
    n, l = scores.shape
    inv = 1.0 / prop.astype(np.float64)
    k_ = min(k, l)
    pos_keys = np.sort(pos.rows * l + pos.cols)
    num = 0.0
    st = torch.from_numpy(scores)
    for r0 in range(0, n, _ROW_CHUNK):
        idx = torch.topk(st[r0:r0 + _ROW_CHUNK], k_, dim=1).indices.numpy()
        keys = (np.arange(r0, r0 + idx.shape[0])[:, None] * l + idx).ravel()
        loc = np.searchsorted(pos_keys, keys).clip(max=max(pos_keys.size - 1, 0))
        hit = pos_keys[loc] == keys if pos_keys.size else np.zeros(keys.size, bool)
        num += float(inv[idx.ravel()][hit].sum())
    # best achievable: each example's k positives with the largest 1/propensity
    w = inv[pos.cols]
    order = np.lexsort((-w, pos.rows))
    rows_sorted, w_sorted = pos.rows[order], w[order]
    start = np.searchsorted(rows_sorted, rows_sorted, side="left")
    rank = np.arange(rows_sorted.size) - start
    den = float(w_sorted[rank < k].sum())
    return num / den if den > 0 else float("nan")


def psp_at_k(scores, targets, k: int, propensities) -> float:
    """Propensity-scored precision PSP@k (Jain et al., 2016), normalised.

    ``sum_i sum_{l in top-k(i)} y_il / p_l`` divided by its best achievable value (each
    example's positives with the k largest ``1/p_l``), as in pyxclib and the Extreme
    Classification Repository tables.

    Args:
        scores: ``(N, L)`` scores. targets: ``(N, L)`` {0, 1} dense or scipy sparse.
        k: cut-off rank, ``>= 1``.
        propensities: ``(L,)`` values in (0, 1], e.g. ``xmlc.stats.propensity(counts, N)``.

    Returns:
        float in [0, 1]; NaN if no example has a positive.

    Example:
        >>> s = torch.tensor([[0.9, 0.1, 0.5]])
        >>> t = torch.tensor([[1, 0, 1]])
        >>> psp_at_k(s, t, 1, torch.tensor([0.5, 1.0, 0.25]))  # (1/0.5) / (1/0.25)
        0.5
    """
    k = _check_k(k)
    inputs = eval_inputs(scores, targets)
    return _psp(inputs, k, _propensities_np(propensities, inputs.scores.shape[1]))


def _propensities_np(propensities, num_labels: int) -> np.ndarray:
    p = np.asarray(propensities.detach().cpu() if isinstance(propensities, torch.Tensor) else propensities,
                   dtype=np.float64)
    if p.shape != (num_labels,):
        raise ValueError(f"propensities must have shape ({num_labels},), got {p.shape}")
    if not np.all(p > 0):
        raise ValueError(f"propensities must be > 0, found {p[~(p > 0)][0]!r}")
    return p


def predicted_counts(scores, thresholds) -> np.ndarray:
    """Predicted positives per label at ``score >= threshold``, in row chunks (no (N, L) mask).

    Args:
        scores: ``(N, L)`` torch tensor or numpy array.
        thresholds: a scalar or ``(L,)``.

    Returns:
        int64 numpy array ``(L,)``.

    Example:
        >>> predicted_counts(np.array([[0.9, 0.2], [0.6, 0.7]], np.float32), 0.5).tolist()
        [2, 1]
    """
    scores = _scores_np(scores)
    n, l = scores.shape
    thr = _thresholds_np(thresholds, l)
    predicted = np.zeros(l, dtype=np.int64)
    for r0 in range(0, n, _ROW_CHUNK):
        predicted += np.count_nonzero(scores[r0:r0 + _ROW_CHUNK] >= thr, axis=0)
    return predicted


def _decision_counts(inputs: EvalInputs, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """Per label: (#predicted positives, #true positives among them) at ``score >= threshold``."""
    scores, pos = inputs.scores, inputs
    l = scores.shape[1]
    thr = _thresholds_np(thresholds, l)
    predicted = predicted_counts(scores, thresholds)
    ps = scores[pos.rows, pos.cols]
    hit = ps >= (thr[pos.cols] if thr.size > 1 else thr[0])
    tp = np.bincount(pos.cols[hit], minlength=l)
    return predicted, tp


def _f1_from_counts(predicted, tp, n_pos, average: str, empty: str):
    fp, fn = predicted - tp, n_pos - tp
    if average == "micro":
        den = 2 * tp.sum() + fp.sum() + fn.sum()
        return float(2 * tp.sum() / den) if den > 0 else 0.0
    den = 2 * tp + fp + fn
    f1 = np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)
    if empty == "ignore":
        f1 = np.where(n_pos > 0, f1, np.nan)
    if average == "none":
        return torch.from_numpy(f1.astype(np.float32))
    return float(np.nanmean(f1)) if np.any(~np.isnan(f1)) else float("nan")


def f1_score(
    scores,
    targets,
    thresholds=0.5,
    *,
    average: Average = "micro",
    empty: Empty = "ignore",
) -> float | torch.Tensor:
    """F1 of the decisions ``score >= thresholds`` (scalar or per label ``(L,)``).

    Micro pools TP/FP/FN over all labels. Macro averages per-label F1; a label with no
    positive is left out (``empty="ignore"``, NaN under ``"none"``) or counted with its F1,
    which is 0 (``"zero"``, scikit-learn's ``zero_division=0``).

    Args:
        scores: ``(N, L)`` probabilities. targets: ``(N, L)`` {0, 1} dense or scipy sparse.
        thresholds: decision threshold, a scalar or per label ``(L,)`` (e.g. from
            :func:`xmlc.eval.calibrate.fit_thresholds`).
        average: ``"micro"``, ``"macro"`` or ``"none"``. empty: empty-label policy.

    Returns:
        float for micro/macro, ``(L,)`` float32 tensor for ``average="none"``.

    Example:
        >>> s = torch.tensor([[0.9, 0.1], [0.4, 0.8], [0.6, 0.3]])
        >>> t = torch.tensor([[1, 0], [0, 1], [1, 0]])
        >>> f1_score(s, t, 0.5)  # TP 3, FP 0, FN 0
        1.0
        >>> f1_score(s, t, torch.tensor([0.95, 0.5]), average="none")
        tensor([0., 1.])
    """
    _check_choice("average", average, _AVERAGES)
    _check_choice("empty", empty, _EMPTY)
    inputs = eval_inputs(scores, targets)
    predicted, tp = _decision_counts(inputs, thresholds)
    return _f1_from_counts(predicted, tp, inputs.counts, average, empty)


def _rate_ratio(predicted, n_pos) -> float:
    total = n_pos.sum()
    return float(predicted.sum() / total) if total > 0 else float("nan")


def positive_rate_ratio(scores, targets, thresholds=0.5) -> float:
    """Predicted positives / true positives at ``score >= thresholds``; > 1 means over-predicting.

    Args:
        scores: ``(N, L)`` probabilities. targets: ``(N, L)`` {0, 1} dense or scipy sparse.
        thresholds: decision threshold, a scalar or per label ``(L,)``.

    Returns:
        float; NaN if there is no true positive.

    Example:
        >>> s = torch.tensor([[0.9, 0.6], [0.4, 0.8]])
        >>> positive_rate_ratio(s, torch.tensor([[1, 0], [0, 1]]))  # 3 predicted / 2 true
        1.5
    """
    inputs = eval_inputs(scores, targets)
    predicted, _ = _decision_counts(inputs, thresholds)
    return _rate_ratio(predicted, inputs.counts)


def positive_rate_ratio_by_bucket(scores, targets, thresholds=0.5, *, buckets) -> dict[str, float]:
    """:func:`positive_rate_ratio` over all labels and within each label-frequency bucket.

    Args:
        scores, targets, thresholds: as in :func:`positive_rate_ratio`.
        buckets: int ``(L,)`` bucket ids, 0 head, 1 torso, 2 tail
            (``xmlc.stats.frequency_buckets``; names in ``xmlc.stats.BUCKET_NAMES``).

    Returns:
        ``{"all": r, "head": r, "torso": r, "tail": r}``; NaN where the labels in question have
        no true positive.

    Example:
        >>> s = torch.tensor([[0.9, 0.6], [0.4, 0.8]])
        >>> positive_rate_ratio_by_bucket(s, torch.tensor([[1, 0], [0, 1]]), buckets=[0, 2])
        {'all': 1.5, 'head': 1.0, 'torso': nan, 'tail': 2.0}
    """
    inputs = eval_inputs(scores, targets)
    predicted, _ = _decision_counts(inputs, thresholds)
    return _rate_ratios_by_bucket(predicted, inputs.counts, _buckets_np(buckets, inputs.scores.shape[1]))


def _rate_ratios_by_bucket(predicted, n_pos, buckets: np.ndarray) -> dict[str, float]:
    out = {"all": _rate_ratio(predicted, n_pos)}
    for i, name in enumerate(BUCKET_NAMES):
        out[name] = _rate_ratio(predicted[buckets == i], n_pos[buckets == i])
    return out


def _buckets_np(buckets, num_labels: int) -> np.ndarray:
    b = np.asarray(buckets.detach().cpu() if isinstance(buckets, torch.Tensor) else buckets)
    if b.shape != (num_labels,):
        raise ValueError(f"buckets must have shape ({num_labels},), got {b.shape}")
    if b.size and (b.min() < 0 or b.max() >= len(BUCKET_NAMES)):
        raise ValueError(f"buckets must be in 0..{len(BUCKET_NAMES) - 1}, got values {np.unique(b)}")
    return b


def evaluate_all(
    scores,
    targets,
    *,
    thresholds=0.5,
    ks: Sequence[int] = (1, 3, 5),
    buckets=None,
    propensities=None,
    empty: Empty = "ignore",
    prefix: str = "",
) -> dict[str, float]:
    """All evaluation numbers in one flat dict with stable names.

    Keys (each with ``prefix`` prepended): ``auprc_micro``, ``auprc_macro``, ``p@k``, ``ndcg@k``
    for k in ``ks``, ``psp@k`` (only with ``propensities``), ``f1_micro``, ``f1_macro``,
    ``positive_rate_ratio``, ``num_labels_no_positive``, and with ``buckets``
    ``auprc_macro_{head,torso,tail}`` and ``positive_rate_ratio_{head,torso,tail}``.

    Args:
        scores: ``(N, L)`` probabilities. targets: ``(N, L)`` {0,1} dense or CSR.
        thresholds: decision threshold(s) for F1 and the positive-rate ratio, scalar or ``(L,)``.
        buckets: int array ``(L,)`` (0 head, 1 torso, 2 tail). propensities: ``(L,)``.
        empty: empty-label policy for the macro averages (see module docstring).
        prefix: prepended to every key (e.g. ``"val/"``).

    Returns:
        ``dict[str, float]`` (``num_labels_no_positive`` is an int).

    Example:
        >>> s = torch.tensor([[0.9, 0.1], [0.4, 0.8], [0.6, 0.3]])
        >>> t = torch.tensor([[1, 0], [0, 1], [1, 0]])
        >>> evaluate_all(s, t, ks=(1,))["p@1"]
        1.0
    """
    _check_choice("empty", empty, _EMPTY)
    ks = [_check_k(k) for k in ks]
    out = _evaluate_all(eval_inputs(scores, targets), thresholds, ks, buckets, propensities, empty)
    return {prefix + k: v for k, v in out.items()}


def _evaluate_all(inputs: EvalInputs, thresholds, ks, buckets, propensities, empty: str) -> dict[str, float]:
    """:func:`evaluate_all` on validated inputs: the steps of the public metrics, in turn."""
    n, l = inputs.scores.shape
    out: dict[str, float] = {}

    out["auprc_micro"] = _average_precision(inputs, "micro", empty)
    per_label = _average_precision(inputs, "none", empty).numpy()
    out["auprc_macro"] = _nanmean(per_label)  # = _average_precision(inputs, "macro", empty)

    if ks:
        hits = _topk_hits(inputs, max(ks))
        for k in ks:
            out[f"p@{k}"] = float(hits[:, :k].sum(1).mean() / k)
        positives_per_row = np.bincount(inputs.rows, minlength=n)
        for k in ks:
            out[f"ndcg@{k}"] = _ndcg(hits, positives_per_row, k)
        if propensities is not None:
            prop = _propensities_np(propensities, l)
            for k in ks:
                out[f"psp@{k}"] = _psp(inputs, k, prop)

    if buckets is not None:
        b = _buckets_np(buckets, l)
        for i, name in enumerate(BUCKET_NAMES):
            out[f"auprc_macro_{name}"] = _nanmean(per_label[b == i])
    out |= _threshold_metrics(inputs, thresholds, buckets, empty)
    out["num_labels_no_positive"] = int((inputs.counts == 0).sum())
    return out


def _threshold_metrics(inputs: EvalInputs, thresholds, buckets, empty: str) -> dict[str, float]:
    """F1 (micro, macro) and positive-rate ratios (all, per bucket) from one pass of decisions."""
    predicted, tp = _decision_counts(inputs, thresholds)
    out = {"f1_micro": _f1_from_counts(predicted, tp, inputs.counts, "micro", empty),
           "f1_macro": _f1_from_counts(predicted, tp, inputs.counts, "macro", empty),
           "positive_rate_ratio": _rate_ratio(predicted, inputs.counts)}
    if buckets is not None:
        ratios = _rate_ratios_by_bucket(predicted, inputs.counts, _buckets_np(buckets, inputs.scores.shape[1]))
        out |= {f"positive_rate_ratio_{name}": ratios[name] for name in BUCKET_NAMES}
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


# --------------------------------------------------------------------------------------
# Threshold metrics and result tables (used by train / evaluate)
# --------------------------------------------------------------------------------------


def threshold_metrics(scores, labels, thresholds, buckets=None) -> dict:
    """The threshold-dependent metrics (F1, positive-rate ratio) at ``thresholds``.

    Args:
        scores: ``(N, L)`` probabilities.
        labels: ``(N, L)`` CSR {0, 1} targets.
        thresholds: a float or ``(L,)`` per-label thresholds.
        buckets: optional frequency buckets (:func:`xmlc.stats.frequency_buckets`); adds
            ``positive_rate_ratio_<bucket>``.

    Returns:
        ``{"f1_micro", "f1_macro", "positive_rate_ratio"[, "positive_rate_ratio_<bucket>" ...]}``
        as floats.

    Example:
        >>> s = torch.tensor([[0.9, 0.6], [0.4, 0.8]])
        >>> threshold_metrics(s, torch.tensor([[1, 0], [0, 1]]), 0.5)["positive_rate_ratio"]
        1.5
    """
    return _threshold_metrics(eval_inputs(scores, labels), thresholds, buckets, "ignore")


def metrics_report(scores, targets, thresholds: dict | None = None, *, ks: Sequence[int] = (1, 3, 5),
                   buckets=None, propensities=None) -> dict[str, dict[str, float]]:
    """The metrics of ``scores`` at 0.5 and at each set of named ``thresholds``: what
    ``xmlc.evaluate`` and the end of a training run report.

    Args:
        scores: ``(N, L)`` probabilities. targets: ``(N, L)`` {0,1} dense or CSR.
        thresholds: ``{name: scalar or (L,) thresholds}``, e.g. ``{"calibrated": t}``; None: none.
        ks, buckets, propensities: as in :func:`evaluate_all`.

    Returns:
        ``{"at_0.5": evaluate_all(...) at 0.5}`` plus, for each name, the same dict with the
        threshold metrics (:func:`threshold_metrics`) at ``thresholds[name]``; all floats.

    Example:
        >>> s = torch.tensor([[0.9, 0.1], [0.4, 0.8], [0.6, 0.3]])
        >>> t = torch.tensor([[1, 0], [0, 1], [1, 0]])
        >>> r = metrics_report(s, t, {"strict": torch.tensor([0.7, 0.7])}, ks=(1,))
        >>> r["at_0.5"]["f1_micro"], round(r["strict"]["f1_micro"], 4)
        (1.0, 0.8)
    """
    inputs = eval_inputs(scores, targets)  # validated once for every set of thresholds
    at_half = _evaluate_all(inputs, 0.5, [_check_k(k) for k in ks], buckets, propensities, "ignore")
    report = {"at_0.5": {k: float(v) for k, v in at_half.items()}}
    for name, t in (thresholds or {}).items():
        report[name] = report["at_0.5"] | _threshold_metrics(inputs, t, buckets, "ignore")
    return report


TABLE_METRICS = ("auprc_micro", "auprc_macro", "p@1", "p@3", "p@5", "f1_micro", "f1_macro",
                 "positive_rate_ratio")


def metrics_table(columns: list[tuple[str, dict]], title: str = "metric") -> str:
    """Markdown table: one row per metric in :data:`TABLE_METRICS`, one column per (name, metrics).

    Args:
        columns: ``[(column name, metrics dict)]``; rows are the metrics of the first dict that
            are in :data:`TABLE_METRICS` (missing ones read NaN in other columns).
        title: the header of the first column.

    Returns:
        the table, lines joined by newlines (values with 4 decimals).

    Example:
        >>> print(metrics_table([("@0.5", {"p@1": 0.5, "f1_micro": 0.25})]))
        | metric | @0.5 |
        |---|---:|
        | p@1 | 0.5000 |
        | f1_micro | 0.2500 |
    """
    lines = [f"| {title} | " + " | ".join(name for name, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for metric in TABLE_METRICS:
        if metric in columns[0][1]:
            cells = " | ".join(f"{values.get(metric, float('nan')):.4f}" for _, values in columns)
            lines.append(f"| {metric} | {cells} |")
    return "\n".join(lines)


def results_table(results: dict) -> str:
    """A short Markdown table of the final metrics (test if there is a test split, else val).

    Args:
        results: a run's results: ``"test"`` / ``"test_calibrated"`` (or ``"val"`` /
            ``"val_calibrated"``) metric dicts, optionally ``"test_prior"`` / ``"val_prior"``.

    Returns:
        :func:`metrics_table` of those columns.

    Example:
        >>> print(results_table({"val": {"p@1": 0.5}, "val_calibrated": {"p@1": 0.5}}))
        | val | @0.5 | calibrated |
        |---|---:|---:|
        | p@1 | 0.5000 | 0.5000 |
    """
    split = "test" if "test" in results else "val"
    columns = [("@0.5", results[split]), ("calibrated", results[f"{split}_calibrated"])]
    if f"{split}_prior" in results:
        columns.append(("ln(pos_weight)", results[f"{split}_prior"]))
    return metrics_table(columns, title=split)
