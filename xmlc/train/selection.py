"""Which epoch ships and when to stop: the rules that move a :class:`xmlc.run.Progress` after each
validation.

One margin (``train.margin``, a share of the best value) serves both rules: an epoch within it of
the best is *near* the best. Near epochs reset the early-stopping count (a plateau is not past the
peak), and the latest near epoch is the one that ships (on a plateau it has trained longer at a
lower learning rate). With margin 0 these are the classic rules: the best epoch ships, and every
epoch without a new best counts toward ``train.patience``.
"""

from __future__ import annotations

from xmlc.run import Progress

__all__ = ["end_epoch", "near_best", "patience_ran_out"]


def end_epoch(p: Progress, val_metrics: dict, metric: str, margin: float = 0.0) -> bool:
    """Close the epoch just trained with its validation metrics; True if its weights are now the
    ones to ship: ``metric`` improved on the best so far (NaN never does; a tie does not) or is
    within ``margin`` of it. ``bad_epochs`` counts the epochs in a row that are neither."""
    value = val_metrics[metric]
    improved = value > p.best_value
    p.history.append({"epoch": p.epoch + 1, "step": p.step, **val_metrics})
    if improved:
        p.best_value, p.best_epoch, p.bad_epochs = value, p.epoch + 1, 0
    elif near_best(p, value, margin):
        p.bad_epochs = 0   # near the best: a plateau, not past the peak
    else:
        p.bad_epochs += 1
    selected = improved or near_best(p, value, margin)
    if selected:
        p.selected_epoch = p.epoch + 1
    p.next_epoch()
    return selected


def near_best(p: Progress, value: float, margin: float) -> bool:
    """``value`` within ``margin`` (a share, > 0) of the best so far; never for margin 0 or NaN."""
    return margin > 0 and value >= p.best_value - margin * abs(p.best_value)


def patience_ran_out(p: Progress, patience: int) -> bool:
    """``train.patience`` epochs in a row clearly past the best (0: never)."""
    return bool(patience) and p.bad_epochs >= patience
