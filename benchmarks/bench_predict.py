"""``python -m xmlc.predict --text`` on one string against a large text model: the checkpoint
read into memory and copied into the model (before) against mapped and assigned (now).

    python benchmarks/bench_predict.py --features 152000 --labels 593 --rounds 5

Makes a raw-text corpus (seeded; ``--rows`` documents of 60 words drawn from a Zipf-like
vocabulary, 1-4 of ``--labels`` tags each), trains ``configs/text.yaml`` on it for one epoch with
``features.min_df=1 features.max_features=--features`` (so D is the asked size: the held-out
raw-text set of issue 21 has 152,000 tf-idf features and 593 tags), then times the one-string
predict in fresh processes, the two ways alternating: wall time of the whole command (interpreter
start, ``import torch``, checksums, loading, featurising, scoring) and its peak RSS. "Before" is
the same command with ``xmlc.run``'s load patched to read the file in (``mmap=False``) and copy
the weights into the model (``assign=False``), as ``predict`` did before. Prints one Markdown
table; the ratio is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SNIPPET = r"""
import resource, sys
import xmlc.run as run
if sys.argv[1] == "before":
    load_checkpoint, load_weights = run.load_checkpoint, run.load_weights
    run.load_checkpoint = lambda path, map_location="cpu", mmap=False: load_checkpoint(path, map_location)
    run.load_weights = lambda model, weights, source="", assign=False: load_weights(model, weights, source=source)
from xmlc import predict
sys.argv = ["xmlc.predict", "--checkpoint", sys.argv[2], "--text", "w1 w5 w77 w300 w12 hello there"]
predict.main()
print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)
"""


def make_corpus(path: Path, rows: int, labels: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    vocab = 100_000
    p = 1.0 / np.arange(1, vocab + 1) ** 0.7
    p /= p.sum()
    words = rng.choice(vocab, size=(rows, 60), p=p)
    with gzip.open(path, "wt") as f:
        for r in range(rows):
            tags = rng.choice(labels, size=rng.integers(1, 5), replace=False)
            f.write(" ".join(f"w{w}" for w in words[r]) + "\t" + ",".join(f"t{t}" for t in tags) + "\n")


def one(mode: str, run_dir: Path, env: dict) -> tuple[float, float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", SNIPPET, mode, str(run_dir)], capture_output=True, text=True,
                          env=env, check=True)
    wall = time.perf_counter() - start
    peak = float(done.stderr.split("PEAK_MB")[-1].split()[0])
    return wall, peak, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=152_000)
    parser.add_argument("--labels", type=int, default=593)
    parser.add_argument("--rows", type=int, default=22_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="xmlc-bench-predict-") as tmp:
        tmp = Path(tmp)
        make_corpus(tmp / "train.tsv.gz", args.rows, args.labels)
        subprocess.run([sys.executable, "-m", "xmlc.train", "--config", str(ROOT / "configs" / "text.yaml"),
                        f"data.train={tmp / 'train.tsv.gz'}", "data.text_column=0", "data.labels_column=1",
                        "train.epochs=1", "features.min_df=1", f"features.max_features={args.features}",
                        f"output.dir={tmp / 'run'}", "output.tensorboard=false", "output.figures=false"],
                       env=env, check=True, capture_output=True)
        metrics = json.loads((tmp / "run" / "metrics.json").read_text())
        size_mb = (tmp / "run" / "best.pt").stat().st_size / 2**20
        times: dict[str, list] = {"before": [], "now": []}
        outputs = set()
        for r in range(args.rounds):
            for mode in (("before", "now") if r % 2 == 0 else ("now", "before")):
                wall, peak, out = one(mode, tmp / "run", env)
                times[mode].append((wall, peak))
                outputs.add(out)
    ratios = [n[0] / b[0] for b, n in zip(times["before"], times["now"])]
    print(f"one-string `python -m xmlc.predict --text` on a wide & deep run of D = {metrics['num_features']:,}, "
          f"L = {metrics['num_labels']:,} (best.pt {size_mb:,.0f} MB); {args.threads} threads, {args.rounds} rounds; "
          f"{'the same output every time' if len(outputs) == 1 else 'OUTPUTS DIFFER'}\n")
    print("| load | wall s (median) | peak RSS MB (median) | now / before (median, range) |")
    print("|---|---:|---:|---:|")
    for mode, label in (("before", "read in, copied into the model (before)"), ("now", "mapped, assigned (now)")):
        walls, peaks = zip(*times[mode])
        ratio = (f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})" if mode == "now" else "")
        print(f"| {label} | {statistics.median(walls):.2f} | {statistics.median(peaks):,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
