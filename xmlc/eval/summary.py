"""Evaluation summaries: every metric in one flat dict, the report at 0.5 and at fitted thresholds,
and the Markdown tables the commands print.

:func:`evaluate_all` validates its inputs once and calls the steps of the public functions of
:mod:`xmlc.eval.metrics` in turn; :func:`metrics_report` is what ``xmlc.evaluate`` and the end of
a training run report.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from xmlc.eval.inputs import (_EMPTY, Empty, EvalInputs, _buckets_np, _check_choice, _check_k, _propensities_np,
                              eval_inputs)
from xmlc.eval.metrics import (_average_precision, _decision_counts, _f1_from_counts, _ndcg, _psp, _rate_ratio,
                               _rate_ratios_by_bucket, _topk_hits)
from xmlc.stats import BUCKET_NAMES

__all__ = ["evaluate_all", "threshold_metrics", "metrics_report", "label_calibration", "TABLE_METRICS", "metrics_table",
           "results_table"]


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
    ``positive_rate_ratio`` (predicted / true positives at ``thresholds``),
    ``expected_positive_ratio`` (the sum of the scores / true positives), ``num_labels_no_positive``,
    and with ``buckets`` ``auprc_macro_{head,torso,tail}``, ``positive_rate_ratio_{head,torso,tail}``
    and ``expected_positive_ratio_{head,torso,tail}``.

    Args:
        scores: ``(N, L)`` probabilities. targets: ``(N, L)`` {0,1} dense or CSR.
        thresholds: decision threshold(s) for F1 and the positive-rate ratio, scalar or ``(L,)``.
        buckets: int array ``(L,)`` (0 head, 1 torso, 2 tail). propensities: ``(L,)``.
        empty: empty-label policy for the macro averages (:mod:`xmlc.eval.metrics`).
        prefix: prepended to every key (e.g. ``"val/"``).

    Returns:
        ``dict[str, float]`` (``num_labels_no_positive`` is an int).

    Example:
        >>> import torch
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
    out |= _expected_ratios(inputs, buckets)
    out["num_labels_no_positive"] = int((inputs.counts == 0).sum())
    return out


def _score_sums(inputs: EvalInputs) -> np.ndarray:
    """(L,) float64 sums of the scores per label, on either engine (numpy or a device tensor)."""
    s = inputs.scores
    if isinstance(s, torch.Tensor):
        return s.sum(0, dtype=torch.float64).cpu().numpy()
    return s.sum(axis=0, dtype=np.float64)


def _expected_ratios(inputs: EvalInputs, buckets) -> dict[str, float]:
    """Expected positives (the sum of the probabilities) / true positives, over all labels and per
    bucket: how well the probabilities themselves are calibrated, whatever the thresholds."""
    expected = _score_sums(inputs)
    out = {"expected_positive_ratio": _rate_ratio(expected, inputs.counts)}
    if buckets is not None:
        ratios = _rate_ratios_by_bucket(expected, inputs.counts, _buckets_np(buckets, inputs.scores.shape[1]))
        out |= {f"expected_positive_ratio_{name}": ratios[name] for name in BUCKET_NAMES}
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
        >>> import torch
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
        >>> import torch
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


def label_calibration(scores, targets, thresholds, *, names=None, buckets=None, top: int = 10) -> dict:
    """The labels that over- and under-predict most at ``thresholds``, by name.

    A label's excess is its predicted minus its true positives; the ``top`` largest excesses are
    ``"over"``, the ``top`` most negative ``"under"`` (labels with no excess are in neither).

    Args:
        scores: ``(N, L)`` probabilities. targets: ``(N, L)`` {0,1} dense or CSR.
        thresholds: scalar or ``(L,)``.
        names: ``L`` label names (default: the column index). buckets: ``(L,)`` 0 head, 1 torso, 2 tail.
        top: how many labels each list holds at most.

    Returns:
        ``{"over": [...], "under": [...]}``, each entry ``{"label", "bucket" (or None), "true",
        "predicted", "expected"}``: the label's name, bucket, true and predicted positives, and
        its expected positives (the sum of its scores).

    Example:
        >>> import torch
        >>> s = torch.tensor([[0.9, 0.6], [0.4, 0.8]])
        >>> label_calibration(s, torch.tensor([[1, 0], [0, 1]]), 0.5, names=["a", "b"])["over"]
        [{'label': 'b', 'bucket': None, 'true': 1, 'predicted': 2, 'expected': 1.4...}]
    """
    inputs = eval_inputs(scores, targets)
    l = inputs.scores.shape[1]
    if names is not None and len(names) != l:
        raise ValueError(f"names must hold {l} label names, got {len(names)}")
    b = None if buckets is None else _buckets_np(buckets, l)
    predicted, _ = _decision_counts(inputs, thresholds)
    predicted = np.asarray(predicted, dtype=np.int64)
    expected = _score_sums(inputs)
    excess = predicted - inputs.counts
    index = np.arange(l)

    def entry(j: int) -> dict:
        return {"label": str(j if names is None else names[j]), "bucket": None if b is None else BUCKET_NAMES[b[j]],
                "true": int(inputs.counts[j]), "predicted": int(predicted[j]), "expected": float(expected[j])}

    over = [entry(j) for j in np.lexsort((index, -excess))[:top] if excess[j] > 0]   # ties: by index
    under = [entry(j) for j in np.lexsort((index, excess))[:top] if excess[j] < 0]
    return {"over": over, "under": under}


TABLE_METRICS = ("auprc_micro", "auprc_macro", "p@1", "p@3", "p@5", "f1_micro", "f1_macro",
                 "positive_rate_ratio", *[f"positive_rate_ratio_{b}" for b in BUCKET_NAMES],
                 "expected_positive_ratio")


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
