"""Shared test helpers."""

from pathlib import Path

from xmlc import data as xdata


def write_xmc_splits(root: Path, sizes: tuple[int, int, int], *, num_features: int, num_labels: int = 12,
                     seed: int = 0) -> dict[str, Path]:
    """Tiny synthetic train / val / test files in the XMC format (``sizes`` rows each) under ``root``.

    Returns ``{"train": path, "val": path, "test": path}``.
    """
    full = xdata.synthetic(sum(sizes), num_features, num_labels, mean_labels=2.0, seed=seed)
    paths, start = {}, 0
    for name, size in zip(("train", "val", "test"), sizes):
        paths[name] = root / f"{name}.txt"
        xdata.write_xmc(paths[name], full.features[start:start + size], full.labels[start:start + size])
        start += size
    return paths
