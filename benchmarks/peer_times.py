"""Train time of the peers on bibtex and delicious, to put beside the text recipe's wall time.

The recipe's own wall time comes from ``benchmarks/real_data_speed.py`` (process start to exit:
data, 30 epochs with validation, test). This script times what a user would otherwise
run on the same files, each on row-L2-normalised features (as the recipe and
``../shared/data/README.md`` use them), training only (data already in memory):

* **omikuji** (Parabel, its default hyperparameters; ``pip install omikuji``), ``--threads`` threads;
* **one-vs-rest logistic regression** (scikit-learn, liblinear, C=1), one process.

Prints one Markdown table: train time (median of ``--repeats`` runs) and test P@1 (and macro
AUPRC for the linear model, which scores every label).

    python benchmarks/peer_times.py [--datasets bibtex,delicious --threads 2 --repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # xmlc from this checkout
from xmlc import data as xdata  # noqa: E402
from xmlc.eval import metrics  # noqa: E402

DATA_DIR = ROOT.parent / "shared" / "data"
if not DATA_DIR.is_dir():
    DATA_DIR = Path("/work/shared/data")


def load(dataset: str):
    train, test = (xdata.read_xmc(DATA_DIR / f"{dataset}_{split}.txt.gz") for split in ("train", "test"))
    return ((xdata.normalize_rows(d.features), d.labels) for d in (train, test))


@contextlib.contextmanager
def _stdout_to_devnull():
    """omikuji's Rust logger writes INFO lines to file descriptor 1; keep them out of the table."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def time_omikuji(Xtr, Ytr, Xte, Yte, threads: int) -> tuple[float, float, str]:
    try:
        import omikuji
    except ImportError as exc:
        return float("nan"), float("nan"), f"not importable ({exc})"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        xdata.write_xmc(path, Xtr, Ytr)   # omikuji reads the same XMC text format
        with _stdout_to_devnull():
            start = time.perf_counter()
            model = omikuji.Model.train_on_data(str(path), omikuji.Model.default_hyper_param(), n_threads=threads)
            seconds = time.perf_counter() - start
    top = np.array([model.predict(list(zip(Xte[i].indices.tolist(), Xte[i].data.tolist())), top_k=1)[0][0]
                    if Xte[i].nnz else 0 for i in range(Xte.shape[0])])   # omikuji predicts one row at a time
    scores = np.zeros(Yte.shape, dtype=np.float32)
    scores[np.arange(len(top)), top] = 1.0                                  # its top label ranked first
    return seconds, metrics.precision_at_k(scores, Yte, 1), ""


def time_ovr_lr(Xtr, Ytr, Xte, Yte) -> tuple[float, float, float]:
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    keep = np.flatnonzero(np.asarray(Ytr.sum(axis=0)).ravel() > 0)   # liblinear needs both classes
    start = time.perf_counter()
    clf = OneVsRestClassifier(LogisticRegression(C=1.0, solver="liblinear")).fit(Xtr, Ytr[:, keep].toarray())
    seconds = time.perf_counter() - start
    scores = np.zeros((Xte.shape[0], Ytr.shape[1]), dtype=np.float32)
    scores[:, keep] = clf.predict_proba(Xte)
    auprc = metrics.average_precision(torch.from_numpy(scores), Yte, average="macro")
    return seconds, metrics.precision_at_k(scores, Yte, 1), float(auprc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="bibtex,delicious")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| data | system | train s (median) | P@1 | macro AUPRC |")
    print("|---|---|---:|---:|---:|")
    for dataset in args.datasets.split(","):
        (Xtr, Ytr), (Xte, Yte) = load(dataset)
        runs = [time_omikuji(Xtr, Ytr, Xte, Yte, args.threads) for _ in range(args.repeats)]
        note = runs[0][2]
        print(f"| {dataset} | omikuji (Parabel defaults, {args.threads} threads) {note} | "
              f"{statistics.median(r[0] for r in runs):.1f} | {100 * runs[0][1]:.2f} | |")
        runs = [time_ovr_lr(Xtr, Ytr, Xte, Yte) for _ in range(args.repeats)]
        print(f"| {dataset} | one-vs-rest LR (liblinear, C=1) | {statistics.median(r[0] for r in runs):.1f} | "
              f"{100 * runs[0][1]:.2f} | {runs[0][2]:.3f} |")


if __name__ == "__main__":
    main()
