"""Evaluation metrics for multilabel classification with thousands of labels.

Exact and streaming (binned) average precision (AUPRC), P@k, nDCG@k, PSP@k, F1 at given
thresholds, the positive-rate ratio, and :func:`evaluate_all`, one flat dict of all of them.

Conventions:
    * ``scores`` are probabilities, ``(N, L)`` float32 torch tensors (numpy accepted). Exact
      metrics compare scores in float32; ``-0.0`` equals ``0.0``; NaN raises.
    * ``targets`` are dense ``{0, 1}`` tensors/arrays ``(N, L)`` or a scipy sparse matrix (CSR),
      which is never densified.
    * A label is *predicted* when ``score >= threshold`` (the same rule as
      :func:`xmlc.calibrate.apply_thresholds`).

Return types, one rule for every functional metric: an averaged value (``average="macro"`` or
``"micro"``, and every metric without an ``average`` argument: P@k, nDCG@k, PSP@k, the
positive-rate ratio) is a Python ``float``; ``average="none"`` gives a float32 tensor ``(L,)``.
Per-bucket results come from their own functions as ``dict[str, float]``. The
``torchmetrics.Metric`` classes return tensors from ``compute()``, as torchmetrics requires.

Empty-label policy (``empty``): a label with no positive in the evaluation set has no defined
average precision (recall is 0/0). ``"ignore"`` (default) leaves it out of macro averages and
returns NaN for it under ``average="none"``; ``"zero"`` counts it as 0 (torchmetrics >= 1.4).
Either way :func:`evaluate_all` reports how many there were (``num_labels_no_positive``).

Metric math lives once: the functional metrics and the ``torchmetrics.Metric`` classes at the
bottom call the same private steps (``_ap_tie_counts`` / ``_binned_counts`` then
``_ap_from_counts``).

References:
    * Average precision: scikit-learn ``average_precision_score`` (step-wise, ties form one step).
    * P@k, nDCG@k: the Extreme Classification Repository (Bhatia et al., 2016).
    * PSP@k: Jain, Prabhu, Varma, "Extreme Multi-label Loss Functions for Recommendation,
      Tagging, Ranking & Other Missing Label Applications", KDD 2016.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torchmetrics import Metric

from xmlc.stats import BUCKET_NAMES

__all__ = [
    "average_precision",
    "binned_average_precision",
    "precision_at_k",
    "ndcg_at_k",
    "psp_at_k",
    "f1_score",
    "positive_rate_ratio",
    "positive_rate_ratio_by_bucket",
    "evaluate_all",
    "MultilabelAUPRC",
    "BinnedAveragePrecision",
    "threshold_metrics",
    "metrics_table",
    "TABLE_METRICS",
    "results_table",
]

Average = Literal["macro", "micro", "none"]
Empty = Literal["ignore", "zero"]
_AVERAGES = ("macro", "micro", "none")
_EMPTY = ("ignore", "zero")
_LABEL_CHUNK_BYTES = 32 * 2**20  # scores per row chunk of the micro counts
_LABEL_BLOCK = 64  # labels per block of the per-label counts (their lookup tables stay in cache)
_BLOCK_ENTRIES = 1 << 16  # entries per block (its temporaries stay in cache)
_CROWDED = -(1 << 40)  # lookup-table mark of a cell that needs a binary search
_ROW_CHUNK = 2048


# --------------------------------------------------------------------------------------------
# Input validation and conversion
# --------------------------------------------------------------------------------------------


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


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


class _Positives:
    """The positive entries of a target matrix: rows, cols (row-major order), per-label counts."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]):
        self.rows = rows.astype(np.int64, copy=False)
        self.cols = cols.astype(np.int64, copy=False)
        self.shape = shape
        self.counts = np.bincount(self.cols, minlength=shape[1]).astype(np.int64)


def _positives(targets, shape: tuple[int, int]) -> _Positives:
    """Validate ``targets`` against ``shape`` and extract its positive entries."""
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
        cols = t.indices[keep].astype(np.int64)
        return _Positives(rows, cols, shape)
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
    return _Positives(rows, cols, shape)


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


def _order_key(x: np.ndarray) -> np.ndarray:
    """uint32 keys that sort like the float32 values ``x`` (``-0.0`` must be normalised first)."""
    u = x.view(np.uint32)
    mask = (x.view(np.int32) >> 31).view(np.uint32)  # all ones for negative values
    mask |= np.uint32(0x80000000)
    mask ^= u
    return mask


def _check_finite(x: np.ndarray, name: str = "scores") -> None:
    if x.size and np.isnan(x.min()):  # NaN propagates through min; no (N, L) temporary
        raise ValueError(f"{name} contain NaN")


# --------------------------------------------------------------------------------------------
# Private steps shared by the functional metrics, the Metric classes and calibration
# --------------------------------------------------------------------------------------------


def _score_keys(scores: np.ndarray):
    """Functions mapping float32 blocks to uint32 keys that sort like the scores, and back.

    Non-negative scores (the usual probabilities, no ``-0.0``) are their own bit patterns, a
    zero-copy view; otherwise :func:`_order_key` after normalising ``-0.0`` (which comes back
    as ``0.0``).
    """
    if not scores.size or scores.view(np.int32).min() >= 0:  # no sign bit anywhere
        return (lambda x: x.view(np.uint32)), (lambda k: k.view(np.float32))

    def value_of(k: np.ndarray) -> np.ndarray:
        neg = k < np.uint32(0x80000000)
        return np.where(neg, ~k, k ^ np.uint32(0x80000000)).view(np.float32)

    return (lambda x: _order_key(x + np.float32(0.0))), value_of


def _ap_tie_counts(scores: np.ndarray, pos: _Positives, cells_per_key: int = 4):
    """Per positive entry: its label, score, #positives and #entries with score >= its score.

    No sort of the scores: only the positives need a rank. Per label j, with ``u_j`` its
    sorted distinct positive keys (order-preserving uint32 keys of the float32 scores), every
    entry of column j gets its gap ``g = #{u in u_j : u <= key}``; a histogram of the gaps and
    a suffix sum per label give ``#entries >= u`` for every ``u``. The gap comes from a lookup
    table over equal cells of label j's key range (about ``cells_per_key`` cells per distinct
    key): ``g = base[cell] + (key >= first[cell]) + (key >= second[cell])``, exact when the
    cell holds at most two positive keys; the few entries in cells holding more (0.6 % on
    the benchmark data) are binary-searched. Any monotone cell map is exact; equal cells
    only keep the table small. The score matrix is walked in blocks of ``_LABEL_BLOCK``
    labels x rows, in place (no transpose), so each block's slice of the table and the
    temporaries stay in cache. No Python loop over labels or examples.

    Returns:
        labels (P,) int64, scores (P,) float32, pos_ge (P,) int64, all_ge (P,) int64, sorted
        by (label, score).
    """
    n, l = scores.shape
    key_of, value_of = _score_keys(scores)
    # distinct (label, key) pairs of the positives, sorted; one uint64 per pair
    pkey = key_of(scores[pos.rows, pos.cols])
    pair = np.sort((pos.cols.astype(np.uint64) << np.uint64(32)) | pkey)
    new = np.r_[True, pair[1:] != pair[:-1]] if pair.size else np.zeros(0, bool)
    u = pair[new]
    ulab = (u >> np.uint64(32)).astype(np.int64)
    ukey = (u & np.uint64(0xFFFFFFFF)).astype(np.int64)
    d = np.bincount(ulab, minlength=l)  # distinct positive keys per label
    uptr = np.r_[0, np.cumsum(d)]
    goff = np.r_[0, np.cumsum(d + 1)]  # label j's gaps 0..d_j live at goff[j]..goff[j+1]-1
    # per label cells of 2**shift keys from origin (one empty cell below the lowest key)
    lo, hi = np.zeros(l, np.int64), np.zeros(l, np.int64)
    has = d > 0
    lo[has], hi[has] = ukey[uptr[:-1][has]], ukey[uptr[1:][has] - 1]
    target = np.maximum(cells_per_key * d, 1)
    shift = np.zeros(l, np.int64)
    while np.any(too_many := ((hi - lo) >> shift) + 1 > target):
        shift[too_many] += 1
    origin = np.maximum(lo - (np.int64(1) << shift), 0)
    cells = ((hi - origin) >> shift) + 1
    coff = np.r_[0, np.cumsum(cells)]
    ucell = coff[ulab] + ((ukey - origin[ulab]) >> shift[ulab])
    per_cell = np.bincount(ucell, minlength=int(coff[-1]))
    cell_lab = np.repeat(np.arange(l), cells)
    base = np.cumsum(per_cell) - per_cell - uptr[cell_lab] + goff[cell_lab]  # global gap index
    base[per_cell > 2] = _CROWDED  # more than two positive keys in the cell: binary search
    first = np.full(per_cell.size, np.iinfo(np.uint32).max, dtype=np.uint32)
    second = first.copy()
    if ucell.size:
        starts = np.r_[True, ucell[1:] != ucell[:-1]]
        first[ucell[starts]] = ukey[starts]
        seconds = np.flatnonzero(~starts & np.r_[False, starts[:-1]])
        second[ucell[seconds]] = ukey[seconds]
    del cell_lab, per_cell, ucell

    hist = np.zeros(int(goff[-1]), dtype=np.int64)
    origin32, hi32, shift32 = origin.astype(np.uint32), hi.astype(np.uint32), shift.astype(np.uint32)
    w_max = min(l, _LABEL_BLOCK)
    rows = max(1, _BLOCK_ENTRIES // w_max)
    k_buf = np.empty(rows * w_max, np.uint32)
    c_buf = np.empty(rows * w_max, np.intp)
    g_buf = np.empty(rows * w_max, np.int64)
    f_buf = np.empty(rows * w_max, np.uint32)
    b_buf = np.empty(rows * w_max, np.bool_)
    for c0 in range(0, l, w_max):
        c1 = min(l, c0 + w_max)
        w = c1 - c0
        g0, g1 = int(goff[c0]), int(goff[c1])
        u0 = int(uptr[c0])
        u_c = u[u0:uptr[c1]]  # the block's distinct keys: binary searches stay in cache
        base_c = base[coff[c0]:coff[c1]]
        base_c = np.where(base_c < 0, _CROWDED, base_c - g0)  # gap index local to the label block
        first_c, second_c = first[coff[c0]:coff[c1]], second[coff[c0]:coff[c1]]
        cell0 = coff[c0:c1] - coff[c0]
        lo_c, hi_c, sh_c = origin32[c0:c1], hi32[c0:c1], shift32[c0:c1]
        h = np.zeros(g1 - g0, dtype=np.int64)
        for r0 in range(0, n, rows):
            raw = scores[r0:r0 + rows, c0:c1]
            m = raw.shape[0]
            key, cell, g, f, ge = (b[: m * w].reshape(m, w) for b in (k_buf, c_buf, g_buf, f_buf, b_buf))
            np.clip(key_of(raw), lo_c, hi_c, out=key)
            np.subtract(key, lo_c, out=f)
            np.right_shift(f, sh_c, out=f)
            np.add(f, cell0, out=cell)
            # mode="clip": the cells are in range by construction, and "raise" would buffer out
            base_c.take(cell, out=g, mode="clip")
            first_c.take(cell, out=f, mode="clip")
            np.greater_equal(key, f, out=ge)
            g += ge
            second_c.take(cell, out=f, mode="clip")
            np.greater_equal(key, f, out=ge)
            g += ge
            miss = np.flatnonzero(g < 0)
            if miss.size:
                r, c = np.divmod(miss, w)
                lab = c + c0
                q = (lab.astype(np.uint64) << np.uint64(32)) | key_of(raw[r, c])
                g.ravel()[miss] = np.searchsorted(u_c, q, side="right") + u0 - uptr[lab] + goff[lab] - g0
            h += np.bincount(g.ravel(), minlength=g1 - g0)
        hist[g0:g1] = h
    # ge[t] = #entries of its label with key >= u[t]: suffix sums over gaps > t within the label
    suffix = np.cumsum(hist[::-1])[::-1]
    ge_gap = suffix - np.repeat(suffix[goff[1:] - 1] - hist[goff[1:] - 1], d + 1)
    ge = ge_gap[np.arange(u.size) + ulab + 1]  # gap t+1 of label j is global gap goff[j] + t + 1

    lab = (pair >> np.uint64(32)).astype(np.int64)
    ps = value_of((pair & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    uidx = np.cumsum(new) - 1  # each positive's distinct key
    pos_ptr = np.r_[0, np.cumsum(pos.counts)]
    rank_first = np.flatnonzero(new)  # position of the first positive of each distinct key
    pos_ge = pos_ptr[lab + 1] - rank_first[uidx]
    return lab, ps, pos_ge, ge[uidx]


def _micro_tie_counts(scores: np.ndarray, pos: _Positives, max_cells: int = 1 << 22):
    """Per positive entry: its score, #positives and #entries (all labels) with score >= it.

    Every entry is assigned its gap ``g = #distinct positive scores <= entry`` and the gaps are
    histogrammed; a suffix sum then gives the counts. ``g`` comes from a lookup table over
    equal cells of the (order-preserving integer) key range; only entries in the few cells
    that contain a positive's key are located with a binary search. No sort of all entries.

    Returns:
        scores (P,) float32 ascending, pos_ge (P,) int64, all_ge (P,) int64.
    """
    ps = np.sort(scores[pos.rows, pos.cols] + np.float32(0.0))
    if ps.size == 0:
        e = np.zeros(0, dtype=np.int64)
        return ps, e, e
    pkeys = _order_key(ps)
    pos_ge = ps.size - np.searchsorted(pkeys, pkeys, side="left")
    u = pkeys[np.r_[True, pkeys[1:] != pkeys[:-1]]]  # distinct keys, already sorted
    m = u.size
    # The table spans the keys from the 0.1 % quantile of the positive keys up; the sparse
    # low tail would otherwise stretch the cells. Entries below it: binary search among the
    # few positive keys there.
    low = m // 1000
    span = int(u[-1]) - int(u[low - 1] if low else u[0]) + 1
    shift = max(0, (span - 1).bit_length() - max_cells.bit_length() + 1)
    # Keys relative to lo_key (just above u[low - 1]), cut into cells of 2**shift keys.
    # For an entry in cell c, g = base[c] + (key >= first[c]) + (key >= second[c]), exact when
    # the cell holds at most two distinct positive keys (first/second = those keys, or the
    # maximum when absent); cells holding more have base = -1 and their entries are located
    # by binary search.
    lo_key, hi_key = (u[low - 1] + np.uint32(1) if low else u[0]), u[-1]
    u_low = u[: low + 1]
    cells = ((int(hi_key) - int(lo_key)) >> shift) + 1
    upper = u[low:]
    urel = upper - lo_key
    ucell = urel >> np.uint32(shift)
    per_cell = np.bincount(ucell, minlength=cells)
    base = (np.cumsum(per_cell) - per_cell + low).astype(np.int32)
    base[per_cell > 2] = -1
    first = np.full(cells, np.iinfo(np.uint32).max, dtype=np.uint32)
    second = first.copy()
    start = np.r_[True, ucell[1:] != ucell[:-1]]  # first distinct key of its cell
    first[ucell[start]] = urel[start]
    nxt = np.flatnonzero(~start & np.r_[False, start[:-1]])  # second key of its cell
    second[ucell[nxt]] = urel[nxt]
    hist = np.zeros(m + 1, dtype=np.int64)
    rows = max(1, (_LABEL_CHUNK_BYTES // 4) // max(1, 4 * scores.shape[1]))
    for r0 in range(0, scores.shape[0], rows):
        k = _order_key(scores[r0:r0 + rows] + np.float32(0.0)).ravel()
        below = np.flatnonzero(k < lo_key)
        g_below = np.searchsorted(u_low, k[below], side="right")
        np.clip(k, lo_key, hi_key, out=k)
        k -= lo_key
        c = (k >> np.uint32(shift)).astype(np.intp)  # one index conversion for the three takes
        g = base.take(c, mode="clip")  # in range by construction; "clip" skips the bounds check
        miss = np.flatnonzero(g < 0)
        g += k >= first.take(c, mode="clip")
        g += k >= second.take(c, mode="clip")
        g[miss] = low + np.searchsorted(urel, k[miss], side="right")
        g[below] = g_below
        hist += np.bincount(g, minlength=m + 1)
    ge = np.cumsum(hist[::-1])[::-1][1:]  # ge[i] = #entries with key >= u[i]
    all_ge = ge[np.searchsorted(u, pkeys, side="left")]
    return ps, pos_ge, all_ge


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


def _per_label_ap_sum(scores: np.ndarray, pos: _Positives) -> np.ndarray:
    lab, _, pos_ge, all_ge = _ap_tie_counts(scores, pos)
    return np.bincount(lab, weights=pos_ge / all_ge, minlength=scores.shape[1])


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
    s = _scores_np(scores)
    _check_finite(s)
    pos = _positives(targets, s.shape)
    if average == "micro":
        _, pos_ge, all_ge = _micro_tie_counts(s, pos)
        ap_sum = torch.tensor([np.sum(pos_ge / all_ge)])
        return _as_result(_ap_from_counts(ap_sum, torch.tensor([pos.rows.size]), "micro", empty))
    ap_sum = torch.from_numpy(_per_label_ap_sum(s, pos))
    return _as_result(_ap_from_counts(ap_sum, torch.from_numpy(pos.counts), average, empty))


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


def _topk_hits(scores: np.ndarray, pos: _Positives, k: int) -> np.ndarray:
    """(N, k) bool: whether the j-th highest-scored label of each example is a positive."""
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
    s = _scores_np(scores)
    return float(_topk_hits(s, _positives(targets, s.shape), _check_k(k)).sum(1).mean() / k)


def _check_k(k) -> int:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return int(k)


def _ndcg(hits: np.ndarray, n_pos: np.ndarray, k: int) -> float:
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits[:, :k] @ disc[: hits[:, :k].shape[1]]
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
    s = _scores_np(scores)
    pos = _positives(targets, s.shape)
    k = _check_k(k)
    n_pos = np.bincount(pos.rows, minlength=s.shape[0])
    return _ndcg(_topk_hits(s, pos, k).astype(np.float64), n_pos, k)


def _psp(scores: np.ndarray, pos: _Positives, k: int, prop: np.ndarray) -> float:
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
    s = _scores_np(scores)
    prop = _propensities_np(propensities, s.shape[1])
    return _psp(s, _positives(targets, s.shape), _check_k(k), prop)


def _propensities_np(propensities, num_labels: int) -> np.ndarray:
    p = np.asarray(propensities.detach().cpu() if isinstance(propensities, torch.Tensor) else propensities,
                   dtype=np.float64)
    if p.shape != (num_labels,):
        raise ValueError(f"propensities must have shape ({num_labels},), got {p.shape}")
    if not np.all(p > 0):
        raise ValueError(f"propensities must be > 0, found {p[~(p > 0)][0]!r}")
    return p


def _decision_counts(scores: np.ndarray, pos: _Positives, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """Per label: (#predicted positives, #true positives among them) at ``score >= threshold``."""
    n, l = scores.shape
    thr = _thresholds_np(thresholds, l)
    predicted = np.zeros(l, dtype=np.int64)
    for r0 in range(0, n, _ROW_CHUNK):
        predicted += (scores[r0:r0 + _ROW_CHUNK] >= thr).sum(0)
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
            :func:`xmlc.calibrate.fit_thresholds`).
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
    s = _scores_np(scores)
    pos = _positives(targets, s.shape)
    predicted, tp = _decision_counts(s, pos, thresholds)
    return _f1_from_counts(predicted, tp, pos.counts, average, empty)


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
    s = _scores_np(scores)
    pos = _positives(targets, s.shape)
    predicted, _ = _decision_counts(s, pos, thresholds)
    return _rate_ratio(predicted, pos.counts)


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
    s = _scores_np(scores)
    pos = _positives(targets, s.shape)
    predicted, _ = _decision_counts(s, pos, thresholds)
    b = _buckets_np(buckets, s.shape[1])
    out = {"all": _rate_ratio(predicted, pos.counts)}
    for i, name in enumerate(BUCKET_NAMES):
        out[name] = _rate_ratio(predicted[b == i], pos.counts[b == i])
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
    s = _scores_np(scores)
    _check_finite(s)
    n, l = s.shape
    pos = _positives(targets, s.shape)
    out: dict[str, float] = {}

    ap_sum = torch.from_numpy(_per_label_ap_sum(s, pos))
    n_pos = torch.from_numpy(pos.counts)
    per_label = _ap_from_counts(ap_sum, n_pos, "none", empty)
    _, pos_ge, all_ge = _micro_tie_counts(s, pos)
    micro = _ap_from_counts(torch.tensor([np.sum(pos_ge / all_ge)]), torch.tensor([pos.rows.size]), "micro", empty)
    out["auprc_micro"] = float(micro)
    out["auprc_macro"] = _nanmean(per_label.numpy())

    kmax = max(ks) if ks else 0
    if kmax:
        hits = _topk_hits(s, pos, kmax).astype(np.float64)
        n_pos_row = np.bincount(pos.rows, minlength=n)
        for k in ks:
            out[f"p@{k}"] = float(hits[:, :k].sum(1).mean() / k)
        for k in ks:
            out[f"ndcg@{k}"] = _ndcg(hits, n_pos_row, k)
        if propensities is not None:
            prop = _propensities_np(propensities, l)
            for k in ks:
                out[f"psp@{k}"] = _psp(s, pos, k, prop)

    predicted, tp = _decision_counts(s, pos, thresholds)
    out["f1_micro"] = _f1_from_counts(predicted, tp, pos.counts, "micro", empty)
    out["f1_macro"] = _f1_from_counts(predicted, tp, pos.counts, "macro", empty)
    out["positive_rate_ratio"] = _rate_ratio(predicted, pos.counts)
    if buckets is not None:
        b = _buckets_np(buckets, l)
        for i, name in enumerate(BUCKET_NAMES):
            out[f"auprc_macro_{name}"] = _nanmean(per_label.numpy()[b == i])
        for i, name in enumerate(BUCKET_NAMES):
            out[f"positive_rate_ratio_{name}"] = _rate_ratio(predicted[b == i], pos.counts[b == i])
    out["num_labels_no_positive"] = int((pos.counts == 0).sum())
    return {prefix + k: v for k, v in out.items()}


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


# --------------------------------------------------------------------------------------------
# torchmetrics.Metric classes (same math; work in Lightning and sync under DDP)
# --------------------------------------------------------------------------------------------


class MultilabelAUPRC(Metric):
    """Exact AUPRC accumulated over batches (states are concatenated; DDP gathers them).

    Args:
        num_labels: L. average, empty: as in :func:`average_precision`.

    Example:
        >>> m = MultilabelAUPRC(num_labels=2)
        >>> m.update(torch.tensor([[0.9, 0.1]]), torch.tensor([[1, 0]]))
        >>> m.update(torch.tensor([[0.4, 0.8]]), torch.tensor([[0, 1]]))
        >>> m.compute()
        tensor(1.)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_labels: int, *, average: Average = "macro", empty: Empty = "ignore", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
        _check_choice("average", average, _AVERAGES)
        _check_choice("empty", empty, _EMPTY)
        self.num_labels, self.average, self.empty = num_labels, average, empty
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, targets) -> None:
        t = _dense_targets(targets, scores.shape)
        if scores.ndim != 2 or scores.shape[1] != self.num_labels:
            raise ValueError(f"scores must have shape (B, {self.num_labels}), got {tuple(scores.shape)}")
        self.scores.append(scores.detach().float())
        self.targets.append(t.detach().to(torch.uint8))

    def compute(self) -> torch.Tensor:
        """Scalar float32 tensor (macro/micro) or ``(L,)`` (none), on the metric's device."""
        s = torch.cat(self.scores) if isinstance(self.scores, list) else self.scores
        t = torch.cat(self.targets) if isinstance(self.targets, list) else self.targets
        ap = average_precision(s, t, average=self.average, empty=self.empty)
        return torch.as_tensor(ap, dtype=torch.float32).to(self.device)


class BinnedAveragePrecision(Metric):
    """Streaming AUPRC over ``num_bins`` equal-width score bins; state ``2 x (L, T)`` int64.

    Each update histograms the batch with one ``bincount`` on ``label * T + bin`` indices (no
    ``(B, L, T)`` tensor). The result is the exact AP of the scores rounded down to the bin
    grid, i.e. scores in the same bin tie. States are summed across processes under DDP.

    Args:
        num_labels: L. num_bins: number of bins T >= 2. average, empty: as in
            :func:`average_precision`.

    Example:
        >>> m = BinnedAveragePrecision(num_labels=2, num_bins=10)
        >>> m.update(torch.tensor([[0.91, 0.1], [0.45, 0.8]]), torch.tensor([[1, 0], [0, 1]]))
        >>> m.compute()
        tensor(1.)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_labels: int, *, num_bins: int = 1000, average: Average = "macro",
                 empty: Empty = "ignore", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
        _check_num_bins(num_bins)
        _check_choice("average", average, _AVERAGES)
        _check_choice("empty", empty, _EMPTY)
        self.num_labels, self.num_bins, self.average, self.empty = num_labels, int(num_bins), average, empty
        zeros = torch.zeros(num_labels, self.num_bins, dtype=torch.long)
        self.add_state("pos_hist", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("all_hist", default=zeros.clone(), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, targets) -> None:
        if scores.ndim != 2 or scores.shape[1] != self.num_labels:
            raise ValueError(f"scores must have shape (B, {self.num_labels}), got {tuple(scores.shape)}")
        t = _dense_targets(targets, scores.shape).to(scores.device)
        pos_hist, all_hist = _binned_counts(scores.detach(), t, self.num_bins)
        self.pos_hist += pos_hist
        self.all_hist += all_hist

    def compute(self) -> torch.Tensor:
        """Scalar float32 tensor (macro/micro) or ``(L,)`` (none)."""
        return _binned_ap(self.pos_hist, self.all_hist, self.average, self.empty)


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
    """
    out = {"f1_micro": f1_score(scores, labels, thresholds, average="micro"),
           "f1_macro": f1_score(scores, labels, thresholds, average="macro")}
    if buckets is None:
        out["positive_rate_ratio"] = positive_rate_ratio(scores, labels, thresholds)
    else:   # {"all": r, "head": r, ...}
        ratio = positive_rate_ratio_by_bucket(scores, labels, thresholds, buckets=buckets)
        out |= {"positive_rate_ratio" if k == "all" else f"positive_rate_ratio_{k}": v for k, v in ratio.items()}
    return {k: float(v) for k, v in out.items()}


TABLE_METRICS = ("auprc_micro", "auprc_macro", "p@1", "p@3", "p@5", "f1_micro", "f1_macro",
                 "positive_rate_ratio")


def metrics_table(columns: list[tuple[str, dict]], title: str = "metric") -> str:
    """Markdown table: one row per metric in :data:`TABLE_METRICS`, one column per (name, metrics)."""
    lines = [f"| {title} | " + " | ".join(name for name, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for metric in TABLE_METRICS:
        if metric in columns[0][1]:
            cells = " | ".join(f"{values.get(metric, float('nan')):.4f}" for _, values in columns)
            lines.append(f"| {metric} | {cells} |")
    return "\n".join(lines)


def results_table(results: dict) -> str:
    """A short Markdown table of the final metrics (test if there is a test split, else val)."""
    split = "test" if "test" in results else "val"
    columns = [("@0.5", results[split]), ("calibrated", results[f"{split}_calibrated"])]
    if f"{split}_prior" in results:
        columns.append(("ln(pos_weight)", results[f"{split}_prior"]))
    return metrics_table(columns, title=split)
