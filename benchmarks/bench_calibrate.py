"""Benchmark: per-label F1-optimal thresholds, xmlc.eval.calibrate vs a scikit-learn loop.

    python benchmarks/bench_calibrate.py --n 20000 --labels 4000 --repeats 2

Same data as bench_metrics.py. Baseline: for every label, ``precision_recall_curve`` and the
argmax of F1 (what a user would otherwise write). Times are medians over interleaved pairs;
the speed-up is the median of per-pair ratios. Prints one Markdown table.

    python benchmarks/bench_calibrate.py --count --n 7200 --labels 7900 --repeats 2

``--count`` instead times the recipes' ``f1_count`` (its default bounds: per bucket, total, per label)
against the same method with the earlier bounds (per label 0.95-1.3x and the total, no bound per
bucket), interleaved, with each one's micro F1 and positive-rate ratio on the fitted data.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench_metrics import make_data, timed  # noqa: E402
from xmlc.eval.calibrate import fit_thresholds  # noqa: E402
from xmlc.eval.metrics import f1_score, positive_rate_ratio  # noqa: E402


def sklearn_loop(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    from sklearn.metrics import precision_recall_curve
    out = np.full(s.shape[1], 0.5, dtype=np.float32)
    for j in range(s.shape[1]):
        if not y[:, j].any():
            continue
        p, r, t = precision_recall_curve(y[:, j], s[:, j])
        f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0)[:-1]
        out[j] = t[np.argmax(f)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--labels", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--count", action="store_true", help="time f1_count's bounds now against the earlier ones")
    args = ap.parse_args()
    torch.set_num_threads(1)
    s, y = make_data(args.n, args.labels)
    print(f"N={args.n} L={args.labels} positives={y.mean():.4f}")
    if args.count:
        return count_bounds(s, y, args.repeats)
    to, tb, ratios, mo, mb = [], [], [], 0, 0
    for _ in range(args.repeats):
        d1, m1, ours = timed(lambda: fit_thresholds(torch.from_numpy(s), y, method="f1", min_positives=1))
        d2, m2, base = timed(lambda: sklearn_loop(s, y))
        to.append(d1), tb.append(d2), ratios.append(d2 / d1)
        mo, mb = max(mo, m1), max(mb, m2)
    f_ours = f1_score(s, y, ours, average="macro")
    f_base = f1_score(s, y, base, average="macro")
    print()
    print("| method | time s | peak extra MiB | macro F1 at fitted thresholds |")
    print("|---|---:|---:|---:|")
    print(f"| xmlc fit_thresholds(method='f1') | {np.median(to):.3f} | {mo / 2**20:.0f} | {f_ours:.6f} |")
    print(f"| sklearn precision_recall_curve loop | {np.median(tb):.3f} | {mb / 2**20:.0f} | {f_base:.6f} |")
    print(f"\nspeed-up (median of {args.repeats} interleaved pairs): {np.median(ratios):.1f}x")


def count_bounds(s: np.ndarray, y: np.ndarray, repeats: int) -> None:
    policies = {"f1_count (default bounds)": {},
                "f1_count, earlier bounds (label 0.95-1.3x, total 1.08x)": {"band": (0.95, 1.3), "bucket_band": None}}
    times, peaks, fitted = {k: [] for k in policies}, dict.fromkeys(policies, 0), {}
    for _ in range(repeats):
        for name, kw in policies.items():
            d, m, fitted[name] = timed(lambda: fit_thresholds(s, y, method="f1_count", min_positives=20, **kw))
            times[name].append(d)
            peaks[name] = max(peaks[name], m)
    print("\n| method | time s | peak extra MiB | micro F1 | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name in policies:
        print(f"| {name} | {np.median(times[name]):.3f} | {peaks[name] / 2**20:.0f} | "
              f"{f1_score(s, y, fitted[name]):.4f} | {positive_rate_ratio(s, y, fitted[name]):.3f} |")
    a, b = (np.array(v) for v in times.values())
    print(f"\ntime ratio default / earlier (median of {repeats} interleaved pairs): {np.median(a / b):.2f}x")


if __name__ == "__main__":
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536":  # see bench_metrics.py: honest RSS peaks
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    main()
