"""The functional metrics of multilabel classification with thousands of labels.

Exact and binned average precision (AUPRC), P@k, nDCG@k, PSP@k, F1 at given thresholds, the
positive-rate ratio. All of them in one flat dict: :func:`xmlc.eval.summary.evaluate_all`;
as ``torchmetrics.Metric`` classes: :mod:`xmlc.eval.streaming`.

Conventions (inputs: :mod:`xmlc.eval.inputs`):
    * ``scores`` are ``(N, L)`` probabilities, float32 torch tensors (numpy accepted). Exact
      metrics compare scores in float32; ``-0.0`` equals ``0.0``; NaN raises.
    * ``targets`` are dense ``{0, 1}`` tensors/arrays ``(N, L)`` or a scipy sparse matrix (CSR),
      which is never densified.
    * A label is *predicted* when ``score >= threshold`` (the same rule as
      :func:`xmlc.eval.calibrate.apply_thresholds`).

Return types, one rule for every functional metric: an averaged value (``average="macro"`` or
``"micro"``, and every metric without an ``average`` argument: P@k, nDCG@k, PSP@k, the
positive-rate ratio) is a Python ``float``; ``average="none"`` gives a float32 tensor ``(L,)``.
Per-bucket results come from their own functions as ``dict[str, float]``.

Empty-label policy (``empty``): a label with no positive in the evaluation set has no defined
average precision (recall is 0/0). ``"ignore"`` (default) leaves it out of macro averages and
returns NaN for it under ``average="none"``; ``"zero"`` counts it as 0 (torchmetrics >= 1.4).
Either way :func:`xmlc.eval.summary.evaluate_all` reports how many there were
(``num_labels_no_positive``).

Two engines, one set of steps: scores in a tensor on an accelerator stay there and every metric
runs with torch ops on that device (:mod:`xmlc.kernels.ap_torch`; only ``(L,)`` or ``(N, k)``
results come back); numpy arrays and CPU tensors take the host engine (:mod:`xmlc.kernels.ap`,
faster on the CPU). Both give the same numbers (``tests/test_metrics.py``); P@k and nDCG@k may
differ where scores tie inside the top k (``torch.topk`` breaks ties per device).

Metric math lives once. Every metric starts from :func:`xmlc.eval.inputs.eval_inputs`
(validation, the positive entries). Exact AP, micro and macro, is one call of the kernel
:func:`xmlc.kernels.ap.ap_per_label` (whose counts step, :func:`xmlc.kernels.ap.tie_counts`,
also gives the F1-optimal thresholds of :mod:`xmlc.eval.calibrate`); the binned AP comes from
:func:`xmlc.kernels.ap.binned_counts`; both end in ``_reduce_ap``. The summaries of
:mod:`xmlc.eval.summary` and the classes of :mod:`xmlc.eval.streaming` call the same steps.

References:
    * Average precision: scikit-learn ``average_precision_score`` (step-wise, ties form one step).
    * P@k, nDCG@k: the Extreme Classification Repository (Bhatia et al., 2016).
    * PSP@k: Jain, Prabhu, Varma, "Extreme Multi-label Loss Functions for Recommendation,
      Tagging, Ranking & Other Missing Label Applications", KDD 2016.
"""

from __future__ import annotations

import numpy as np
import torch

from xmlc.eval.inputs import (_AVERAGES, _EMPTY, _ROW_CHUNK, Average, Empty, EvalInputs, _buckets_np, _check_choice,
                              _check_k, _check_num_bins, _dense_targets, _propensities_np, _scores_np,
                              _thresholds_np, eval_inputs)
from xmlc.kernels.ap import ap_per_label, binned_counts
from xmlc.kernels.ap_torch import ap_per_label_torch, topk_torch
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
    "predicted_counts",
]


def _reduce_ap(ap: torch.Tensor, average: str, empty: str) -> torch.Tensor:
    """Apply the empty-label policy to per-label AP (float64, NaN where a label has no positive)
    and average it: ``(L,)`` for "none", a scalar for "macro" and "micro" (already pooled)."""
    if empty == "zero":
        ap = torch.where(torch.isnan(ap), torch.zeros_like(ap), ap)
    if average == "none":
        return ap.float()
    if average == "micro":  # inputs already pooled into one "label"
        return ap.float().reshape(())
    valid = ~torch.isnan(ap)
    if not valid.any():
        return torch.tensor(float("nan"))
    return ap[valid].mean().float()


def _binned_ap(pos_hist: torch.Tensor, all_hist: torch.Tensor, average: str, empty: str) -> torch.Tensor:
    """AP from (L, T) histograms: exact AP of the scores rounded down to the bin grid."""
    if average == "micro":
        pos_hist, all_hist = pos_hist.sum(0, keepdim=True), all_hist.sum(0, keepdim=True)
    pos_hist, all_hist = pos_hist.double(), all_hist.double()
    pos_ge = pos_hist.flip(1).cumsum(1).flip(1)
    all_ge = all_hist.flip(1).cumsum(1).flip(1)
    prec = torch.where(pos_hist > 0, pos_ge / all_ge.clamp_min(1), torch.zeros_like(pos_ge))
    return _reduce_ap((pos_hist * prec).sum(1) / pos_hist.sum(1), average, empty)  # NaN where no positive


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
    that positive's score, for all labels at once (:func:`xmlc.kernels.ap.ap_per_label`).

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
    if inputs.on_device:
        ap = ap_per_label_torch(inputs.scores, *inputs.positions, pooled=average == "micro").cpu()
    else:
        ap = torch.from_numpy(ap_per_label(inputs.scores, inputs.rows, inputs.cols, pooled=average == "micro"))
    return _as_result(_reduce_ap(ap, average, empty))


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
    it can only lose resolution inside a bin. The streaming form:
    :class:`xmlc.eval.streaming.BinnedAveragePrecision`.

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
    pos_hist, all_hist = binned_counts(s, t, num_bins)
    return _as_result(_binned_ap(pos_hist, all_hist, average, empty))


def _topk_hits(inputs: EvalInputs, k: int) -> np.ndarray:
    """(N, k) bool: whether the j-th highest-scored label of each example is a positive."""
    scores, pos = inputs.scores, inputs
    n, l = scores.shape
    k = min(k, l)
    if inputs.on_device:
        return topk_torch(scores, *inputs.positions, k)[1].cpu().numpy()
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


def _psp_numerator(inputs: EvalInputs, k: int, inv: np.ndarray) -> float:
    """Sum over examples of ``1 / p_l`` over the positives among their k top-scored labels."""
    scores, pos = inputs.scores, inputs
    n, l = scores.shape
    if inputs.on_device:
        idx, hit = topk_torch(scores, *inputs.positions, k)
        return float(inv[idx.cpu().numpy().ravel()][hit.cpu().numpy().ravel()].sum())
    pos_keys = np.sort(pos.rows * l + pos.cols)
    num = 0.0
    st = torch.from_numpy(scores)
    for r0 in range(0, n, _ROW_CHUNK):
        idx = torch.topk(st[r0:r0 + _ROW_CHUNK], k, dim=1).indices.numpy()
        keys = (np.arange(r0, r0 + idx.shape[0])[:, None] * l + idx).ravel()
        loc = np.searchsorted(pos_keys, keys).clip(max=max(pos_keys.size - 1, 0))
        hit = pos_keys[loc] == keys if pos_keys.size else np.zeros(keys.size, bool)
        num += float(inv[idx.ravel()][hit].sum())
    return num


def _psp(inputs: EvalInputs, k: int, prop: np.ndarray) -> float:
    pos = inputs
    inv = 1.0 / prop.astype(np.float64)
    num = _psp_numerator(inputs, min(k, inputs.scores.shape[1]), inv)
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
    if inputs.on_device:
        return _decision_counts_torch(inputs, torch.from_numpy(thr).to(scores.device))
    predicted = predicted_counts(scores, thresholds)
    ps = scores[pos.rows, pos.cols]
    hit = ps >= (thr[pos.cols] if thr.size > 1 else thr[0])
    tp = np.bincount(pos.cols[hit], minlength=l)
    return predicted, tp


def _decision_counts_torch(inputs: EvalInputs, thr: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_decision_counts` with torch ops on the scores' device (``thr`` (1,) or (L,) there)."""
    scores, (rows, cols) = inputs.scores, inputs.positions
    n, l = scores.shape
    predicted = torch.zeros(l, dtype=torch.int64, device=scores.device)
    step = max(1, (1 << 24) // max(l, 1))
    for r0 in range(0, n, step):
        predicted += (scores[r0:r0 + step] >= thr).sum(0)
    hit = scores[rows, cols] >= (thr[cols] if thr.numel() > 1 else thr)
    tp = torch.bincount(cols[hit], minlength=l)
    return predicted.cpu().numpy(), tp.cpu().numpy()


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
