"""The inputs of every metric, validated at the boundary: scores, targets, thresholds, policies.

Every metric of :mod:`xmlc.eval` starts from :func:`eval_inputs`, which checks ``scores`` and
``targets`` once and extracts the positive entries; the other checks name the argument and echo
the value received.

Conventions:
    * ``scores`` are ``(N, L)`` torch tensors or numpy arrays, converted to float32 (any float
      dtype in: float16, bfloat16 and float64 are rounded to float32). Exact metrics compare
      scores in float32; ``-0.0`` equals ``0.0``; NaN raises.
    * ``targets`` are dense ``{0, 1}`` tensors/arrays ``(N, L)`` or a scipy sparse matrix (CSR),
      which is never densified.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from xmlc.stats import BUCKET_NAMES

__all__ = ["EvalInputs", "eval_inputs", "Average", "Empty", "Engine"]

Average = Literal["macro", "micro", "none"]
Empty = Literal["ignore", "zero"]
Engine = Literal["auto", "numpy", "torch"]
_ENGINES = ("auto", "numpy", "torch")
_AVERAGES = ("macro", "micro", "none")
_EMPTY = ("ignore", "zero")
_ROW_CHUNK = 2048


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


class EvalInputs(NamedTuple):
    """Scores and the positive entries of their targets, validated once (:func:`eval_inputs`).

    Attributes:
        scores: ``(N, L)`` float32, no NaN: a numpy array (the host engine, a view of the caller's
            array when possible), or a tensor on its device (the torch engine).
        rows, cols: ``(P,)`` int64 row and column of each positive entry, in row-major order.
        counts: ``(L,)`` int64 positives per label.
        positions: the torch engine's ``(rows, cols)`` as int64 tensors on the scores' device;
            None for the host engine.
    """

    scores: np.ndarray | torch.Tensor
    rows: np.ndarray
    cols: np.ndarray
    counts: np.ndarray
    positions: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def on_device(self) -> bool:
        """Whether the metrics run on the torch engine (the scores stay a tensor on their device)."""
        return self.positions is not None


def eval_inputs(scores, targets, *, engine: Engine = "auto") -> EvalInputs:
    """Validate ``scores`` and ``targets`` and extract the positives: the first step of every metric.

    Args:
        scores: ``(N, L)`` torch tensor or numpy array (converted to float32; NaN raises).
        targets: ``(N, L)`` {0, 1} torch tensor, numpy array or scipy sparse matrix (never
            densified).
        engine: ``"numpy"``, the host engine (:mod:`xmlc.kernels.ap`; CPU tensors are read in
            place); ``"torch"``, the scores stay a tensor and the metrics run with torch ops on its
            device (:mod:`xmlc.kernels.ap_torch`); ``"auto"``: torch for a tensor on an
            accelerator, numpy otherwise (numpy's sort and counting beat torch's on the CPU).

    Returns:
        :class:`EvalInputs`.

    Example:
        >>> inputs = eval_inputs(torch.tensor([[0.9, 0.1], [0.4, 0.8]]), torch.tensor([[1, 0], [1, 1]]))
        >>> inputs.rows, inputs.cols, inputs.counts
        (array([0, 1, 1]), array([0, 0, 1]), array([2, 1]))
    """
    _check_choice("engine", engine, _ENGINES)
    on_device = isinstance(scores, torch.Tensor) and (engine == "torch" or (
        engine == "auto" and scores.device.type != "cpu"))
    s = _scores_tensor(scores) if on_device else _scores_np(scores)
    if s.numel() if on_device else s.size:   # NaN propagates through min; no (N, L) temporary
        if (torch.isnan(s.min()) if on_device else np.isnan(s.min())):
            raise ValueError("scores contain NaN")
    rows, cols = _positive_entries(targets, tuple(s.shape))
    counts = np.bincount(cols, minlength=s.shape[1]).astype(np.int64)
    positions = (torch.from_numpy(rows).to(s.device), torch.from_numpy(cols).to(s.device)) if on_device else None
    return EvalInputs(s, rows, cols, counts, positions)


def _scores_tensor(scores: torch.Tensor) -> torch.Tensor:
    """Scores as a 2-D float32 tensor on their own device."""
    scores = scores.detach()
    if scores.dtype != torch.float32:
        scores = scores.float()
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (N, L), got shape {tuple(scores.shape)}")
    return scores


def _scores_np(scores) -> np.ndarray:
    """Scores as a 2-D float32 numpy array (zero-copy for CPU float32 tensors)."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach()
        if scores.dtype != torch.float32:
            scores = scores.float()
        scores = scores.cpu().numpy()
    elif isinstance(scores, np.ndarray):
        if scores.dtype != np.float32:
            scores = scores.astype(np.float32)
    else:
        raise TypeError(f"scores must be a torch.Tensor or numpy.ndarray, got {type(scores).__name__}")
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (N, L), got shape {tuple(scores.shape)}")
    return scores


def _positive_entries(targets, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``targets`` against ``shape``; (rows, cols) int64 of its positives, row-major."""
    n, l = shape
    if sp.issparse(targets):
        t = sp.csr_matrix(targets)
        if t.shape != (n, l):
            raise ValueError(f"targets shape {t.shape} does not match scores shape {(n, l)}")
        if not t.has_canonical_format:
            t = t.copy()
            t.sum_duplicates()
        if t.nnz and not np.all((t.data == 1) | (t.data == 0)):
            bad = t.data[(t.data != 1) & (t.data != 0)][0]
            raise ValueError(f"targets must hold only 0/1, found {bad!r}")
        keep = t.data != 0
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(t.indptr))[keep]
        return rows, t.indices[keep].astype(np.int64)
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().cpu().numpy()
    if not isinstance(targets, np.ndarray):
        raise TypeError(
            "targets must be a torch.Tensor, numpy.ndarray or scipy sparse matrix, "
            f"got {type(targets).__name__}"
        )
    if targets.shape != (n, l):
        raise ValueError(f"targets shape {targets.shape} does not match scores shape {(n, l)}")
    flat = []
    for r0 in range(0, n, _ROW_CHUNK):
        block = targets[r0:r0 + _ROW_CHUNK].reshape(-1)
        f = np.flatnonzero(block if block.dtype == np.bool_ else block != 0)  # bool: SIMD fast path
        if targets.dtype != np.bool_ and f.size:
            vals = block[f]
            if not np.all(vals == 1):
                raise ValueError(f"targets must hold only 0/1, found {vals[vals != 1][0]!r}")
        flat.append(f + r0 * l)
    rows, cols = np.divmod(np.concatenate(flat) if flat else np.zeros(0, np.int64), max(l, 1))
    return rows.astype(np.int64, copy=False), cols.astype(np.int64, copy=False)


def _thresholds_np(thresholds, num_labels: int) -> np.ndarray:
    """A scalar or (L,) threshold as a float32 array broadcastable against (N, L)."""
    if isinstance(thresholds, torch.Tensor):
        thresholds = thresholds.detach().cpu().numpy()
    t = np.asarray(thresholds, dtype=np.float32)
    if t.ndim == 0:
        return t.reshape(1)
    if t.shape != (num_labels,):
        raise ValueError(f"thresholds must be a scalar or shape ({num_labels},), got shape {t.shape}")
    return t


def _check_num_bins(num_bins) -> None:
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
        raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")


def _dense_targets(targets, shape) -> torch.Tensor:
    if sp.issparse(targets):
        targets = targets.toarray()
    t = torch.as_tensor(targets)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"targets shape {tuple(t.shape)} does not match scores shape {tuple(shape)}")
    return t


def _check_k(k) -> int:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return int(k)


def _propensities_np(propensities, num_labels: int) -> np.ndarray:
    p = np.asarray(propensities.detach().cpu() if isinstance(propensities, torch.Tensor) else propensities,
                   dtype=np.float64)
    if p.shape != (num_labels,):
        raise ValueError(f"propensities must have shape ({num_labels},), got {p.shape}")
    if not np.all(p > 0):
        raise ValueError(f"propensities must be > 0, found {p[~(p > 0)][0]!r}")
    return p


def _buckets_np(buckets, num_labels: int) -> np.ndarray:
    b = np.asarray(buckets.detach().cpu() if isinstance(buckets, torch.Tensor) else buckets)
    if b.shape != (num_labels,):
        raise ValueError(f"buckets must have shape ({num_labels},), got {b.shape}")
    if b.size and (b.min() < 0 or b.max() >= len(BUCKET_NAMES)):
        raise ValueError(f"buckets must be in 0..{len(BUCKET_NAMES) - 1}, got values {np.unique(b)}")
    return b
