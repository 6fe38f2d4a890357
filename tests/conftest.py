"""Shared test helpers."""

from pathlib import Path

import scipy.sparse as sp

from xmlc.data.synthetic import synthetic
from xmlc.data.xmc import write_xmc


def small_data(seed=0, n=300, d=50, l=40):
    """A small synthetic data set (``n`` rows, ``d`` features, ``l`` labels, ~3 labels per row)."""
    return synthetic(n, d, l, 3.0, seed=seed, max_freq=0.3)


def same(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    """Equal shape, dtype and entries."""
    return a.shape == b.shape and (a != b).nnz == 0 and a.dtype == b.dtype


def write_xmc_splits(root: Path, sizes: tuple[int, int, int], *, num_features: int, num_labels: int = 12,
                     seed: int = 0) -> dict[str, Path]:
    """Tiny synthetic train / val / test files in the XMC format (``sizes`` rows each) under ``root``.

    Returns ``{"train": path, "val": path, "test": path}``.
    """
    full = synthetic(sum(sizes), num_features, num_labels, mean_labels=2.0, seed=seed)
    paths, start = {}, 0
    for name, size in zip(("train", "val", "test"), sizes):
        paths[name] = root / f"{name}.txt"
        write_xmc(paths[name], full.features[start:start + size], full.labels[start:start + size])
        start += size
    return paths
