"""Validation and test during a run: :class:`Evaluator` scores a split with the model and computes
its metrics with the training split's label statistics; :meth:`Evaluator.calibrate` fits the
per-label thresholds on validation (``eval.calibration``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from xmlc.config import EvalConfig
from xmlc.eval.calibrate import prior_thresholds, thresholds_for
from xmlc.eval.summary import label_calibration, metrics_report, threshold_metrics
from xmlc.inference import predict_scores
from xmlc.run import LabelStats
from xmlc.train.distributed import DistEnv

__all__ = ["Evaluator", "Validation"]


class Validation(NamedTuple):
    """One scoring of the validation split (:meth:`Evaluator.calibrate`)."""

    metrics: dict             # metrics at 0.5
    calibrated: dict          # threshold metrics at ``thresholds``
    thresholds: torch.Tensor  # (L,) fitted on ``scores``
    scores: torch.Tensor      # (N, L), on the training device


@dataclass
class Evaluator:
    """Scores a split and computes its metrics with the training split's label statistics."""

    ecfg: EvalConfig
    label_stats: LabelStats
    env: DistEnv
    val_members: torch.Tensor | None = None   # train.final: crossfit: the member that scores each validation row
    label_names: list | None = None            # for the labels that over- and under-predict most

    def scores(self, model, loader, labels, members: torch.Tensor | None = None) -> torch.Tensor:
        """(N, L) probabilities of every row of ``loader``'s split (gathered under DDP), on the
        training device, where the metrics are computed (:func:`xmlc.eval.inputs.eval_inputs`);
        the member mean, or with ``members`` (N,) row i scored by member ``members[i]``."""
        return predict_scores(model, loader, labels.shape[0], device=self.env.device,
                              world_size=self.env.world_size, members=members, on_device=True)

    def report(self, scores, labels, thresholds: dict | None = None) -> dict:
        """:func:`xmlc.eval.summary.metrics_report` with ``eval.ks`` and the training split's buckets."""
        ls = self.label_stats
        return metrics_report(scores, labels, thresholds, ks=tuple(self.ecfg.ks), buckets=ls.buckets,
                              propensities=ls.propensities)

    def calibrate(self, model, loader, labels) -> Validation:
        """Metrics at 0.5 and at per-label thresholds fitted (``eval.calibration``) on these scores
        of the validation split (out-of-fold under ``train.final: crossfit``)."""
        scores = self.scores(model, loader, labels, self.val_members)
        thresholds = thresholds_for(self.ecfg, scores, labels, self.label_stats.pos_weight, self.label_stats.buckets)
        calibrated = threshold_metrics(scores, labels, thresholds, self.label_stats.buckets)
        return Validation(self.report(scores, labels)["at_0.5"], calibrated, thresholds, scores)

    def test(self, model, loader, labels, thresholds: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """Metrics at 0.5 ("test"), at ``thresholds`` ("test_calibrated") and, with a pos_weight, at
        the ln(pos_weight) logit correction ("test_prior", for comparison); the labels that over-
        and under-predict most at ``thresholds`` ("test_calibrated_labels",
        :func:`xmlc.eval.summary.label_calibration`); and the scores (N, L) on the training device."""
        scores, pos_weight = self.scores(model, loader, labels), self.label_stats.pos_weight
        named = {"test_calibrated": thresholds}
        if pos_weight is not None:
            named["test_prior"] = prior_thresholds(pos_weight.cpu())
        report = self.report(scores, labels, named)
        by_label = label_calibration(scores, labels, thresholds, names=self.label_names, buckets=self.label_stats.buckets)
        return {"test": report.pop("at_0.5"), **report, "test_calibrated_labels": by_label}, scores

    def figure_inputs(self, thresholds: torch.Tensor) -> dict:
        """What :func:`xmlc.eval.figures.run_figures` needs besides scores and labels."""
        ls = self.label_stats
        return {"train_counts": ls.counts, "buckets": ls.buckets, "thresholds": thresholds,
                "calibration": self.ecfg.calibration,
                "pos_weight": None if ls.pos_weight is None else ls.pos_weight.cpu()}
