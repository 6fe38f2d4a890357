"""The multilabel train/validation split: iterative stratification on the CSR label matrix."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["stratified_split"]


def stratified_split(labels: sp.csr_matrix, val_fraction: float = 0.1, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Multilabel train/validation split by iterative stratification (Sechidis et al., 2011).

    Works on the CSR matrix directly (O(nnz) memory, no dense ``(N, L)``). As in the
    paper, examples are placed rarest label first (examples ordered by the count of their
    rarest label; ties at random) and each goes to the fold that still wants most of its
    labels. Unlike the label-by-label greedy of the paper, the choice weighs *all* labels
    of the example: fold ``j`` scores ``sum_l want[j, l] / (ratio_j * count_l)`` over the
    example's labels (the relative demand still open), ties broken by the fold that wants
    most examples, and a full fold takes no more. With many labels per example (the seed
    scenario carries ~130) the paper's greedy both over-fills the small fold and ends no
    closer to the per-label proportions than a random split; this one keeps sizes exact
    and is several times closer (see ``tests/test_split.py``). Examples without labels
    fill whichever fold still has room.

    Reference: K. Sechidis, G. Tsoumakas, I. Vlahavas, "On the Stratification of
    Multi-Label Data", ECML PKDD 2011.

    Args:
        labels: ``(N, L)`` {0, 1} scipy sparse.
        val_fraction: share of examples for validation, in (0, 1); the validation fold
            gets ``round(val_fraction * N)`` examples.
        seed: tie-breaking and order seed.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 arrays partitioning ``range(N)``.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    Y = sp.csr_matrix(labels)
    Y.sum_duplicates()
    Y.eliminate_zeros()
    N, L = Y.shape
    rng = np.random.default_rng(seed)
    ratios = np.array([1.0 - val_fraction, val_fraction])
    counts = np.bincount(Y.indices, minlength=L).astype(np.float64)
    want_label = ratios[:, None] * counts[None, :]  # (2, L) remaining demand per fold
    inv_demand = 1.0 / np.maximum(want_label, 1e-12)  # relative demand: want / initial want
    n_val = int(round(val_fraction * N))
    want_size = np.array([N - n_val, n_val], dtype=np.float64)
    # order: rarest label of each example first (unlabelled examples last), random ties
    rarest = np.full(N, np.inf)
    np.minimum.at(rarest, np.repeat(np.arange(N), np.diff(Y.indptr)), counts[Y.indices])
    order = np.lexsort((rng.random(N), rarest))
    fold = np.empty(N, dtype=np.int64)
    indptr, indices = Y.indptr, Y.indices
    for i in order:  # one pass over examples, O(labels of the example) each
        labs = indices[indptr[i] : indptr[i + 1]]
        if want_size[0] <= 0 or want_size[1] <= 0:
            j = int(want_size[1] > 0)
        else:
            score = (want_label[:, labs] * inv_demand[:, labs]).sum(axis=1)
            j = int(np.argmax(score)) if score[0] != score[1] else int(np.argmax(want_size))
        fold[i] = j
        want_label[j, labs] -= 1
        want_size[j] -= 1
    return np.flatnonzero(fold == 0).astype(np.int64), np.flatnonzero(fold == 1).astype(np.int64)

