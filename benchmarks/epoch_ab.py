"""The text recipe's training time at a git revision against the working tree, in interleaved pairs.

    python benchmarks/epoch_ab.py --rev 539709e --datasets yahoo_arts,rcv1sub2 --pairs 5

Each run is ``python -m xmlc.train --config configs/text.yaml`` on a dataset of
``text_recipe.DATASETS`` (no TensorBoard, no figures) in its own process, 2 threads, with the
library of REV (``git archive`` into a temporary folder, first on ``PYTHONPATH``) or of the
working tree; the pair's order alternates. Compared: ``train_time_s`` of ``metrics.json`` (the
epochs' training, validation excluded) and the run's wall time; the ratio is the median of the
per-pair ratios (< 1: the working tree is faster). The test metrics of both are printed too, so
a change meant to be exact shows that it is. Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from text_recipe import DATASETS  # noqa: E402


def checkout(rev: str, into: Path) -> Path:
    """The tree at ``rev`` (its ``xmlc`` package and configs) under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "xmlc", "configs"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def one_run(tree: Path, dataset: str, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        env = os.environ | {"PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "xmlc.train", "--config", str(tree / "configs" / "text.yaml"), *DATASETS[dataset],
               "output.tensorboard=false", "output.figures=false", f"output.dir={out}/run"]
        start = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=out, check=True, capture_output=True)
        wall = time.perf_counter() - start
        m = json.loads((Path(out) / "run" / "metrics.json").read_text())
    return {"train_s": m["train_time_s"], "wall_s": wall, "p@1": m["test_calibrated"]["p@1"],
            "auprc_macro": m["test_calibrated"]["auprc_macro"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", required=True, help="the git revision to compare the working tree with")
    parser.add_argument("--datasets", default="yahoo_arts,rcv1sub2")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = ["| data | pairs | train s before | train s now | train now / before (median, range) | wall now / before "
            "| P@1 before / now | macro AUPRC before / now |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": checkout(args.rev, Path(tmp)), "now": ROOT}
        for dataset in args.datasets.split(","):
            runs = {"before": [], "now": []}
            for i in range(args.pairs):
                for side in (("before", "now") if i % 2 == 0 else ("now", "before")):
                    runs[side].append(one_run(trees[side], dataset, args.threads))
                    print(f"{dataset} {side} {i + 1}: {runs[side][-1]}", file=sys.stderr, flush=True)
            b, n = runs["before"], runs["now"]
            train = [y["train_s"] / x["train_s"] for x, y in zip(b, n)]
            wall = [y["wall_s"] / x["wall_s"] for x, y in zip(b, n)]
            rows.append(f"| {dataset} | {args.pairs} | {statistics.median(x['train_s'] for x in b):.2f} "
                        f"| {statistics.median(x['train_s'] for x in n):.2f} | {statistics.median(train):.3f} "
                        f"({min(train):.3f}-{max(train):.3f}) | {statistics.median(wall):.3f} "
                        f"| {100 * b[0]['p@1']:.2f} / {100 * n[0]['p@1']:.2f} "
                        f"| {b[0]['auprc_macro']:.4f} / {n[0]['auprc_macro']:.4f} |")
    print(f"before: {args.rev}; now: the working tree; {args.threads} threads\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
