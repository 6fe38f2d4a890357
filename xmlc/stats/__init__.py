"""Label statistics: pure functions on label matrices, for any training loop.

Counts, ``pos_weight``, class-balanced weights, propensities and head/torso/tail
buckets, computed in O(nnz) time and O(L) extra memory (no dense ``(N, L)``), and the
label report. The library imports only numpy, scipy and torch; the command
``python -m xmlc.stats FILE [--json]`` (:mod:`xmlc.stats.__main__`) sits on top of it.

Example:
    >>> import scipy.sparse as sp
    >>> from xmlc.stats import pos_weight
    >>> labels = sp.csr_matrix([[1, 0, 1], [0, 0, 1], [1, 0, 0], [0, 0, 1]])
    >>> pos_weight(labels, power=0.5, max_value=100.0)   # float32 (L,); no positive: the largest
    tensor([1.0000, 1.0000, 0.5774])
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "label_counts",
    "label_and_example_counts",
    "pos_weight",
    "pos_weight_from_counts",
    "class_balanced_weights",
    "propensity",
    "frequency_buckets",
    "BUCKET_NAMES",
    "label_report",
    "format_report",
]

BUCKET_NAMES = ("head", "torso", "tail")
ZERO_POSITIVE_POLICIES = ("max", "one", "zero", "error")
ZeroPositive = Literal["max", "one", "zero", "error"]


# --------------------------------------------------------------------------------------
# Counting, for every input type
# --------------------------------------------------------------------------------------


def _check_binary(values: np.ndarray, what: str) -> None:
    if values.size and not np.all((values == 1) | (values == 0)):
        bad = values[(values != 1) & (values != 0)][0]
        raise ValueError(f"{what}: labels must be 0/1, found value {bad!r}")


def _check_width(L_seen: int, num_labels: int | None, what: str) -> int:
    if num_labels is not None and num_labels != L_seen:
        raise ValueError(f"{what} has {L_seen} label columns but num_labels={num_labels}")
    return L_seen


def _count_sparse(Y, num_labels) -> tuple[np.ndarray, int]:
    N, L = Y.shape
    _check_width(L, num_labels, "labels")
    if Y.format not in ("csr", "csc"):
        Y = Y.tocsr()  # COO, LIL, ...: sums duplicates
    if not Y.has_canonical_format:
        Y = Y.copy()
        Y.sum_duplicates()
    data = Y.data
    if data.size == 0:
        return np.zeros(L, dtype=np.int64), N
    lo, hi = data.min(), data.max()  # reductions: no O(nnz) temporaries
    if not (lo == 1 and hi == 1):
        _check_binary(data, "labels")
        if lo == 0:  # explicit zeros (rare): drop them on a copy
            Y = Y.copy()
            Y.eliminate_zeros()
    if Y.format == "csc":
        return np.diff(Y.indptr).astype(np.int64), N
    # All stored values are 1: the column sum is the count (scipy's C loop, O(L) memory;
    # exact in float64 for any N below 2**53).
    return np.asarray(Y.sum(axis=0, dtype=np.float64)).ravel().astype(np.int64), N


def _count_dense_numpy(arr: np.ndarray, num_labels) -> tuple[np.ndarray, int]:
    if arr.ndim != 2:
        raise ValueError(f"dense labels must be 2-D (N, L), got shape {arr.shape}")
    _check_width(arr.shape[1], num_labels, "labels")
    if arr.dtype != bool:
        _check_binary(arr if arr.size < 1 else np.unique(arr), "labels")
    return np.count_nonzero(arr, axis=0).astype(np.int64), arr.shape[0]


def _count_torch(t: torch.Tensor, num_labels) -> tuple[np.ndarray, int]:
    if t.dim() != 2:
        raise ValueError(f"label tensor must be 2-D (N, L), got shape {tuple(t.shape)}")
    N, L = t.shape
    _check_width(L, num_labels, "labels")
    if t.layout == torch.strided:
        if t.dtype != torch.bool:
            _check_binary(torch.unique(t).cpu().numpy(), "labels")
        return torch.count_nonzero(t, dim=0).cpu().numpy().astype(np.int64), N
    coo = t.to_sparse_coo().coalesce().cpu()
    vals = coo.values().numpy()
    cols = coo.indices()[1].numpy()
    if vals.dtype != bool:
        _check_binary(vals, "labels")
    return np.bincount(cols[vals != 0], minlength=L).astype(np.int64), N


def _count_label_lists(lists, num_labels) -> tuple[np.ndarray, int]:
    N = len(lists)
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=N)
    flat = np.concatenate([np.asarray(x, dtype=np.int64).reshape(-1) for x in lists]) if lengths.sum() else np.zeros(0, np.int64)
    if flat.size and flat.min() < 0:
        raise ValueError(f"label lists: negative label index {int(flat.min())}")
    L = num_labels if num_labels is not None else int(flat.max(initial=-1)) + 1
    if flat.size and flat.max() >= L:
        raise ValueError(f"label lists: label index {int(flat.max())} >= num_labels={L}")
    rows = np.repeat(np.arange(N, dtype=np.int64), lengths)
    unique = np.unique(rows * max(L, 1) + flat)  # a label listed twice counts once
    return np.bincount(unique % max(L, 1), minlength=L).astype(np.int64), N


def _is_matrix(x) -> bool:
    return sp.issparse(x) or (isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 2)


def _batch_labels(item):
    """The label matrix of one streamed item: a Batch, an (x, y) pair, or a matrix."""
    if hasattr(item, "targets") and hasattr(item, "row_ids"):  # xmlc.data.Batch
        return item.targets
    if isinstance(item, (tuple, list)) and len(item) >= 2 and _is_matrix(item[1]):
        return item[1]
    if isinstance(item, dict) and "targets" in item:
        return item["targets"]
    if _is_matrix(item):
        return item
    raise TypeError(
        f"cannot find labels in a streamed item of type {type(item).__name__}; expected a Batch, "
        "an (x, y) tuple, a dict with 'targets', or a 2-D label matrix"
    )


def _is_label_list(item) -> bool:
    if isinstance(item, (list, tuple, range)):
        return all(isinstance(v, (int, np.integer)) for v in item)
    return isinstance(item, np.ndarray) and item.ndim == 1 and item.dtype.kind in "iu"


def label_and_example_counts(labels, num_labels: int | None = None) -> tuple[np.ndarray, int]:
    """Positives per label and the number of examples ``N``, in one pass (for inputs such
    as a ``DataLoader`` that can be read only once; :func:`label_counts` gives the counts alone).

    Args:
        labels: ``(N, L)`` {0, 1} labels as any of: scipy sparse (CSR, CSC, COO, ...),
            numpy dense, torch dense or sparse, an ``XMCData``, a list of label lists
            (``[[0, 3], [], [2]]``; a label repeated in one list counts once), or an
            iterable of batches (``Batch`` objects, ``(x, y)`` tuples or label matrices,
            e.g. a ``DataLoader``), consumed once with O(L) state.
        num_labels: ``L``; required to match the matrices' width when given, and sets
            the length for label lists (default: max label + 1).

    Returns:
        ``(counts, N)``: int64 ``(L,)`` positives per label, and ``N``.

    Raises:
        ValueError: non-binary values, a width that disagrees with ``num_labels``, label
            indices out of range.
        TypeError: an input of none of these types.

    Example:
        >>> label_and_example_counts([[0, 2], [2], []])
        (array([1, 0, 2]), 3)
    """
    if hasattr(labels, "labels") and hasattr(labels, "num_labels") and sp.issparse(labels.labels):
        return _count_sparse(labels.labels, num_labels)
    if sp.issparse(labels):
        return _count_sparse(labels, num_labels)
    if isinstance(labels, np.ndarray):
        return _count_dense_numpy(labels, num_labels)
    if isinstance(labels, torch.Tensor):
        return _count_torch(labels, num_labels)
    if isinstance(labels, (list, tuple)) and all(_is_label_list(x) for x in labels):
        return _count_label_lists(labels, num_labels)
    if isinstance(labels, Iterable) and not isinstance(labels, (str, bytes)):
        counts, total = None, 0
        for item in labels:
            if _is_label_list(item):
                raise TypeError("mixing label lists with batches; pass a list of label lists")
            c, n = label_and_example_counts(_batch_labels(item), num_labels)
            if counts is None:
                counts, num_labels = c, c.size
            else:
                counts += c
            total += n
        if counts is None:
            if num_labels is None:
                raise ValueError("empty iterable of batches and no num_labels")
            counts = np.zeros(num_labels, dtype=np.int64)
        return counts, total
    raise TypeError(f"unsupported labels type {type(labels).__name__}")


def label_counts(labels, num_labels: int | None = None) -> np.ndarray:
    """Positives per label: int64 ``(L,)``; :func:`label_and_example_counts` without ``N``.

    Args:
        labels, num_labels: as in :func:`label_and_example_counts`.

    Returns:
        int64 ``(L,)``.

    Example:
        >>> label_counts([[0, 2], [2], []])
        array([1, 0, 2])
    """
    return label_and_example_counts(labels, num_labels)[0]


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------


def _check_counts(counts, num_examples=None) -> np.ndarray:
    if isinstance(counts, torch.Tensor):
        counts = counts.detach().cpu().numpy()
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"counts must be 1-D (L,), got shape {c.shape}")
    if c.size and (not np.isfinite(c).all() or c.min() < 0):
        raise ValueError(f"counts must be finite and >= 0, got min {c.min()}")
    if num_examples is not None:
        if num_examples < 0:
            raise ValueError(f"num_examples must be >= 0, got {num_examples}")
        if c.size and c.max() > num_examples:
            raise ValueError(f"counts max {c.max():g} > num_examples={num_examples}")
    return c


def _fill_zero_positive(w: np.ndarray, zero: np.ndarray, policy: str, what: str) -> np.ndarray:
    if policy not in ZERO_POSITIVE_POLICIES:
        raise ValueError(f"zero_positive must be one of {ZERO_POSITIVE_POLICIES}, got {policy!r}")
    if not zero.any():
        return w
    if policy == "error":
        ids = np.flatnonzero(zero)
        raise ValueError(
            f"{what}: {ids.size} label(s) have no positive examples (first: {ids[:10].tolist()}); "
            "choose zero_positive='max', 'one' or 'zero'"
        )
    if policy == "max":
        finite = w[~zero]
        fill = finite.max() if finite.size else 1.0
    else:
        fill = 1.0 if policy == "one" else 0.0
    w = w.copy()
    w[zero] = fill
    return w


def pos_weight_from_counts(
    counts,
    num_examples: int,
    *,
    power: float = 1.0,
    max_value: float | None = None,
    zero_positive: ZeroPositive = "max",
) -> torch.Tensor:
    """``pos_weight = ((N - pos) / pos) ** power``, clipped at ``max_value``.

    The weight of the positive term of binary cross-entropy that balances a label's
    positives against its negatives (``torch.nn.BCEWithLogitsLoss(pos_weight=...)``).
    ``power=0.5`` gives the square-root dampened variant.

    Args:
        counts: ``(L,)`` positives per label.
        num_examples: ``N``.
        power: exponent >= 0 applied to the ratio.
        max_value: clip the weights at this value (> 0), applied last.
        zero_positive: policy for labels with no positives (where the ratio is inf):
            ``"max"`` the largest finite weight (1.0 if no label has a positive),
            ``"one"``, ``"zero"``, or ``"error"`` (raise ValueError listing them).
            Never inf or NaN.

    Returns:
        float32 tensor ``(L,)``.

    Example:
        >>> pos_weight_from_counts([1, 4, 0], 5, zero_positive="one")
        tensor([4.0000, 0.2500, 1.0000])
    """
    if power < 0 or not math.isfinite(power):
        raise ValueError(f"power must be finite and >= 0, got {power}")
    if max_value is not None and not max_value > 0:
        raise ValueError(f"max_value must be > 0 or None, got {max_value}")
    pos = _check_counts(counts, num_examples)
    zero = pos == 0
    ratio = np.divide(num_examples - pos, pos, out=np.zeros_like(pos), where=~zero)
    w = ratio**power
    w = _fill_zero_positive(w, zero, zero_positive, "pos_weight")
    if max_value is not None:
        w = np.minimum(w, max_value)
    return torch.from_numpy(w.astype(np.float32))


def pos_weight(
    labels,
    *,
    num_labels: int | None = None,
    power: float = 1.0,
    max_value: float | None = None,
    zero_positive: ZeroPositive = "max",
) -> torch.Tensor:
    """``(N - pos) / pos`` per label from a label matrix: float32 ``(L,)``.

    Args:
        labels: any input of ``label_and_example_counts`` (sparse, dense, torch, lists, batches).
        num_labels: ``L``, see ``label_and_example_counts``.
        power, max_value, zero_positive: see ``pos_weight_from_counts``.

    Returns:
        float32 tensor ``(L,)``.

    Example:
        >>> pos_weight([[0], [0, 1], []], num_labels=3, zero_positive="one")
        tensor([0.5000, 2.0000, 1.0000])
    """
    counts, n = label_and_example_counts(labels, num_labels)
    return pos_weight_from_counts(counts, n, power=power, max_value=max_value, zero_positive=zero_positive)


def class_balanced_weights(counts, *, beta: float = 0.999, zero_positive: ZeroPositive = "max") -> torch.Tensor:
    """Class-balanced weights from the effective number of samples (Cui et al., 2019).

    ``w_l = (1 - beta) / (1 - beta ** n_l)``, then normalised so that the weights have
    mean 1 over all ``L`` labels (Cui et al. scale them to sum to the number of classes).
    ``beta = 0`` gives all ones; ``beta -> 1`` approaches inverse frequency.

    Reference: Y. Cui, M. Jia, T.-Y. Lin, Y. Song, S. Belongie, "Class-Balanced Loss
    Based on Effective Number of Samples", CVPR 2019.

    Args:
        counts: ``(L,)`` positives per label.
        beta: in [0, 1).
        zero_positive: policy for labels with ``n_l = 0`` (weight inf): see
            ``pos_weight_from_counts``; applied before normalising.

    Returns:
        float32 tensor ``(L,)``, mean 1.

    Example:
        >>> class_balanced_weights([1, 3], beta=0.5)  # (1 - b) / (1 - b ** n): 1 and 4/7
        tensor([1.2727, 0.7273])
    """
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    n = _check_counts(counts)
    zero = n == 0
    if beta == 0:
        w = np.ones_like(n)
    else:
        effective = -np.expm1(n * math.log(beta)) / (1 - beta)  # (1 - beta^n) / (1 - beta)
        w = np.divide(1.0, effective, out=np.zeros_like(n), where=~zero)
    w = _fill_zero_positive(w, zero, zero_positive, "class_balanced_weights")
    mean = w.mean() if w.size else 1.0
    if mean > 0:
        w = w / mean
    return torch.from_numpy(w.astype(np.float32))


def propensity(counts, num_examples: int, *, A: float = 0.55, B: float = 1.5) -> torch.Tensor:
    """Label propensities for missing labels (Jain et al., 2016).

    ``p_l = 1 / (1 + C * exp(-A * log(N_l + B)))`` with ``C = (log N - 1) * (B + 1) ** A``,
    ``N_l`` the positives of label ``l``. Rare labels get small propensities; their
    inverse weighs propensity-scored metrics (PSP@k). Suggested (A, B): Wikipedia-LSHTC
    (0.5, 0.4), Amazon (0.6, 2.6), others (0.55, 1.5).

    Reference: H. Jain, Y. Prabhu, M. Varma, "Extreme Multi-label Loss Functions for
    Recommendation, Tagging, Ranking & Other Missing Label Applications", KDD 2016.

    Args:
        counts: ``(L,)`` positives per label.
        num_examples: ``N`` (> 1).
        A, B: the data-set parameters.

    Returns:
        float32 tensor ``(L,)`` in (0, 1).

    Example:
        >>> propensity([1, 100], 1000)  # rare labels get small propensities
        tensor([0.1448, 0.5648])
    """
    if num_examples <= 1:
        raise ValueError(f"num_examples must be > 1, got {num_examples}")
    n = _check_counts(counts, num_examples)
    C = (math.log(num_examples) - 1.0) * (B + 1.0) ** A
    p = 1.0 / (1.0 + C * np.exp(-A * np.log(n + B)))
    return torch.from_numpy(p.astype(np.float32))


def frequency_buckets(counts, *, boundaries: tuple[float, float] | None = None) -> np.ndarray:
    """Head / torso / tail bucket of each label: int ``(L,)``, 0 head, 1 torso, 2 tail.

    Rule (default, equal positive mass): sort labels by count, descending, and walk the
    cumulative share of all positives. ``c_head`` is the count of the label at which the
    share first reaches 1/3 and ``c_tail`` the count at which it first reaches 2/3. Head:
    ``count >= c_head``; tail: ``count < c_tail`` (labels with no positives always tail);
    torso: the rest. Each bucket thus holds about a third of the positives; tied counts
    always share a bucket. With ``boundaries=(head_min, tail_max)``: head ``count >=
    head_min``, tail ``count <= tail_max``, torso between.

    Args:
        counts: ``(L,)`` positives per label.
        boundaries: optional absolute count boundaries ``(head_min, tail_max)``.

    Returns:
        int64 array ``(L,)``; names in ``BUCKET_NAMES``.

    Example:
        >>> frequency_buckets([50, 30, 10, 5, 5, 0])
        array([0, 1, 2, 2, 2, 2])
    """
    n = _check_counts(counts)
    out = np.ones(n.size, dtype=np.int64)
    if boundaries is not None:
        head_min, tail_max = boundaries
        if not tail_max < head_min:
            raise ValueError(f"boundaries must satisfy tail_max < head_min, got {boundaries}")
        out[n >= head_min] = 0
        out[n <= tail_max] = 2
        return out
    total = n.sum()
    if total == 0:
        out[:] = 2
        return out
    order = np.argsort(-n, kind="stable")
    share = np.cumsum(n[order]) / total
    c_head = n[order][np.searchsorted(share, 1 / 3 - 1e-12)]
    c_tail = n[order][min(np.searchsorted(share, 2 / 3 - 1e-12), n.size - 1)]
    out[n >= c_head] = 0
    out[n < c_tail] = 2
    out[n == 0] = 2
    return out


# --------------------------------------------------------------------------------------
# The label report
# --------------------------------------------------------------------------------------


def label_report(data_or_labels, *, num_labels: int | None = None, few: int = 5) -> dict:
    """A label report a person can act on, as a JSON-ready dict.

    Args:
        data_or_labels: an ``XMCData`` (adds ``D`` and features per example) or any
            input of ``label_and_example_counts``.
        num_labels: ``L``, see ``label_and_example_counts``.
        few: labels with ``1..few`` positives are counted as "few".

    Returns:
        dict with ``num_examples``, ``num_features`` (or None), ``num_labels``,
        ``label_nnz``, ``density``, ``labels_per_example`` (mean/min/median/max),
        ``examples_without_labels``, ``label_count`` (min/median/max), ``buckets`` (labels
        and positives per bucket, with the rule's count boundaries), ``labels_zero_positive``,
        ``labels_few_positive``, ``pos_weight`` (min/median/max over labels with a
        positive) and ``imbalance_ratio`` (largest over smallest positive count).

    Example:
        >>> r = label_report([[0, 2], [2], []], num_labels=4)
        >>> r["label_count"]["max"], r["labels_zero_positive"], r["buckets"]["head"]["labels"]
        (2, 2, 1)
    """
    features = getattr(data_or_labels, "features", None)
    labels = getattr(data_or_labels, "labels", data_or_labels)
    counts, N = label_and_example_counts(labels, num_labels)
    L = counts.size
    nnz = int(counts.sum())
    report: dict = {
        "num_examples": int(N),
        "num_features": int(features.shape[1]) if features is not None else None,
        "num_labels": int(L),
        "label_nnz": nnz,
        "density": nnz / (N * L) if N and L else 0.0,
    }
    if sp.issparse(labels):
        Y = labels.tocsr()
        per_example = np.diff(Y.indptr)
        report["labels_per_example"] = _summary(per_example)
        report["examples_without_labels"] = int((per_example == 0).sum())
    else:
        report["labels_per_example"] = {"mean": nnz / N if N else 0.0}
    if features is not None:
        report["features_per_example"] = _summary(np.diff(features.tocsr().indptr))
    report["label_count"] = _summary(counts)
    report["buckets"] = _bucket_report(counts)
    report["labels_zero_positive"] = int((counts == 0).sum())
    report["labels_few_positive"] = {"few": few, "labels": int(((counts > 0) & (counts <= few)).sum())}
    return report | _imbalance_report(counts, N)


def _bucket_report(counts: np.ndarray) -> dict:
    """Per bucket of :func:`frequency_buckets`: its labels, positives and count range."""
    buckets = frequency_buckets(counts)
    return {
        name: {
            "labels": int((buckets == b).sum()),
            "positives": int(counts[buckets == b].sum()),
            "min_count": int(counts[buckets == b].min()) if (buckets == b).any() else None,
            "max_count": int(counts[buckets == b].max()) if (buckets == b).any() else None,
        }
        for b, name in enumerate(BUCKET_NAMES)
    }


def _imbalance_report(counts: np.ndarray, num_examples: int) -> dict:
    """``pos_weight`` (min/median/max) and the imbalance ratio over the labels with a positive."""
    positive = counts[counts > 0]
    if not positive.size:
        return {"pos_weight": None, "imbalance_ratio": None}
    w = pos_weight_from_counts(positive, num_examples).numpy().astype(np.float64)
    return {"pos_weight": {"min": float(w.min()), "median": float(np.median(w)), "max": float(w.max())},
            "imbalance_ratio": float(positive.max() / positive.min())}


def _summary(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"mean": 0.0, "min": 0, "median": 0.0, "max": 0}
    return {
        "mean": float(values.mean()),
        "min": int(values.min()),
        "median": float(np.median(values)),
        "max": int(values.max()),
    }


def format_report(report: dict, title: str = "") -> str:
    """The report as aligned text."""
    L, N = report["num_labels"], report["num_examples"]
    lpe = report["labels_per_example"]
    cnt = report["label_count"]
    lines = [f"label report: {title}" if title else "label report"]
    rows = [
        ("examples N", f"{N:,}"),
        ("features D", f"{report['num_features']:,}" if report["num_features"] is not None else "-"),
        ("labels L", f"{L:,}"),
        ("label nonzeros", f"{report['label_nnz']:,}"),
        ("density", f"{report['density']:.3%}"),
        (
            "labels per example",
            f"mean {lpe['mean']:.2f}" + (f", min {lpe['min']}, median {lpe['median']:g}, max {lpe['max']}" if "min" in lpe else ""),
        ),
    ]
    if "examples_without_labels" in report:
        rows.append(("examples without labels", f"{report['examples_without_labels']:,}"))
    if "features_per_example" in report:
        fpe = report["features_per_example"]
        rows.append(("features per example", f"mean {fpe['mean']:.1f}, min {fpe['min']}, max {fpe['max']}"))
    rows.append(("positives per label", f"min {cnt['min']}, median {cnt['median']:g}, max {cnt['max']} (mean {cnt['mean']:.1f})"))
    if N:
        rows.append(("label frequency", f"min {cnt['min'] / N:.3%}, median {cnt['median'] / N:.3%}, max {cnt['max'] / N:.3%}"))
    for name, b in report["buckets"].items():
        rng = f"counts {b['min_count']}..{b['max_count']}" if b["labels"] else "empty"
        rows.append((f"{name} labels", f"{b['labels']:,} ({rng}; {b['positives']:,} positives)"))
    rows.append(("labels with 0 positives", f"{report['labels_zero_positive']:,}"))
    few = report["labels_few_positive"]
    rows.append((f"labels with 1..{few['few']} positives", f"{few['labels']:,}"))
    if report["pos_weight"] is not None:
        pw = report["pos_weight"]
        rows.append(("pos_weight (N-pos)/pos", f"min {pw['min']:.3g}, median {pw['median']:.3g}, max {pw['max']:.3g}"))
        rows.append(("imbalance ratio", f"{report['imbalance_ratio']:.3g} (most / least frequent label with a positive)"))
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    if report["labels_zero_positive"]:
        lines.append(
            "  note: labels with no positives get pos_weight by an explicit policy (zero_positive=) "
            "and have no AUPRC; consider dropping them or using zero_positive='one'."
        )
    return "\n".join(lines)
