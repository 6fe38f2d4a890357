"""The average precision of :mod:`xmlc.eval.metrics` as ``torchmetrics.Metric`` classes: the same
math, accumulated over batches; they work in Lightning and sync under DDP.

torchmetrics is an optional dependency, needed only here: ``pip install 'xmlc-trainer[streaming]'``.
Nothing else in xmlc imports this module.
"""

from __future__ import annotations

import torch

try:
    from torchmetrics import Metric
except ImportError as err:  # the optional dependency is missing
    raise ImportError(
        "xmlc.eval.streaming needs torchmetrics, an optional dependency: "
        "pip install 'xmlc-trainer[streaming]' (or pip install torchmetrics)"
    ) from err

from xmlc.eval.inputs import _AVERAGES, _EMPTY, Average, Empty, _check_choice, _check_num_bins, _dense_targets
from xmlc.eval.metrics import _binned_ap, average_precision
from xmlc.kernels.ap import binned_counts

__all__ = ["MultilabelAUPRC", "BinnedAveragePrecision"]


class MultilabelAUPRC(Metric):
    """Exact AUPRC accumulated over batches (states are concatenated; DDP gathers them).

    Args:
        num_labels: L. average, empty: as in :func:`xmlc.eval.metrics.average_precision`.

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
            :func:`xmlc.eval.metrics.average_precision`.

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
        pos_hist, all_hist = binned_counts(scores.detach(), t, self.num_bins)
        self.pos_hist += pos_hist
        self.all_hist += all_hist

    def compute(self) -> torch.Tensor:
        """Scalar float32 tensor (macro/micro) or ``(L,)`` (none)."""
        return _binned_ap(self.pos_hist, self.all_hist, self.average, self.empty)
