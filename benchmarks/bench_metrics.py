"""Benchmark: exact and binned AUPRC at thousands of labels, xmlc vs torchmetrics vs scikit-learn,
and the fast AP kernel (``xmlc.kernels.ap.ap_per_label``) vs its plain per-label reference.

    python benchmarks/bench_metrics.py --n 20000 --labels 4000 --repeats 3

Data: power-law label frequencies (p_j proportional to (j + 1)^-0.7, mean 1.5 % positives),
scores = sigmoid(-4 + 3 y + 1.5 eps) in float32, i.e. a weak model. Times are medians over
interleaved (ours, baseline) pairs in one process; the speed-up column is the median of the
per-pair ratios. Peak extra memory is the largest RSS above the RSS at call start, sampled every
2 ms by a thread; the script re-executes itself with MALLOC_MMAP_THRESHOLD_=65536 and calls
malloc_trim before each call so that freed buffers go back to the OS and are not silently
reused (which would hide a call's allocations from RSS). Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from xmlc.eval.inputs import eval_inputs  # noqa: E402
from xmlc.eval.metrics import average_precision  # noqa: E402
from xmlc.eval.streaming import BinnedAveragePrecision  # noqa: E402  (needs torchmetrics)
from xmlc.kernels.ap import ap_per_label, ap_per_label_reference  # noqa: E402


def make_data(n: int, l: int, seed: int = 0, mean_rate: float = 0.015):
    rng = np.random.default_rng(seed)
    p = (np.arange(l) + 1.0) ** -0.7
    p = np.minimum(p * mean_rate / p.mean(), 0.5)
    y = (rng.random((n, l), dtype=np.float32) < p.astype(np.float32)).astype(np.float32)
    z = rng.standard_normal((n, l), dtype=np.float32)
    z *= 1.5
    z += 3.0 * y - 4.0
    s = torch.sigmoid(torch.from_numpy(z)).numpy()
    del z
    return s, y


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(fn):
    """(seconds, peak extra bytes, result) of one call."""
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    peak, start, stop = [0], _rss(), threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss() - start)
            time.sleep(0.002)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    stop.set()
    th.join()
    return dt, max(peak[0], _rss() - start), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--labels", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved pairs per baseline")
    ap.add_argument("--binned-labels", type=int, default=100,
                    help="L for torchmetrics thresholds=100 (too slow at full L); its time is scaled by L")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--cases", default="macro,micro,sklearn,reference,binned",
                    help="comma list of: macro, micro, sklearn, reference, binned")
    args = ap.parse_args()
    cases = set(args.cases.split(","))
    # one thread by default: xmlc's exact path is single-threaded numpy (--threads gives torch more)
    torch.set_num_threads(args.threads)
    from torchmetrics.functional.classification import multilabel_average_precision as tm_ap
    from sklearn.metrics import average_precision_score

    s_np, y_np = make_data(args.n, args.labels)
    s, y = torch.from_numpy(s_np), torch.from_numpy(y_np)
    yi = y.long()
    n, l = s.shape
    mat_mb = s.numel() * 4 / 2**20
    print(f"N={n} L={l} positives={y_np.mean():.4f} score matrix {mat_mb:.0f} MiB, torch threads {torch.get_num_threads()}")

    rows = []

    def pair(name_ours, f_ours, name_base, f_base, repeats, scale=1.0):
        to, tb, ratios, mo, mb, vo, vb = [], [], [], 0, 0, None, None
        for _ in range(repeats):
            d1, m1, vo = timed(f_ours)
            d2, m2, vb = timed(f_base)
            to.append(d1)
            tb.append(d2 * scale)
            ratios.append(d2 * scale / d1)
            mo, mb = max(mo, m1), max(mb, m2)
        rows.append((name_ours, np.median(to), mo, name_base, np.median(tb), mb, np.median(ratios), vo, vb))
        print(rows[-1], flush=True)

    def ours(avg):
        return lambda: float(average_precision(s, y, average=avg))

    if "macro" in cases:
        pair("xmlc exact macro", ours("macro"), "torchmetrics exact macro",
             lambda: float(tm_ap(s, yi, num_labels=l, average="macro", thresholds=None)), args.repeats)
    if "micro" in cases:
        pair("xmlc exact micro", ours("micro"), "torchmetrics exact micro",
             lambda: float(tm_ap(s, yi, num_labels=l, average="micro", thresholds=None)), args.repeats)
    if "sklearn" in cases:
        pair("xmlc exact macro", ours("macro"), "sklearn macro",
             lambda: float(average_precision_score(y_np, s_np, average="macro")), 1)
        pair("xmlc exact micro", ours("micro"), "sklearn micro",
             lambda: float(average_precision_score(y_np, s_np, average="micro")), 1)

    if "reference" in cases:  # the kernel alone, both sides on the same validated inputs
        inputs = eval_inputs(s_np, y_np)
        for pooled, avg in ((False, "macro"), (True, "micro")):
            got = {}

            def run(fn, key, pooled=pooled):
                def f():
                    got[key] = fn(inputs.scores, inputs.rows, inputs.cols, pooled=pooled)
                    return float(np.nanmean(got[key]))
                return f

            pair(f"xmlc.kernels.ap fast, {avg}", run(ap_per_label, "fast"), "", run(ap_per_label_reference, "plain"), 1)
            diff = np.nanmax(np.abs(got["fast"] - got["plain"]))
            rows[-1] = (*rows[-1][:3], f"plain per-label reference, {avg} (max abs diff {diff:.1e})", *rows[-1][4:])

    def binned(num_bins):
        def f():
            m = BinnedAveragePrecision(num_labels=l, num_bins=num_bins)
            for r0 in range(0, n, 1000):
                m.update(s[r0:r0 + 1000], y[r0:r0 + 1000])
            return float(m.compute())
        return f

    lb = min(args.binned_labels, l)
    if "binned" not in cases:
        lb = 0
    sb, yb = s[:, :lb].contiguous(), yi[:, :lb].contiguous()
    if lb:
        pair("xmlc binned T=100 macro", binned(100), f"torchmetrics thresholds=100 macro (L={lb}, time x{l / lb:g})",
             lambda: float(tm_ap(sb, yb, num_labels=lb, average="macro", thresholds=100)), 1, scale=l / lb)
    exact = float(average_precision(s, y)) if lb else None
    for t in ((100, 1000) if lb else ()):
        d, m, v = timed(binned(t))
        rows.append((f"xmlc binned T={t} macro (|diff| vs exact {abs(v - exact):.2e})", d, m, "", np.nan, 0, np.nan, v, None))

    print()
    print("| ours | time s | peak extra MiB | baseline | time s | peak extra MiB | speed-up |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for r in rows:
        base = f"{r[4]:.2f} | {r[5] / 2**20:.0f}" if r[3] else " | "
        sp = f"{r[6]:.1f}x" if r[3] else ""
        print(f"| {r[0]} | {r[1]:.3f} | {r[2] / 2**20:.0f} | {r[3]} | {base} | {sp} |")
    print(f"\nscore matrix: {mat_mb:.0f} MiB")


if __name__ == "__main__":
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536":
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    main()
