"""Before/after of the host (numpy) metric path: xmlc at a git revision against the working tree.

Each side runs in its own process (``git archive REV xmlc benchmarks`` into a temporary
directory for "before", this checkout for "after"), on the same data (``bench_metrics.make_data``:
a weak model's float32 scores, power-law label frequencies) as CPU tensors with CSR labels, torch
at 1 thread; rounds alternate the order. Prints one Markdown table: median seconds per call, the
median (and range) of the per-round ratios before / after (> 1: the working tree is faster), and
whether both sides returned the same value.

    python benchmarks/compare_host_metrics.py --rev c8fffb7 [--rounds 7 --n 20000 --labels 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys, time
import scipy.sparse as sp
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1] + "/benchmarks")
from bench_metrics import make_data
from xmlc.eval.calibrate import fit_thresholds
from xmlc.eval.metrics import average_precision
from xmlc.eval.summary import evaluate_all
s, y = make_data(int(sys.argv[2]), int(sys.argv[3]))
scores, labels = torch.from_numpy(s), sp.csr_matrix(y)
calls = {"macro AP": lambda: average_precision(scores, labels),
         "micro AP": lambda: average_precision(scores, labels, average="micro"),
         "evaluate_all": lambda: sum(evaluate_all(scores, labels).values()),
         "fit_thresholds f1": lambda: float(fit_thresholds(scores, labels).double().sum())}
out = {}
for name, fn in calls.items():
    start = time.perf_counter()
    value = fn()
    out[name] = (time.perf_counter() - start, float(value))
print(json.dumps(out))
'''


def run_side(root: str, n: int, labels: int) -> dict:
    env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, root, str(n), str(labels)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", required=True, help="git revision of the 'before' code")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--labels", type=int, default=4_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.rev, "xmlc", "benchmarks"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        roots = {"before": tmp, "after": str(ROOT)}
        results = {side: [] for side in roots}
        for r in range(args.rounds):
            for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
                results[side].append(run_side(roots[side], args.n, args.labels))
    print(f"| call ({args.n:,} x {args.labels:,}) | {args.rev} (s) | working tree (s) | before / after "
          f"(median, range of {args.rounds} rounds) | same value |")
    print("|---|---:|---:|---:|---|")
    for call in results["after"][0]:
        before = [r[call][0] for r in results["before"]]
        after = [r[call][0] for r in results["after"]]
        ratios = [b / a for b, a in zip(before, after)]
        same = all(b[call][1] == a[call][1] for b, a in zip(results["before"], results["after"]))
        print(f"| {call} | {statistics.median(before):.3f} | {statistics.median(after):.3f} | "
              f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | {same} |")


if __name__ == "__main__":
    main()
