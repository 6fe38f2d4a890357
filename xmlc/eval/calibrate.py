"""Per-label decision thresholds fitted on validation scores.

A label is predicted when ``score >= threshold`` (:func:`apply_thresholds`). Thresholds are a
plain float32 tensor ``(L,)`` in probability space, so they go into a checkpoint dict as is.

Methods of :func:`fit_thresholds`:
    * ``"f1"`` / ``"fbeta"``: per label, the threshold maximising F1 / F-beta on the validation
      set. The optimum always sits at a positive's score, so the candidates are the positives'
      scores; the counts come from the same step as exact AUPRC
      (:func:`xmlc.kernels.ap.tie_counts`), and the per-label argmax is a segmented maximum, no
      loop over labels.
    * ``"rate"``: per label, the P-th largest score, P = #validation positives, so the predicted
      count matches the true count (exactly, unless scores tie there).
    * ``"f1_count"`` (the recipes' default): the thresholds of the best micro F1 on validation
      subject to counts: each frequency bucket's predicted total in ``[0.97 C, 1.12 C]``
      (``bucket_band``; C its expected total; buckets: the training split's head / torso / tail,
      ``buckets``), each label's count in ``[0.5 c, 2 c]`` (``band``; c its expected count: its
      validation positives unless ``expected`` says otherwise) and the total at most ``1.08
      sum(c)`` (``total_max``). Per-label F1 thresholds of weakly ranked labels predict far more
      than c (for calibrated scores the F1-optimal threshold is half the best F1); the bounds hold
      the counts and the micro-F1 allocation (every label cut where a prediction's precision falls
      to half the micro F1; Dinkelbach's iteration) keeps F1. The tight bounds are on the totals,
      which hundreds of validation positives pin down; a label's own count (often a few dozen
      positives, +-20% by chance) only gets a wide band, so the allocation may move predictions
      between the labels of a bucket. A bucket's bounds act through its own multiplier, and the
      units where it jumps over the bound fill the room left with in-between cuts. Candidates:
      every cut between distinct scores within a label's band (one partial sort per label, a
      cumulative sum), chosen by segmented maxima, no loop over labels. Labels with fewer than
      ``min_positives`` validation positives share one threshold per group of labels of about the
      same frequency in one bucket (``groups``; default ``floor(log2(c))``): the group's entries
      pooled act as one label, its count in the band.
    * ``"prior"``: the prior correction for BCE with ``pos_weight`` w: the weighted loss is
      minimised at ``logit(p) + ln w``, so a model trained with w = neg/pos over-predicts at 0.5.
      Thresholding at ``w / (1 + w)`` in probability space equals subtracting ``ln w`` from the
      logit and thresholding at 0.5 (:func:`prior_thresholds`). Needs no validation data.

Labels with fewer than ``min_positives`` validation positives do not get their own threshold
fitted on a handful of examples ("f1_count": see above). ``fallback="global"`` (default) gives
them the global threshold (the micro-F-beta-optimal one for "f1"/"fbeta", the micro rate-matching one for
"rate"); ``fallback="shrink"`` uses ``(n * t_label + m * t_global) / (n + m)`` with n the
label's positives and m = ``min_positives`` (labels with no positive get ``t_global``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from xmlc.eval.inputs import EvalInputs, eval_inputs
from xmlc.kernels.ap import tie_counts
from xmlc.kernels.ap_torch import best_fbeta_torch, kth_largest_torch, tie_counts_torch
from xmlc.stats import frequency_buckets

__all__ = ["fit_thresholds", "prior_thresholds", "apply_thresholds", "thresholds_for", "transfer_thresholds", "METHODS"]

METHODS = ("f1", "fbeta", "rate", "f1_count", "prior")
_FALLBACKS = ("global", "shrink")
#: "f1_count": a label's predicted count on validation lies in [low, high] x its expected count.
COUNT_BAND = (0.5, 2.0)
#: "f1_count": the predicted count of all labels together is at most this x the expected total.
TOTAL_MAX = 1.08
#: "f1_count": each frequency bucket's predicted total on validation lies in [low, high] x its expected total.
BUCKET_BAND = (0.97, 1.12)
Method = Literal["f1", "fbeta", "rate", "f1_count", "prior"]
Fallback = Literal["global", "shrink"]


def prior_thresholds(pos_weight) -> torch.Tensor:
    """Probability thresholds ``w / (1 + w)`` undoing the ``pos_weight`` shift of BCE.

    Args:
        pos_weight: ``(L,)`` positive weights w > 0 the model was trained with.

    Returns:
        ``(L,)`` float32: ``sigmoid(z) >= w/(1+w)``  iff  ``z - ln w >= 0``.

    Example:
        >>> prior_thresholds(torch.tensor([1.0, 9.0]))
        tensor([0.5000, 0.9000])
    """
    w = torch.as_tensor(pos_weight).detach().double().cpu()
    if w.ndim != 1:
        raise ValueError(f"pos_weight must be 1-D (L,), got shape {tuple(w.shape)}")
    if not torch.all(w > 0):
        raise ValueError(f"pos_weight must be > 0, found {w[~(w > 0)][0].item()!r}")
    return (w / (1.0 + w)).float()


def apply_thresholds(scores, thresholds) -> torch.Tensor:
    """Decisions ``scores >= thresholds``; pure (the rule every metric at a threshold uses).

    Args:
        scores: ``(N, L)`` probabilities (tensor or array; the result is on its device).
        thresholds: a scalar or per label ``(L,)``.

    Returns:
        bool tensor ``(N, L)``.

    Example:
        >>> apply_thresholds(torch.tensor([[0.9, 0.2], [0.5, 0.7]]), torch.tensor([0.5, 0.8]))
        tensor([[ True, False],
                [ True, False]])
    """
    s = torch.as_tensor(scores)
    t = torch.as_tensor(thresholds, dtype=s.dtype, device=s.device)
    if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != s.shape[-1]):
        raise ValueError(f"thresholds must be a scalar or shape ({s.shape[-1]},), got shape {tuple(t.shape)}")
    return s >= t


def _best_per_label(lab: np.ndarray, score: np.ndarray, value: np.ndarray, num_labels: int) -> np.ndarray:
    """For each label, the score of its candidate with the largest value (ties: higher score).

    ``lab``/``score`` sorted by (label, score), as :func:`xmlc.kernels.ap.tie_counts` returns
    them: two segmented maxima, no sort.
    """
    best = np.full(num_labels, np.nan)
    if lab.size == 0:
        return best
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    seg = np.cumsum(np.r_[False, lab[1:] != lab[:-1]])
    top = np.maximum.reduceat(value, starts)
    # the last (highest-scored) candidate reaching its label's maximum
    last = np.maximum.reduceat(np.where(value == top[seg], np.arange(lab.size), -1), starts)
    best[lab[starts]] = score[last]
    return best


def fit_thresholds(
    scores,
    targets,
    *,
    method: Method = "f1",
    beta: float = 1.0,
    min_positives: int = 5,
    fallback: Fallback = "global",
    pos_weight=None,
    band: tuple[float, float] = COUNT_BAND,
    total_max: float = TOTAL_MAX,
    expected=None,
    groups=None,
    buckets=None,
    bucket_band: tuple[float, float] | None = BUCKET_BAND,
) -> torch.Tensor:
    """Fit one threshold per label on validation scores.

    Args:
        scores: ``(N, L)`` validation probabilities (torch or numpy). Unused for "prior".
        targets: ``(N, L)`` {0,1} dense or scipy CSR. Unused for "prior".
        method: "f1", "fbeta" (uses ``beta``), "rate", "f1_count" or "prior" (uses ``pos_weight``).
        beta: F-beta's beta (> 0); beta > 1 favours recall.
        min_positives: labels with fewer validation positives fall back (see module docstring).
        fallback: "global" or "shrink".
        pos_weight: ``(L,)`` for method "prior".
        band, total_max, expected, groups: for "f1_count": a label's predicted count as a multiple
            of its expected one, (low, high), and the total's upper bound; ``(L,)`` expected positives in this
            validation set (default: the validation positives); ``(L,)`` int groups within which
            labels with < ``min_positives`` positives share a threshold (default: log2 of expected).
        buckets, bucket_band: for "f1_count": ``(L,)`` int frequency bucket of each label (default:
            :func:`xmlc.stats.frequency_buckets` of expected) and each bucket's predicted total as a
            multiple of its expected total, (low, high); None: no bound per bucket.

    Returns:
        ``(L,)`` float32 thresholds in probability space; predict with ``scores >= thresholds``.
        ``inf`` (predict nothing) only when the validation set has no positive at all.

    Example:
        >>> s = torch.tensor([[0.9, 0.2], [0.6, 0.7], [0.3, 0.1]])
        >>> t = torch.tensor([[1, 0], [1, 1], [0, 0]])
        >>> fit_thresholds(s, t, min_positives=1)
        tensor([0.6000, 0.7000])
    """
    _check_fit_arguments(method, fallback, min_positives)
    if method == "prior":
        if pos_weight is None:
            raise ValueError("method='prior' needs pos_weight (the (L,) weights used in training)")
        return prior_thresholds(pos_weight)
    if method == "fbeta" and not (isinstance(beta, (int, float)) and beta > 0):
        raise ValueError(f"beta must be a number > 0, got {beta!r}")
    b2 = float(beta) ** 2 if method == "fbeta" else 1.0

    if method == "f1_count":   # host engine: its search runs on numpy arrays
        fitted = _f1_count_fit(eval_inputs(scores, targets, engine="numpy"), band, total_max, expected, groups,
                               min_positives, buckets, bucket_band)
        return torch.from_numpy(fitted.astype(np.float32))
    return _fit(eval_inputs(scores, targets), method, b2, min_positives, fallback)


def _fit(inputs: EvalInputs, method: str, b2: float, min_positives: int, fallback: str) -> torch.Tensor:
    """:func:`fit_thresholds` ("f1", "fbeta", "rate") on validated inputs, on either engine."""
    n_pos = inputs.counts
    few = n_pos < min_positives
    need_global = bool(np.any(few | (n_pos == 0)))
    per_label, glob = _rate_fit(inputs, need_global) if method == "rate" else _fbeta_fit(inputs, b2, need_global)
    return torch.from_numpy(_fall_back(per_label, glob, n_pos, few, fallback, min_positives).astype(np.float32))


def _fall_back(per_label, glob: float, n_pos, few, fallback: str, min_positives: int) -> np.ndarray:
    """``per_label`` with the ``few``-positive labels (and NaN ones) given the global threshold
    (``"global"``) or shrunk toward it (``"shrink"``)."""
    out = per_label.copy()
    if fallback == "global":
        out[few] = glob
    else:
        m = float(max(min_positives, 1))
        shrunk = (n_pos * np.nan_to_num(per_label) + m * glob) / (n_pos + m)
        out[few] = np.where(n_pos[few] > 0, shrunk[few], glob)
    out[np.isnan(out)] = glob
    return out


def _check_fit_arguments(method, fallback, min_positives) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if fallback not in _FALLBACKS:
        raise ValueError(f"fallback must be one of {_FALLBACKS}, got {fallback!r}")
    if not isinstance(min_positives, (int, np.integer)) or min_positives < 0:
        raise ValueError(f"min_positives must be an int >= 0, got {min_positives!r}")


def _fbeta_fit(inputs: EvalInputs, b2: float, need_global: bool) -> tuple[np.ndarray, float]:
    """Per label the F-beta-optimal threshold (NaN without positives), and the global
    (micro-F-beta-optimal) one when ``need_global`` (else ``inf``)."""
    if inputs.on_device:
        return _fbeta_fit_torch(inputs, b2, need_global)
    # F-beta at a positive's score: TP = pos_ge, predicted = all_ge, positives = n_pos
    n_pos = inputs.counts
    per = tie_counts(inputs.scores, inputs.rows, inputs.cols)
    fb = (1 + b2) * per.pos_ge / (b2 * n_pos[per.labels] + per.all_ge)
    per_label = _best_per_label(per.labels, per.scores, fb, inputs.scores.shape[1])
    glob = np.inf
    if need_global and inputs.rows.size:  # the pooled counts cost more than the per-label ones
        pooled = tie_counts(inputs.scores, inputs.rows, inputs.cols, pooled=True)
        f = (1 + b2) * pooled.pos_ge / (b2 * pooled.scores.size + pooled.all_ge)
        glob = float(pooled.scores[np.lexsort((-pooled.scores, -f))[0]])
    return per_label, glob


def _fbeta_fit_torch(inputs: EvalInputs, b2: float, need_global: bool) -> tuple[np.ndarray, float]:
    """:func:`_fbeta_fit` with torch ops on the scores' device: the same thresholds."""
    s, (rows, cols) = inputs.scores, inputs.positions
    per = tie_counts_torch(s, rows, cols)
    positives = torch.from_numpy(inputs.counts).to(s.device)
    per_label = best_fbeta_torch(per, positives, b2, s.shape[1]).cpu().numpy()
    glob = np.inf
    if need_global and inputs.rows.size:
        pooled = tie_counts_torch(s, rows, cols, pooled=True)
        total = torch.tensor([inputs.rows.size], device=s.device)
        glob = float(best_fbeta_torch(pooled, total, b2, 1)[0])
    return per_label, glob


def _rate_fit(inputs: EvalInputs, need_global: bool) -> tuple[np.ndarray, float]:
    """Per label the rate-matching threshold (NaN without positives), and the global
    (micro rate-matching) one when ``need_global`` (else ``inf``)."""
    s, n_pos = inputs.scores, inputs.counts
    if inputs.on_device:
        per_label = kth_largest_torch(s, torch.from_numpy(n_pos).to(s.device)).cpu().numpy()
        total = int(n_pos.sum())
        glob = float(torch.kthvalue(s.reshape(-1), s.numel() - total + 1).values) if need_global and total else np.inf
        return per_label, glob
    per_label = _rate_thresholds(s, n_pos)
    total = int(n_pos.sum())
    glob = np.inf
    if need_global and total:
        glob = float(np.partition(s.ravel(), s.size - total)[s.size - total])
    return per_label, glob


def _rate_thresholds(s: np.ndarray, n_pos: np.ndarray, chunk_bytes: int = 32 * 2**20) -> np.ndarray:
    """Per label the ``n_pos``-th largest score (NaN for labels without positives)."""
    n, l = s.shape
    out = np.full(l, np.nan)
    chunk = max(1, chunk_bytes // max(1, 4 * n))
    for c0 in range(0, l, chunk):
        c1 = min(l, c0 + chunk)
        block = np.sort(s[:, c0:c1].T, axis=1)
        k = n_pos[c0:c1]
        has = k > 0
        out[c0:c1][has] = block[np.flatnonzero(has), n - k[has]]
    return out


def thresholds_for(ecfg, scores, labels, pos_weight, buckets=None) -> torch.Tensor:
    """Per-label probability thresholds (L,) as the ``eval`` config section says.

    Dispatches ``ecfg.calibration`` to :func:`fit_thresholds` (with ``ecfg.min_positives``);
    0.5 everywhere for "none", and for "prior" without a ``pos_weight``.

    Args:
        ecfg: the ``eval`` section (:class:`xmlc.config.EvalConfig`).
        scores: ``(N, L)`` validation probabilities.
        labels: ``(N, L)`` CSR {0, 1} targets.
        pos_weight: ``(L,)`` the loss's pos_weight, or None.
        buckets: ``(L,)`` the frequency buckets the run reports ratios by (the training split's),
            held by "f1_count"; None: the validation counts' buckets.

    Returns:
        ``(L,)`` float32 thresholds.
    """
    if ecfg.calibration == "none" or (ecfg.calibration == "prior" and pos_weight is None):
        return torch.full((scores.shape[1],), 0.5)
    extra = {"buckets": buckets} if ecfg.calibration == "f1_count" else {}
    return fit_thresholds(scores, labels, method=ecfg.calibration, min_positives=ecfg.min_positives,
                          pos_weight=None if pos_weight is None else pos_weight.cpu(), **extra)


def transfer_thresholds(thresholds, before, after) -> torch.Tensor:
    """Thresholds of one model moved to another by matching each label's predicted count on the
    same rows: label l predicted ``k_l`` times by ``before >= thresholds`` becomes the ``k_l``-th
    largest of ``after[:, l]`` (a label ``before`` never predicts keeps its threshold).

    Used after ``train.final: refit`` or ``finetune``: the thresholds were fitted on the first
    model's validation scores, and the shipped model (more rows, more steps) scores higher; matching the rate on
    rows both models trained on carries the decisions over, not the raw scores.

    Args:
        thresholds: ``(L,)``. before, after: ``(n, L)`` scores of the same rows by the two models.

    Returns:
        ``(L,)`` float32.

    Example:
        >>> b = torch.tensor([[0.9], [0.6], [0.3]]); a = torch.tensor([[0.95], [0.8], [0.5]])
        >>> transfer_thresholds(torch.tensor([0.5]), b, a)
        tensor([0.8000])
    """
    t = torch.as_tensor(thresholds).detach().cpu().double().numpy()
    b, a = (torch.as_tensor(x).detach().float().cpu().numpy() for x in (before, after))
    if b.shape != a.shape or b.ndim != 2 or b.shape[1] != t.shape[0]:
        raise ValueError(f"before and after must both be (n, {t.shape[0]}), got {b.shape} and {a.shape}")
    k = (b >= t).sum(0)
    ranked = -np.sort(-a, axis=0)
    moved = ranked[np.maximum(k - 1, 0), np.arange(t.shape[0])]
    return torch.from_numpy(np.where(k > 0, moved, t).astype(np.float32))


def _f1_count_fit(inputs: EvalInputs, band, total_max: float, expected, groups, min_positives: int,
                  buckets=None, bucket_band=None) -> np.ndarray:
    """The thresholds of the best micro F1 on these scores with each label's predicted count in
    ``[band[0] c, band[1] c]`` (c its expected count), each bucket's total in ``bucket_band`` x its
    expected total (None: unbounded) and the total at most ``total_max`` x the expected total; labels
    with fewer than ``min_positives`` positives act as one label per (group, bucket), with the
    pooled count in the band."""
    for name, b in (("band", band), ("bucket_band", bucket_band)):
        if b is not None and not (len(b) == 2 and 0 <= b[0] <= 1 <= b[1]):
            raise ValueError(f"{name} must be (low, high) with 0 <= low <= 1 <= high, got {b!r}")
    if not (isinstance(total_max, (int, float)) and total_max >= 1):
        raise ValueError(f"total_max must be a number >= 1, got {total_max!r}")
    n_pos, l = inputs.counts, inputs.scores.shape[1]
    expected = n_pos.astype(np.float64) if expected is None else np.asarray(expected, dtype=np.float64)
    if expected.shape != (l,) or not np.all(np.isfinite(expected) & (expected >= 0)):
        raise ValueError(f"expected must be ({l},) finite counts >= 0, got shape {expected.shape}")
    groups = _count_groups(expected) if groups is None else np.asarray(groups)
    buckets = frequency_buckets(expected) if buckets is None else np.asarray(buckets)
    for name, a in (("groups", groups), ("buckets", buckets)):
        if a.shape != (l,) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be ({l},) integers, got shape {a.shape} of {a.dtype}")
    few = n_pos < min_positives
    own = np.flatnonzero(~few)
    _, pool = np.unique(np.c_[groups, buckets], axis=0, return_inverse=True)
    pool = pool.ravel()
    pooled = [np.flatnonzero(few & (pool == g)) for g in np.unique(pool[few])]
    cuts = [_cut_candidates(_columns(inputs, own, copy=False), *_count_band(expected[own], band), take=own)]
    for i, cols in enumerate(pooled):
        c = _cut_candidates(_columns(inputs, cols, pooled=True), *_count_band(expected[cols].sum(keepdims=True), band))
        cuts.append(c._replace(unit=c.unit + own.size + i))
    unit_bucket = np.r_[buckets[own], [buckets[cols[0]] for cols in pooled]].astype(np.int64)
    limits = None
    if bucket_band is not None:   # every label is in a unit, so the units' buckets are the labels'
        ids, label_bucket = np.unique(buckets, return_inverse=True)
        e = np.bincount(label_bucket.ravel(), weights=expected, minlength=ids.size)
        limits = (np.searchsorted(ids, unit_bucket), *_count_band(e, bucket_band))
    chosen = _best_micro_f1(_Cuts(*map(np.concatenate, zip(*cuts))), own.size + len(pooled), int(n_pos.sum()),
                            total_max * expected.sum(), limits)
    out = np.empty(l)
    out[own] = chosen[:own.size]
    for i, cols in enumerate(pooled):
        out[cols] = chosen[own.size + i]
    return out


class _Cuts(NamedTuple):
    """Candidate cuts "predict the top k" of each unit (a label, or a group of labels pooled)."""

    unit: np.ndarray        # (C,) int64
    k: np.ndarray           # (C,) predicted count
    tp: np.ndarray          # (C,) true positives among them
    threshold: np.ndarray   # (C,) the score of the k-th (predict ``score >= threshold``)


def _best_micro_f1(cuts: _Cuts, num_units: int, total_pos: int, total_max: float, limits=None) -> np.ndarray:
    """One cut per unit maximising micro F1 ``2 sum(tp) / (sum(k) + total_pos)`` with ``sum(k) <=
    total_max`` and, with ``limits = (unit_bucket, low, high)``, each bucket's ``sum(k)`` in
    ``[low[b], high[b]]``.

    Each unit takes its cut of largest ``tp - lam k`` (ties: the fewest predictions); Dinkelbach's
    iteration sets ``lam`` to half the micro F1 of the previous choice until the choice repeats
    (finitely many steps, F1 rising at each). A bucket's count falls as its ``lam`` rises, so its
    bounds are an interval ``[lo_b, hi_b]`` of ``lam`` (bisection, once) and the bucket takes ``lam``
    clipped to it (the Lagrange multiplier of its bound). A multiplier reaches only the vertices of
    each unit's (k, tp) hull, which may lie far below a bucket's upper bound (a bucket of two labels
    jumps from 1.15x to 1.06x), so where that bound holds the bucket, the units that change at
    ``lo_b`` fill the room left with the in-between cut of largest ``tp - lam k`` (largest first).
    Where the total exceeds ``total_max``, the smallest ``lam`` that brings it under (bisection).
    Returns each unit's threshold."""
    order = np.lexsort((cuts.k, cuts.unit))
    unit, k, tp, threshold = (a[order] for a in cuts)
    if not unit.size:
        return np.full(num_units, np.inf)
    first = np.r_[True, unit[1:] != unit[:-1]]
    starts = np.flatnonzero(first)
    # for lam >= 0 a cut that adds no true positive never beats the one before it, and for lam < 0
    # the unit's last cut wins: the multipliers search these cuts only (the fill sees them all)
    useful = np.flatnonzero(first | np.r_[first[1:], True] | (tp > np.r_[0, tp[:-1]]))
    u_unit, u_k, u_tp = unit[useful], k[useful], tp[useful]
    u_first = np.r_[True, u_unit[1:] != u_unit[:-1]]
    u_starts, u_seg = np.flatnonzero(u_first), np.cumsum(u_first) - 1

    def choose(lam) -> np.ndarray:   # lam: a scalar or one per unit; the chosen cut of each unit
        value = u_tp - (lam[u_unit] if np.ndim(lam) else lam) * u_k
        best = np.maximum.reduceat(value, u_starts)
        at = np.minimum.reduceat(np.where(value == best[u_seg], np.arange(useful.size), useful.size), u_starts)
        return useful[at]

    # distinct values of a multiplier where a choice changes (slopes dtp / dk, dk <= max k) lie at
    # least 1 / max(k)^2 apart: so many halvings of [-1, 1] tell them apart
    steps = int(np.ceil(np.log2(2.0 * max(int(k.max()), 2) ** 2))) + 2
    pick_at = choose
    if limits is not None:
        pick_at = _bucket_bounds(choose, unit, k, tp, starts, *limits, steps)
    lam, pick = 0.0, None
    for _ in range(100):
        first = pick_at(lam)
        if pick is not None and np.array_equal(first, pick):
            break
        pick, lam = first, tp[first].sum() / (k[first].sum() + total_pos)
    if k[pick].sum() > total_max:
        a, b = lam, 1.0   # at lam = 1 a prediction never pays: the fewest predictions
        for _ in range(steps):
            mid = (a + b) / 2
            a, b = (a, mid) if k[pick_at(mid)].sum() <= total_max else (mid, b)
        pick = pick_at(b)
    out = np.full(num_units, np.inf)
    out[unit[starts]] = threshold[pick]
    return out


def _bucket_bounds(choose, unit, k, tp, starts, unit_bucket, low, high, steps: int):
    """``lam -> chosen cut per unit`` with each bucket's count held in ``[low, high]`` (see
    :func:`_best_micro_f1`): the bucket's ``lam`` clipped to its interval, and the room under a
    binding upper bound filled by the units that change there."""
    nb, ends = low.size, np.r_[starts[1:], unit.size]

    def counts(lam_b: np.ndarray) -> np.ndarray:
        pick = choose(lam_b[unit_bucket])
        return np.bincount(unit_bucket, weights=k[pick], minlength=nb)

    # lo_b: the smallest lam with count <= high (rising lam: fewer); over_b: just below it
    over_b, lo_b = np.full(nb, -1.0), np.ones(nb)
    for _ in range(steps):
        mid = (over_b + lo_b) / 2
        under = counts(mid) <= high
        over_b, lo_b = np.where(under, over_b, mid), np.where(under, mid, lo_b)
    lo_b = np.where(counts(-np.ones(nb)) <= high, -1.0, lo_b)
    a, b = np.full(nb, -1.0), np.ones(nb)   # hi_b: the largest lam with count >= low
    for _ in range(steps):
        mid = (a + b) / 2
        over = counts(mid) >= low
        a, b = np.where(over, mid, a), np.where(over, b, mid)
    hi_b = np.maximum(np.where(counts(np.ones(nb)) >= low, 1.0, a), lo_b)
    at_lo, below_lo = choose(lo_b[unit_bucket]), choose(over_b[unit_bucket])
    changing = [np.flatnonzero((unit_bucket == g) & (k[below_lo] > k[at_lo])) for g in range(nb)]

    def pick_at(lam: float) -> np.ndarray:
        pick = choose(np.clip(lam, lo_b[unit_bucket], hi_b[unit_bucket]))
        count = np.bincount(unit_bucket, weights=k[pick], minlength=nb)
        # where the upper bound holds bucket g, or the jump at lo_b leaves it under its lower bound
        for g in np.flatnonzero((lam < lo_b) | (count < low)):
            room, need = high[g] - count[g], low[g] - count[g]
            first = [_best_move(pick[u], np.arange(starts[u], ends[u]), k, tp, lam, room, need)[0] for u in changing[g]]
            for u in changing[g][np.argsort(first, kind="stable")[::-1]]:   # best first; each move once,
                if room <= 0:                                                # sized to the room left then
                    break
                gain, cut = _best_move(pick[u], np.arange(starts[u], ends[u]), k, tp, lam, room, need)
                if cut >= 0 and (gain > 0 or need > 0):
                    room, need = room - (k[cut] - k[pick[u]]), need - (k[cut] - k[pick[u]])
                    pick[u] = cut
        return pick

    return pick_at


def _best_move(current: int, c: np.ndarray, k, tp, lam: float, room: int, need: int) -> tuple[float, int]:
    """Of the cuts ``c`` (those of ``current``'s unit), the one with more predictions than ``current``
    (at most ``room`` more; at least ``need`` more where there is one) of largest ``tp - lam k``
    over ``current``'s: (gain, cut), or (-inf, -1) where there is none."""
    c = c[(k[c] > k[current]) & (k[c] - k[current] <= room)]
    if need > 0 and np.any(k[c] - k[current] >= need):
        c = c[k[c] - k[current] >= need]
    if not c.size:
        return -np.inf, -1
    gain = tp[c] - tp[current] - lam * (k[c] - k[current])
    return float(gain.max()), int(c[np.argmax(gain)])


def _columns(inputs: EvalInputs, cols: np.ndarray, *, pooled: bool = False, copy: bool = True) -> EvalInputs:
    """The labels ``cols`` (sorted) of ``inputs``; with ``pooled`` all their entries as one column;
    with ``copy=False`` (not pooled) the positives only, the scores left whole (read through
    ``take=cols`` by :func:`_cut_candidates`, chunk by chunk: no copy of the matrix)."""
    if not pooled and cols.size == inputs.scores.shape[1]:
        return inputs
    mine = np.isin(inputs.cols, cols)
    at = np.searchsorted(cols, inputs.cols[mine])
    scores = inputs.scores if not (pooled or copy) else inputs.scores[:, cols]
    if not pooled:
        return EvalInputs(scores, inputs.rows[mine], at, np.bincount(at, minlength=cols.size))
    n, g = scores.shape
    rows = inputs.rows[mine] * g + at
    return EvalInputs(scores.reshape(n * g, 1), rows, np.zeros(rows.size, np.int64), np.array([rows.size]))


def _count_groups(counts) -> np.ndarray:
    """Labels of about the same frequency: ``floor(log2(count))`` (counts below 1 with 1)."""
    return np.floor(np.log2(np.maximum(np.asarray(counts, dtype=np.float64), 1.0))).astype(np.int64)


def _count_band(expected: np.ndarray, band) -> tuple[np.ndarray, np.ndarray]:
    """Integer bounds ``[lo, hi]`` of the predicted count per label: ``[band[0] c, band[1] c]``;
    the nearest integer to c where no integer lies inside."""
    lo = np.ceil(expected * band[0] - 1e-9).astype(np.int64)
    hi = np.floor(expected * band[1] + 1e-9).astype(np.int64)
    empty = lo > hi
    lo[empty] = hi[empty] = np.floor(expected[empty] + 0.5).astype(np.int64)
    return lo, hi


def _cut_candidates(inputs: EvalInputs, lo: np.ndarray, hi: np.ndarray, chunk_bytes: int = 32 * 2**20,
                    take: np.ndarray | None = None) -> _Cuts:
    """Per label every cut "top k" with ``lo <= k <= hi`` on these scores (unit = the column).

    Cuts only fall between distinct scores (ties are predicted together); a label with no such
    cut inside its band gets the cut nearest the band, one with ``hi == 0`` a threshold above its
    top score. Only the top ``max(hi) + 2`` scores of each label are sorted. ``take``: the
    labels are these columns of ``inputs.scores`` (the positives already indexed by position).
    """
    s, n, l = inputs.scores, inputs.scores.shape[0], inputs.counts.size
    positives = sp.csc_matrix((np.ones(inputs.rows.size, np.int32), (inputs.rows, inputs.cols)), shape=(n, l))
    chunk, parts = max(1, chunk_bytes // max(1, 24 * n)), []
    for c0 in range(0, l, chunk):
        c1 = min(l, c0 + chunk)
        block = -(s[:, c0:c1] if take is None else s[:, take[c0:c1]]).T
        top = min(n, int(hi[c0:c1].max(initial=0)) + 2)
        order = np.argpartition(block, top - 1, axis=1)[:, :top] if top < n else np.tile(np.arange(n), (c1 - c0, 1))
        order = np.take_along_axis(order, np.argsort(np.take_along_axis(block, order, 1), axis=1, kind="stable"), 1)
        ranked = -np.take_along_axis(block, order, 1)
        tp = np.cumsum(np.take_along_axis(positives[:, c0:c1].toarray().T, order, 1), axis=1)
        k = np.arange(1, top + 1)
        cut = np.c_[ranked[:, :-1] > ranked[:, 1:], np.full((c1 - c0, 1), top == n)]   # beyond the top: unknown
        inside = cut & (k >= lo[c0:c1, None]) & (k <= hi[c0:c1, None])
        gap = np.minimum(np.abs(k - lo[c0:c1, None]), np.abs(k - hi[c0:c1, None]))
        nearest = np.argmin(np.where(cut, gap, n + 1), axis=1)
        lone = ~inside.any(1)
        inside[np.flatnonzero(lone), nearest[lone]] = True
        r, c = np.nonzero(inside & (hi[c0:c1, None] > 0))
        none = np.flatnonzero(hi[c0:c1] <= 0)
        parts.append(_Cuts(np.r_[r, none] + c0, np.r_[c + 1, np.zeros(none.size, np.int64)],
                           np.r_[tp[r, c], np.zeros(none.size, tp.dtype)],
                           np.r_[ranked[r, c], np.nextafter(ranked[none, 0], np.float32(np.inf))]))
    if not parts:
        return _Cuts(*[np.zeros(0, np.int64)] * 3, np.zeros(0))
    return _Cuts(*map(np.concatenate, zip(*parts)))
