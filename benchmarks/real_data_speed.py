"""Wall time and quality of the text recipe from two checkouts, run in interleaved pairs.

For each dataset and seed, runs ``python -m xmlc.train --config configs/text.yaml`` (each
checkout's own recipe file) from the ``--before`` checkout, then from the ``--after`` one, one
fresh process each, and prints one Markdown table: wall time of each run (process start to
exit: data, training, every validation, refit, test), the ratio after / before per pair (the
machine is shared, so only the paired ratios mean much), and test P@1 / macro AUPRC of both.

    python benchmarks/real_data_speed.py --before ../s-before --after . \\
        [--datasets bibtex,delicious --seeds 0 --threads 2]
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
sys.path.insert(0, str(ROOT))   # xmlc from this checkout
from xmlc._json import loads_with_nan  # noqa: E402  (metrics.json writes undefined metrics as null)
DATA_DIR = ROOT.parent / "shared" / "data"
if not DATA_DIR.is_dir():
    DATA_DIR = Path("/work/shared/data")


def run(tree: Path, dataset: str, seed: int, out: Path, threads: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "xmlc.train", "--config", str(tree / "configs" / "text.yaml"),
           f"data.train={DATA_DIR / f'{dataset}_train.txt.gz'}", f"data.test={DATA_DIR / f'{dataset}_test.txt.gz'}",
           f"train.seed={seed}", "train.progress=false", "output.tensorboard=false", f"output.dir={out}", *extra]
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (out / "stdout.txt").write_text(proc.stdout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    metrics = loads_with_nan((out / "metrics.json").read_text())
    return {"wall": wall, "p@1": 100 * metrics["test"]["p@1"], "auprc": metrics["test"]["auprc_macro"],
            "epoch": metrics.get("epoch_time_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, type=Path)
    parser.add_argument("--after", default=ROOT, type=Path)
    parser.add_argument("--datasets", default="bibtex,delicious")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for both")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.out or tmp
        for dataset in args.datasets.split(","):
            for seed in map(int, args.seeds.split(",")):
                pair = {name: run(tree.resolve(), dataset, seed, Path(tmp) / f"{dataset}-{seed}-{name}",
                                  args.threads, args.overrides)
                        for name, tree in (("before", args.before), ("after", args.after))}
                rows.append((dataset, seed, pair))
                print(f"{dataset} seed {seed}: {json.dumps(pair)}", file=sys.stderr, flush=True)
    print("| data | seed | wall before (s) | wall after (s) | after / before | P@1 before / after | "
          "macro AUPRC before / after |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for dataset, seed, p in rows:
        b, a = p["before"], p["after"]
        print(f"| {dataset} | {seed} | {b['wall']:.0f} | {a['wall']:.0f} | {a['wall'] / b['wall']:.2f} | "
              f"{b['p@1']:.2f} / {a['p@1']:.2f} | {b['auprc']:.3f} / {a['auprc']:.3f} |")
    for dataset in args.datasets.split(","):
        ratios = [p["after"]["wall"] / p["before"]["wall"] for d, _, p in rows if d == dataset]
        print(f"\n{dataset}: median after/before wall ratio {statistics.median(ratios):.2f} over {len(ratios)} pair(s)")


if __name__ == "__main__":
    main()
