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
    * ``"prior"``: the prior correction for BCE with ``pos_weight`` w: the weighted loss is
      minimised at ``logit(p) + ln w``, so a model trained with w = neg/pos over-predicts at 0.5.
      Thresholding at ``w / (1 + w)`` in probability space equals subtracting ``ln w`` from the
      logit and thresholding at 0.5 (:func:`prior_thresholds`). Needs no validation data.

Labels with fewer than ``min_positives`` validation positives do not get their own threshold
fitted on a handful of examples. ``fallback="global"`` (default) gives them the global
threshold (the micro-F-beta-optimal one for "f1"/"fbeta", the micro rate-matching one for
"rate"); ``fallback="shrink"`` uses ``(n * t_label + m * t_global) / (n + m)`` with n the
label's positives and m = ``min_positives`` (labels with no positive get ``t_global``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from xmlc.eval.inputs import EvalInputs, eval_inputs
from xmlc.kernels.ap import tie_counts
from xmlc.kernels.ap_torch import best_fbeta_torch, kth_largest_torch, tie_counts_torch

__all__ = ["fit_thresholds", "prior_thresholds", "apply_thresholds", "thresholds_for", "METHODS"]

METHODS = ("f1", "fbeta", "rate", "prior")
_FALLBACKS = ("global", "shrink")
Method = Literal["f1", "fbeta", "rate", "prior"]
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
) -> torch.Tensor:
    """Fit one threshold per label on validation scores.

    Args:
        scores: ``(N, L)`` validation probabilities (torch or numpy). Unused for "prior".
        targets: ``(N, L)`` {0,1} dense or scipy CSR. Unused for "prior".
        method: "f1", "fbeta" (uses ``beta``), "rate" or "prior" (uses ``pos_weight``).
        beta: F-beta's beta (> 0); beta > 1 favours recall.
        min_positives: labels with fewer validation positives fall back (see module docstring).
        fallback: "global" or "shrink".
        pos_weight: ``(L,)`` for method "prior".

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

    return _fit(eval_inputs(scores, targets), method, b2, min_positives, fallback)


def _fit(inputs: EvalInputs, method: str, b2: float, min_positives: int, fallback: str) -> torch.Tensor:
    """:func:`fit_thresholds` ("f1", "fbeta", "rate") on validated inputs, on either engine."""
    n_pos = inputs.counts
    few = n_pos < min_positives
    need_global = bool(np.any(few | (n_pos == 0)))
    if method == "rate":
        per_label, glob = _rate_fit(inputs, need_global)
    else:
        per_label, glob = _fbeta_fit(inputs, b2, need_global)

    out = per_label.copy()
    if fallback == "global":
        out[few] = glob
    else:
        m = float(max(min_positives, 1))
        shrunk = (n_pos * np.nan_to_num(per_label) + m * glob) / (n_pos + m)
        out[few] = np.where(n_pos[few] > 0, shrunk[few], glob)
    out[np.isnan(out)] = glob
    return torch.from_numpy(out.astype(np.float32))


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


def thresholds_for(ecfg, scores, labels, pos_weight) -> torch.Tensor:
    """Per-label probability thresholds (L,) as the ``eval`` config section says.

    Dispatches ``ecfg.calibration`` to :func:`fit_thresholds` (with ``ecfg.min_positives``);
    0.5 everywhere for "none", and for "prior" without a ``pos_weight``.

    Args:
        ecfg: the ``eval`` section (:class:`xmlc.config.EvalConfig`).
        scores: ``(N, L)`` validation probabilities.
        labels: ``(N, L)`` CSR {0, 1} targets.
        pos_weight: ``(L,)`` the loss's pos_weight, or None.

    Returns:
        ``(L,)`` float32 thresholds.
    """
    if ecfg.calibration == "none" or (ecfg.calibration == "prior" and pos_weight is None):
        return torch.full((scores.shape[1],), 0.5)
    return fit_thresholds(scores, labels, method=ecfg.calibration, min_positives=ecfg.min_positives,
                                    pos_weight=None if pos_weight is None else pos_weight.cpu())
