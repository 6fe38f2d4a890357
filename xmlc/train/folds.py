"""``train.final: crossfit``: which ensemble member leaves out which row.

The validation rows are dealt out to the members at random; member m trains on train and every
validation row but its own share, and each validation row is scored by the one member that never
saw it (out-of-fold), which selects the epoch and fits the thresholds: one training both selects
and ships.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from xmlc.data import concat_data

__all__ = ["Folds", "crossfit_folds"]


class Folds(NamedTuple):
    """Which ensemble member leaves out which row (:func:`crossfit_folds`).

    Under DDP each process averages a member's loss over the rows of its own shard that the
    member keeps, and DDP averages those: the same as one process when the shards keep as many
    rows each, slightly reweighted otherwise (tested: ``tests/test_train.py``).
    """

    held_out_by: torch.Tensor   # (N_fit,) int64: the member that never trains on the row, -1 for none
    members: int                # M

    @property
    def val_members(self) -> torch.Tensor:
        """(N_val,) int64: the member that scores each validation row (the rows after train's)."""
        return self.held_out_by[self.held_out_by >= 0]

    def keep(self, row_ids: torch.Tensor) -> torch.Tensor | None:
        """(M, B) bool: which rows of a batch (its ``row_ids``, on ``held_out_by``'s device) each
        member trains on; None: all."""
        held = self.held_out_by[row_ids]
        if bool((held < 0).all()):
            return None
        return held[None, :] != torch.arange(self.members, device=held.device)[:, None]

    def summary(self) -> dict:
        """The ``crossfit`` entry of ``metrics.json``."""
        return {"members": self.members, "num_train": len(self.held_out_by),
                "val_rows_per_member": torch.bincount(self.val_members, minlength=self.members).tolist()}


def crossfit_folds(train_set, val_set, members: int, *, seed: int):
    """(train + validation as one training set, :class:`Folds`): the validation rows are dealt
    out to the ``members`` at random (seeded by ``seed``; shares differ by at most one row), and
    member m trains on every row but its own share."""
    share = torch.from_numpy(np.random.default_rng(seed).permutation(len(val_set)) % members).long()
    held_out_by = torch.cat([torch.full((len(train_set),), -1, dtype=torch.int64), share])
    return concat_data(train_set, val_set), Folds(held_out_by, members)
