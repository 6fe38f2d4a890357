"""Scoring a data set with a model: probabilities for every row, gathered across processes.

Example:
    >>> scores = predict_scores(model, make_loader(data, 512, shuffle=False), len(data),
    ...                         device=torch.device("cpu"))   # (N, L) float32
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from xmlc.models import probabilities

from xmlc.errors import NonFiniteScores

__all__ = ["predict_scores", "NonFiniteScores", "check_finite_scores"]


def check_finite_scores(scores: torch.Tensor, first_row: int = 0) -> torch.Tensor:
    """``scores`` (N, L) itself if every entry is finite, else :class:`NonFiniteScores` naming
    the rows (counted from ``first_row``, 0-based as in the input) that are not."""
    finite = torch.isfinite(scores).all(dim=1)
    if not bool(finite.all()):
        bad = (torch.nonzero(~finite).flatten() + first_row).tolist()
        shown = ", ".join(map(str, bad[:10])) + (f", ... ({len(bad):,} rows)" if len(bad) > 10 else "")
        raise NonFiniteScores(f"the model's scores are NaN or infinite for row(s) {shown} (0-based); "
                              f"check those rows' feature values, or the checkpoint's weights")
    return scores


@torch.no_grad()
def predict_scores(model: nn.Module, loader, num_rows: int, *, device: torch.device, world_size: int = 1,
                   members: torch.Tensor | None = None, on_device: bool = False) -> torch.Tensor:
    """Probabilities (sigmoid of logits) for every row of the loader's data set: (N, L) float32.

    Scoring runs in float32 on every device (``train.amp`` covers the training steps only), so
    the scores of a checkpoint, and the metrics and thresholds computed from them, do not depend
    on the device beyond float32 rounding: bf16 logits would keep 8 significant bits, tie
    thousands of scores and move AUPRC in the fourth decimal.

    Under DDP (``world_size`` > 1, the process group initialised) each process scores its shard
    and the shards are all-gathered, so every process returns the scores of the whole split.

    Args:
        model: returns logits ``(B, L)`` for a :class:`xmlc.data.Batch`; put in eval mode here.
        loader: yields :class:`xmlc.data.Batch` with ``row_ids`` (rows of the data set).
        num_rows: ``N``, rows of the whole data set.
        device: where ``model`` lives.
        world_size: processes in the group; 1 means no gather.
        members: (N,) int64 or None: for an ensemble, row ``i`` scored by member ``members[i]``
            alone instead of the member mean (``train.final: crossfit``'s out-of-fold scores).
        on_device: return the scores on ``device`` (for metrics computed there) instead of the CPU.

    Returns:
        ``(N, L)`` float32 tensor on the CPU (or ``device``); row ``i`` holds the probabilities
        of data set row ``i``.
    """
    model.eval()
    members = None if members is None else members.to(device)
    scores, rows, probs = None, [], []
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        p = probabilities(model(batch), None if members is None else members[batch.row_ids])
        if world_size > 1:
            rows.append(batch.row_ids)
            probs.append(p)
            continue
        if scores is None:
            scores = torch.empty((num_rows, p.shape[1]), dtype=torch.float32, device=device)
        scores[batch.row_ids] = p
    if world_size > 1:
        scores = _gathered(torch.cat(rows), torch.cat(probs), num_rows, world_size)
    if scores is None:   # no rows: the label count is unknown, so is the width
        raise ValueError("predict_scores: the loader yielded no batch")
    return scores if on_device else scores.cpu()


def _gathered(rows: torch.Tensor, probs: torch.Tensor, num_rows: int, world_size: int) -> torch.Tensor:
    """Every process's (rows, probabilities) all-gathered into the (N, L) scores of the split
    (``DistributedSampler`` pads shards to equal length: a padded row is written twice, equally)."""
    all_rows = [torch.empty_like(rows) for _ in range(world_size)]
    all_probs = [torch.empty_like(probs) for _ in range(world_size)]
    dist.all_gather(all_rows, rows)
    dist.all_gather(all_probs, probs)
    scores = torch.empty((num_rows, probs.shape[1]), dtype=torch.float32, device=probs.device)
    scores[torch.cat(all_rows)] = torch.cat(all_probs)
    return scores
