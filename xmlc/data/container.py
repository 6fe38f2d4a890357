"""The container every reader returns: :class:`XMCData` (sparse features and labels, row-aligned),
row normalisation, and the checks and joins on whole data sets.

Labels stay a scipy CSR matrix ``(N, L)`` (float32, data == 1, sorted unique indices per row)
from the file to the batch; only a batch becomes a dense ``(B, L)`` target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from xmlc.errors import DataFileError, InputError

__all__ = ["XMCData", "normalize_rows", "concat_data", "check_labelled", "finite_float32"]

F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class XMCData:
    """A multilabel data set: sparse features and sparse labels, row-aligned.

    Attributes:
        features: scipy CSR ``(N, D)`` float32, or a dense float32 ndarray ``(N, D)`` (features
            the user computed, ``.npy``; batches then carry ``Batch.dense``).
        labels: scipy CSR ``(N, L)`` float32, data all 1.0, sorted unique indices per row.
        num_features: ``D``.
        num_labels: ``L``.
        label_names: column ``j`` of ``labels`` is ``label_names[j]``; None: the index is the name.
        featurizer: the plain-data state of the tf-idf featuriser that made ``features`` from
            raw text (:meth:`xmlc.data.features.TextFeaturizer.state_dict`); None for other inputs.
    """

    features: sp.csr_matrix
    labels: sp.csr_matrix
    num_features: int
    num_labels: int
    label_names: list[str] | None = None
    featurizer: dict | None = None

    def __post_init__(self) -> None:
        if self.features.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"features has {self.features.shape[0]} rows but labels has {self.labels.shape[0]}"
            )
        if self.features.shape[1] != self.num_features:
            raise ValueError(f"features.shape[1]={self.features.shape[1]} != num_features={self.num_features}")
        if self.labels.shape[1] != self.num_labels:
            raise ValueError(f"labels.shape[1]={self.labels.shape[1]} != num_labels={self.num_labels}")

    def __len__(self) -> int:
        return self.features.shape[0]

    def subset(self, idx: np.ndarray) -> "XMCData":
        """Rows ``idx`` (int array or boolean mask) as a new ``XMCData``."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return XMCData(self.features[idx], self.labels[idx], self.num_features, self.num_labels,
                       self.label_names, self.featurizer)



def finite_float32(matrix, name: str):
    """``matrix`` ``(N, D)`` (a scipy sparse matrix, or anything numpy reads as a dense array) as
    float32 (CSR for sparse input). A value that is NaN, infinite, past float32's range (1e40:
    finite in float64, infinite as float32) or not a number (None) is an :class:`InputError`
    naming ``name``, the row and the column (0-based) and the value: the readers' check, shared
    by the Python API.

    Example:
        >>> finite_float32(np.array([[1.0, 1e40]]), "X")
        Traceback (most recent call last):
        ...
        xmlc.errors.InputError: X: row 0, column 1: value 1e+40 is not finite as float32 (largest 3.40282e+38)
    """
    try:
        with np.errstate(over="ignore", invalid="ignore"):   # the check below names what overflowed
            if sp.issparse(matrix):
                original = sp.csr_matrix(matrix)
                out = original.astype(np.float32)
                values, source = out.data, original.data
            else:
                source = np.asarray(matrix)
                out = values = np.ascontiguousarray(source, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: feature values must be numbers ({exc})") from None
    bad = ~np.isfinite(values)
    if bad.any():
        if sp.issparse(matrix):
            k = int(np.flatnonzero(bad)[0])
            where = (int(np.searchsorted(out.indptr, k, side="right")) - 1, int(out.indices[k]))
            value = float(source[k])
        else:
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            value = source[where]
        place = ", ".join(f"{axis} {i}" for axis, i in zip(("row", "column"), where))
        if not isinstance(value, (int, float, np.number)):   # None in an object array casts to NaN
            raise InputError(f"{name}: {place}: {value!r} is not a number")
        value = float(value)
        what = (f"value {value:g} is not finite as float32 (largest {F32_MAX:g})" if np.isfinite(value)
                else f"non-finite value {value}")
        raise InputError(f"{name}: {place}: {what}")
    return out


def normalize_rows(features, norm: str = "l2"):
    """Scale each row of ``features`` ``(N, D)`` to unit ``norm``; all-zero rows stay zero.

    Args:
        features: scipy sparse or a dense numpy array ``(N, D)``.
        norm: ``"l2"``, ``"l1"`` or ``"none"`` (returns a float32 copy).

    Returns:
        float32 ``(N, D)``: CSR for sparse input, a numpy array for dense input.
    """
    if norm not in ("l2", "l1", "none"):
        raise ValueError(f"norm must be one of 'l2', 'l1', 'none', got {norm!r}")
    if not sp.issparse(features):   # dense rows (e.g. your own embeddings from a .npy file)
        X = np.array(features, dtype=np.float32)
        if norm != "none":
            per_row = np.linalg.norm(X.astype(np.float64), ord=2 if norm == "l2" else 1, axis=1)
            X *= np.divide(1.0, per_row, out=np.zeros_like(per_row), where=per_row > 0)[:, None]
        return X
    X = sp.csr_matrix(features, dtype=np.float32, copy=True)
    if norm == "none" or X.nnz == 0:
        return X
    vals = X.data.astype(np.float64)
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    per_row = np.bincount(rows, weights=vals * vals if norm == "l2" else np.abs(vals), minlength=X.shape[0])
    if norm == "l2":
        per_row = np.sqrt(per_row)
    scale = np.divide(1.0, per_row, out=np.zeros_like(per_row), where=per_row > 0)
    X.data = (vals * scale[rows]).astype(np.float32)
    return X



def concat_data(first: "XMCData", second: "XMCData") -> "XMCData":
    """The rows of ``first`` followed by the rows of ``second`` (same features and labels)."""
    stack = np.vstack if isinstance(first.features, np.ndarray) else (lambda m: sp.vstack(m, format="csr"))
    return XMCData(stack([first.features, second.features]),
                   sp.vstack([first.labels, second.labels], format="csr"),
                   first.num_features, first.num_labels, first.label_names, first.featurizer)



def check_labelled(data: "XMCData", what: str) -> "XMCData":
    """``data`` itself if it has at least one example and one positive label, else a
    :class:`DataFileError` naming ``what`` (metrics and early stopping need both: without
    them every AUPRC is NaN and no epoch is ever "best")."""
    if len(data) == 0:
        raise DataFileError(f"{what} has no examples")
    if data.labels.nnz == 0:
        raise DataFileError(f"{what} has {len(data):,} examples but not one positive label "
                            f"(L={data.num_labels:,}); every line's label list is empty")
    return data

