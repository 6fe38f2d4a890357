"""Parse speed of ``xmlc.data.read_xmc`` against scikit-learn's Cython svmlight parser.

Usage::

    python benchmarks/bench_data.py [--repeats 5] [--mb 100]

Files: ``/work/shared/data/delicious_train.txt.gz`` (real, gzipped) and a generated
``--mb`` MB uncompressed file (rows of the seed synthetic scenario). Both parsers read the
same file from disk, decompression included; sklearn gets the header line skipped and
``multilabel=True``. Timings are taken in interleaved pairs (order alternating), because
the machine is shared and has slow spells; the table reports the median of the per-pair
ratios. MB/s is uncompressed text per second. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import tempfile
import time

import numpy as np
import scipy.sparse as sp

from xmlc.data import read_xmc, synthetic_preset, write_xmc

SHARED = "/work/shared/data"


def read_sklearn(path: str, num_features: int):
    from sklearn.datasets import load_svmlight_file

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        f.readline()  # the XMC header; sklearn does not know it
        return load_svmlight_file(f, multilabel=True, zero_based=True, n_features=num_features, dtype=np.float32)


def text_megabytes(path: str) -> float:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        return len(f.read()) / 1e6


def bench(path: str, repeats: int) -> dict:
    data = read_xmc(path)
    X, y = read_sklearn(path, data.num_features)
    assert (sp.csr_matrix(X) != data.features).nnz == 0, "parsers disagree on features"
    assert sum(len(r) for r in y) == data.labels.nnz, "parsers disagree on labels"
    ours, theirs, ratios = [], [], []
    for r in range(repeats):
        pair = {}
        order = ("ours", "sklearn") if r % 2 == 0 else ("sklearn", "ours")
        for who in order:
            t0 = time.perf_counter()
            if who == "ours":
                read_xmc(path)
            else:
                read_sklearn(path, data.num_features)
            pair[who] = time.perf_counter() - t0
        ours.append(pair["ours"])
        theirs.append(pair["sklearn"])
        ratios.append(pair["ours"] / pair["sklearn"])
    mb = text_megabytes(path)
    return {
        "file": os.path.basename(path),
        "mb": mb,
        "rows": len(data),
        "ours_s": statistics.median(ours),
        "sk_s": statistics.median(theirs),
        "ours_mbs": mb / statistics.median(ours),
        "sk_mbs": mb / statistics.median(theirs),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mb", type=float, default=100.0, help="size of the generated file in MB")
    args = parser.parse_args()
    results = []
    real = f"{SHARED}/delicious_train.txt.gz"
    if os.path.exists(real):
        results.append(bench(real, args.repeats))
    with tempfile.TemporaryDirectory() as tmp:
        seed = synthetic_preset("seed")
        path = os.path.join(tmp, "generated.txt")
        rows = 1000
        write_xmc(path, seed.features[:rows], seed.labels[:rows])
        rows = min(len(seed), int(rows * args.mb * 1e6 / os.path.getsize(path)))
        write_xmc(path, seed.features[:rows], seed.labels[:rows])
        del seed
        results.append(bench(path, max(3, args.repeats // 2 + 1)))
    print("| file | text MB | rows | xmlc read_xmc s (MB/s) | sklearn load_svmlight_file s (MB/s) | time ratio xmlc/sklearn, median of pairs | pairs |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['file']} | {r['mb']:.1f} | {r['rows']:,} | {r['ours_s']:.3f} ({r['ours_mbs']:.1f}) | "
            f"{r['sk_s']:.3f} ({r['sk_mbs']:.1f}) | {r['ratio']:.2f} | "
            f"{len(r['ratios'])} ({', '.join(f'{x:.2f}' for x in r['ratios'])}) |"
        )


if __name__ == "__main__":
    main()
