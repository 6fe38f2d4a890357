"""Wall time and quality of the text recipe from two checkouts, run in interleaved pairs.

For each dataset and seed, runs ``python -m xmlc.train --config configs/text.yaml`` (each
checkout's own recipe file) from the ``--before`` checkout, then from the ``--after`` one, one
fresh process each, and prints one Markdown table: wall time of each run (process start to
exit: data, training, every validation, refit, test), the ratio after / before per pair (the
machine is shared, so only the paired ratios mean much), test P@1 / macro AUPRC, the calibrated
positive-rate ratio and the best epoch of both; then per dataset the means and the median ratio.
``--after-overrides`` adds settings to the after runs only (two settings of one checkout).

    python benchmarks/real_data_speed.py --before ../s-before --after . \\
        [--datasets bibtex,delicious,synthetic47k --seeds 0 --threads 2]

``synthetic47k`` stands in for the 47k-feature, 4k-document set of issue 11 (see ``SYNTHETIC``).
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


#: A stand-in for the 47k-feature set of issue 11 (4,050 training documents after the 10% validation
#: split, 47,236 tf-idf features, 101 labels; not in ../shared/data): learnable synthetic text of that shape
#: (xmlc.data.synthetic, graded topics, ~64 non-zeros and ~3.3 labels per row; a batch of 128 touches
#: ~12% of the rows, against ~7% on the real set).
SYNTHETIC = {"synthetic47k": dict(num_train=4_500, num_test=1_500, num_features=47_236, num_labels=101)}


def data_files(dataset: str, directory: Path) -> tuple[Path, Path]:
    """(train, test) XMC files of ``dataset``: from ../shared/data, or written into ``directory``."""
    if dataset not in SYNTHETIC:
        return DATA_DIR / f"{dataset}_train.txt.gz", DATA_DIR / f"{dataset}_test.txt.gz"
    from xmlc.data import synthetic, write_xmc
    shape = SYNTHETIC[dataset]
    n = shape["num_train"] + shape["num_test"]
    d = synthetic(n, shape["num_features"], shape["num_labels"], 3.2, seed=0, num_topics=20, topic_precision=0.7,
                  topic_words=40, noise_words=40)
    paths = directory / f"{dataset}_train.txt", directory / f"{dataset}_test.txt"
    for path, rows in zip(paths, (slice(0, shape["num_train"]), slice(shape["num_train"], n))):
        if not path.is_file():
            write_xmc(path, d.features[rows], d.labels[rows])
    return paths


def run(tree: Path, files: tuple[Path, Path], seed: int, out: Path, threads: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "xmlc.train", "--config", str(tree / "configs" / "text.yaml"),
           f"data.train={files[0]}", f"data.test={files[1]}",
           f"train.seed={seed}", "output.tensorboard=false", f"output.dir={out}", "output.overwrite=true", *extra]
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (out / "stdout.txt").write_text(proc.stdout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    metrics = loads_with_nan((out / "metrics.json").read_text())
    calibrated = metrics["test_calibrated"]
    return {"wall": wall, "p@1": 100 * metrics["test"]["p@1"], "auprc": metrics["test"]["auprc_macro"],
            "ratio": calibrated["positive_rate_ratio"], "f1_macro": calibrated["f1_macro"],
            "epoch": metrics.get("epoch_time_s"), "best_epoch": metrics.get("best_epoch"),
            "selected_epoch": metrics.get("selected_epoch", metrics.get("best_epoch")),
            "epochs": metrics.get("epochs")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, type=Path)
    parser.add_argument("--after", default=ROOT, type=Path)
    parser.add_argument("--datasets", default="bibtex,delicious")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="keep the run directories here")
    parser.add_argument("--after-overrides", default="", help="dotted config overrides for the after runs only "
                        "(space-separated), e.g. to compare two settings of one checkout")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for both")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.out or tmp
        Path(tmp).mkdir(parents=True, exist_ok=True)
        for dataset in args.datasets.split(","):
            files = data_files(dataset, Path(tmp))
            for seed in map(int, args.seeds.split(",")):
                pair = {name: run(tree.resolve(), files, seed, Path(tmp) / f"{dataset}-{seed}-{name}",
                                  args.threads, args.overrides + extra)
                        for name, tree, extra in (("before", args.before, []),
                                                  ("after", args.after, args.after_overrides.split()))}
                rows.append((dataset, seed, pair))
                print(f"{dataset} seed {seed}: {json.dumps(pair)}", file=sys.stderr, flush=True)
    print("| data | seed | wall before (s) | wall after (s) | after / before | P@1 before / after | "
          "macro AUPRC before / after | calibrated pos. rate ratio before / after | best (shipped) epoch before / after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for dataset, seed, p in rows:
        b, a = p["before"], p["after"]
        print(f"| {dataset} | {seed} | {b['wall']:.0f} | {a['wall']:.0f} | {a['wall'] / b['wall']:.2f} | "
              f"{b['p@1']:.2f} / {a['p@1']:.2f} | {b['auprc']:.4f} / {a['auprc']:.4f} | "
              f"{b['ratio']:.2f} / {a['ratio']:.2f} | {_epochs(b)} / {_epochs(a)} |")
    for dataset in args.datasets.split(","):
        pairs = [p for d, _, p in rows if d == dataset]
        ratio = statistics.median(p["after"]["wall"] / p["before"]["wall"] for p in pairs)
        means = {side: {k: statistics.mean(p[side][k] for p in pairs) for k in ("wall", "p@1", "auprc", "ratio")}
                 for side in ("before", "after")}
        b, a = means["before"], means["after"]
        print(f"\n{dataset}, mean of {len(pairs)} seed(s), before -> after: wall {b['wall']:.0f} -> {a['wall']:.0f} s "
              f"(median after/before ratio {ratio:.2f}), P@1 {b['p@1']:.2f} -> {a['p@1']:.2f}, macro AUPRC "
              f"{b['auprc']:.4f} -> {a['auprc']:.4f}, calibrated positive-rate ratio {b['ratio']:.2f} -> {a['ratio']:.2f}")


def _epochs(run: dict) -> str:
    """The best epoch, and the shipped one in brackets where train.margin chose another."""
    best, shipped = run["best_epoch"], run["selected_epoch"]
    return f"{best}" if shipped == best else f"{best} ({shipped})"


if __name__ == "__main__":
    main()
