"""Label counts and ``pos_weight`` on the seed scenario: ours vs the ways users compute them.

Usage::

    python benchmarks/bench_stats.py [--repeats 5]

Labels: ``synthetic_preset("seed").labels``, CSR 80,000 x 7,900, ~10.6M nonzeros.
Compared, each producing per-label positive counts (and from them ``(N - pos) / pos``):

* ``xmlc.stats.label_counts`` / ``pos_weight`` (O(nnz) time, O(L) extra memory);
* scipy column sum ``np.asarray(Y.sum(axis=0)).ravel()``;
* the tutorial way ``Y.toarray().sum(0)`` (numpy) and ``torch.from_numpy(Y.toarray()).sum(0)``.

Timings are interleaved (one round = every method once, order rotated per round) because
the machine is shared; ratios are medians of the per-round ratios to the scipy column
sum. Peak extra memory is the ``tracemalloc`` peak during one call (numpy and scipy
allocations are traced; the dense torch row counts the numpy ``toarray`` it sums).
Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np
import torch

from xmlc.data import synthetic_preset
from xmlc.stats import label_counts, pos_weight


def scipy_column_sum(Y):
    return np.asarray(Y.sum(axis=0)).ravel()


def dense_numpy(Y):
    return Y.toarray().sum(0)


def dense_torch(Y):
    return torch.from_numpy(Y.toarray()).sum(0)


def scipy_pos_weight(Y):
    pos = scipy_column_sum(Y)
    return torch.from_numpy(((Y.shape[0] - pos) / pos).astype(np.float32))


METHODS = {
    "xmlc label_counts": label_counts,
    "xmlc pos_weight": pos_weight,
    "scipy Y.sum(axis=0)": scipy_column_sum,
    "scipy column sum -> pos_weight": scipy_pos_weight,
    "dense numpy Y.toarray().sum(0)": dense_numpy,
    "dense torch from_numpy(Y.toarray()).sum(0)": dense_torch,
}
BASELINE = "scipy Y.sum(axis=0)"


def peak_extra_bytes(fn, Y) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn(Y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    Y = synthetic_preset("seed").labels
    N, L = Y.shape
    expected = scipy_column_sum(Y)
    for name, fn in METHODS.items():
        out = fn(Y)
        if "pos_weight" not in name:
            assert np.array_equal(np.asarray(out).astype(np.int64), expected.astype(np.int64)), name
    times = {name: [] for name in METHODS}
    names = list(METHODS)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            METHODS[name](Y)
            times[name].append(time.perf_counter() - t0)
    memory = {name: peak_extra_bytes(fn, Y) for name, fn in METHODS.items()}
    print(f"Labels: CSR {N:,} x {L:,}, {Y.nnz:,} nonzeros ({Y.data.nbytes + Y.indices.nbytes + Y.indptr.nbytes:,} bytes); {args.repeats} interleaved rounds.\n")
    print("| method | median time (ms) | time / scipy column sum (median of rounds) | peak extra memory |")
    print("|---|---|---|---|")
    for name in names:
        ratios = [a / b for a, b in zip(times[name], times[BASELINE])]
        print(
            f"| {name} | {1000 * statistics.median(times[name]):.1f} | {statistics.median(ratios):.2f} | {human(memory[name])} |"
        )


if __name__ == "__main__":
    main()
