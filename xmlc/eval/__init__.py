"""Evaluation: metrics on the kernels of ``xmlc.kernels.ap``, their validated inputs, summaries and
tables, per-label thresholds, figures (matplotlib) and torchmetrics classes (``streaming``, optional).
Imports the base modules and ``xmlc.stats`` only; the modules import each other, never this package,
which re-exports the library a loop of one's own needs (figures and streaming: import the modules)."""

from xmlc.eval.calibrate import METHODS, apply_thresholds, fit_thresholds, prior_thresholds, thresholds_for
from xmlc.eval.inputs import EvalInputs, eval_inputs
from xmlc.eval.metrics import (average_precision, binned_average_precision, f1_score, ndcg_at_k,
                               positive_rate_ratio, positive_rate_ratio_by_bucket, precision_at_k,
                               predicted_counts, psp_at_k)
from xmlc.eval.summary import (TABLE_METRICS, evaluate_all, label_calibration, metrics_report, metrics_table,
                               results_table, threshold_metrics)

__all__ = [
    "EvalInputs",
    "eval_inputs",
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
    "threshold_metrics",
    "metrics_report",
    "label_calibration",
    "TABLE_METRICS",
    "metrics_table",
    "results_table",
    "fit_thresholds",
    "prior_thresholds",
    "apply_thresholds",
    "thresholds_for",
    "METHODS",
]
