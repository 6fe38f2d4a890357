"""``xmlc.data.xmc.read_xmc`` against scikit-learn's Cython svmlight parser: read time and errors.

Usage::

    python benchmarks/bench_data.py [--pairs 11] [--mb 100]

Files: the real training files ``/work/shared/data/{bibtex,delicious,rcv1sub2}_train.txt.gz``
and a generated ``--mb`` MB uncompressed file (rows of the seed synthetic scenario; 0: none).
Both sides read the same file from disk, decompression included, and end with the same
container: scikit-learn's ``load_svmlight_file(multilabel=True)`` does not accept the XMC header
line ``N D L``, so its side reads that line first (for ``D`` and ``L``), hands it the rest of the
stream, and turns its label tuples into the CSR label matrix ``(N, L)`` that ``read_xmc``
returns. Timings are taken in interleaved pairs (order alternating), because the machine is
shared and has slow spells; the table reports the median of the per-pair ratios.

A second table shows what each parser says about malformed lines.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import os
import statistics
import tempfile
import time

import numpy as np
import scipy.sparse as sp
from sklearn.datasets import load_svmlight_file

from xmlc.data.container import XMCData
from xmlc.data.synthetic import synthetic_preset
from xmlc.data.xmc import read_xmc, write_xmc

SHARED = "/work/shared/data"
REAL = ("bibtex_train.txt.gz", "delicious_train.txt.gz", "rcv1sub2_train.txt.gz")

# Malformed lines (a two-line file each: a good line, then the bad one) and what is wrong.
BAD_LINES = [
    ("non-numeric value", b"1 3:1\n3 0:1.25 1:abc\n"),
    ("pair without ':'", b"1 3:1\n3 0:1.25 7\n"),
    ("duplicate feature index", b"1 3:1\n2 3:1 3:2\n"),
    ("non-numeric label", b"1 3:1\n0,x 1:0.5\n"),
    ("NaN value", b"1 3:1\n0 1:nan\n"),
    ("label past L (header says 4)", b"2 6 4\n1 3:1\n9 1:0.5\n"),
]


def _open(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_sklearn(path: str) -> XMCData:
    """The file through ``load_svmlight_file``, as the ``XMCData`` ``read_xmc`` returns."""
    with _open(path) as f:
        n, d, l = (int(v) for v in f.readline().split())   # the XMC header; sklearn does not know it
        X, y = load_svmlight_file(f, multilabel=True, zero_based=True, n_features=d, dtype=np.float32)
    lengths = np.fromiter(map(len, y), dtype=np.int64, count=len(y))
    cols = np.fromiter(itertools.chain.from_iterable(y), dtype=np.float64, count=int(lengths.sum()))
    indptr = np.zeros(len(y) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    labels = sp.csr_matrix((np.ones(cols.size, np.float32), cols.astype(np.int32), indptr.astype(np.int32)),
                           shape=(len(y), l))
    labels.sort_indices()
    return XMCData(sp.csr_matrix(X), labels, d, l)


def text_megabytes(path: str) -> float:
    with _open(path) as f:
        return len(f.read()) / 1e6


def bench(path: str, pairs: int) -> dict:
    ours_data, their_data = read_xmc(path), read_sklearn(path)
    for name in ("features", "labels"):
        a, b = getattr(ours_data, name), getattr(their_data, name)
        assert a.shape == b.shape and (a != b).nnz == 0, f"parsers disagree on {name}"
    ours, theirs, ratios = [], [], []
    for r in range(pairs):
        pair = {}
        for who in (("ours", "sklearn") if r % 2 == 0 else ("sklearn", "ours")):
            t0 = time.perf_counter()
            read_xmc(path) if who == "ours" else read_sklearn(path)
            pair[who] = time.perf_counter() - t0
        ours.append(pair["ours"])
        theirs.append(pair["sklearn"])
        ratios.append(pair["ours"] / pair["sklearn"])
    mb = text_megabytes(path)
    return {"file": os.path.basename(path), "mb": mb, "rows": len(ours_data), "nnz": ours_data.features.nnz,
            "ours_s": statistics.median(ours), "sk_s": statistics.median(theirs),
            "ratio": statistics.median(ratios), "ratios": sorted(ratios)}


def error_messages(tmp: str) -> list[tuple[str, str, str]]:
    """``(what, sklearn's message, ours)`` for each malformed file in ``BAD_LINES``."""
    rows = []
    for what, text in BAD_LINES:
        path = os.path.join(tmp, "bad.txt")
        with open(path, "wb") as f:
            f.write(text)
        said = []
        for reader in (_sklearn_alone, read_xmc):
            try:
                reader(path)
                said.append("accepted")
            except ValueError as exc:
                said.append(f"{type(exc).__name__}: {exc}".replace(tmp + os.sep, ""))
        rows.append((what, *said))
    return rows


def _sklearn_alone(path: str):
    """``load_svmlight_file`` itself, the header line (if any) skipped: what it accepts and says."""
    with _open(path) as f:
        first = f.readline()
        if len(first.split()) != 3 or b":" in first:
            f.seek(0)
        return load_svmlight_file(f, multilabel=True, zero_based=True, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=11, help="interleaved timing pairs per file")
    parser.add_argument("--mb", type=float, default=100.0, help="size of the generated file in MB (0: none)")
    args = parser.parse_args()
    results = [bench(f"{SHARED}/{name}", args.pairs) for name in REAL if os.path.exists(f"{SHARED}/{name}")]
    with tempfile.TemporaryDirectory() as tmp:
        if args.mb > 0:
            seed = synthetic_preset("seed")
            path = os.path.join(tmp, "generated.txt")
            rows = 1000
            write_xmc(path, seed.features[:rows], seed.labels[:rows])
            rows = min(len(seed), int(rows * args.mb * 1e6 / os.path.getsize(path)))
            write_xmc(path, seed.features[:rows], seed.labels[:rows])
            del seed
            results.append(bench(path, max(3, args.pairs // 2 + 1)))
        errors = error_messages(tmp)
    print("| file | text MB | rows | feature nnz | xmlc read_xmc s | sklearn load_svmlight_file s "
          "| time ratio xmlc/sklearn, median of pairs | pairs (sorted ratios) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['file']} | {r['mb']:.1f} | {r['rows']:,} | {r['nnz']:,} | {r['ours_s']:.3f} | {r['sk_s']:.3f} "
              f"| {r['ratio']:.2f} | {len(r['ratios'])} ({', '.join(f'{x:.2f}' for x in r['ratios'])}) |")
    print()
    print("| malformed line 2 | sklearn load_svmlight_file says | xmlc read_xmc says |")
    print("|---|---|---|")
    for what, theirs, ours in errors:
        print(f"| {what} | {theirs} | {ours} |")


if __name__ == "__main__":
    main()
