"""The text recipe beside a one-vs-rest logistic regression (and omikuji) on the same features, in one run.

Data sets: GoEmotions (raw Reddit text: train / dev / test ``.tsv.gz``, featurised by xmlc's
``features`` defaults), rcv1sub2 and yahoo_arts (tf-idf, 10^4-10^5 features), bibtex and
delicious (few features); the XMC files carve validation by ``data.val_fraction``.

Systems, each in its own fresh spawned process (its peak RSS is its own), with
``OMP_NUM_THREADS`` = ``--threads``:

* **xmlc**: ``configs/text.yaml`` (plus ``--xmlc-overrides``) through ``xmlc.train.run``, as
  ``python -m xmlc.train --config configs/text.yaml data.train=... data.test=...`` runs it;
  time = the whole run (reading, featurising, training, validation, test scoring);
  checkpoint = the size of ``best.pt`` (weights, thresholds, featuriser).
* **LR**: scikit-learn ``OneVsRestClassifier(LogisticRegression(solver="liblinear", C=1))`` on
  the very matrices xmlc trains on (``xmlc.data.load_splits`` with the same config and seed):
  fit on train, per-label F1 thresholds on validation (the same ``xmlc.eval.calibrate`` call
  and ``eval.min_positives``), refit on train + validation (the recipe trains on those rows
  too); time = reading + featurising + both fits + the thresholds; checkpoint = its
  coefficients, D x L float32.
* **omikuji** (Parabel, default hyperparameters, ``--threads`` threads; ``pip install omikuji``)
  on train + validation; ranking metrics only (scores of the labels it returns, 0 elsewhere).

Per data set the systems run in interleaved rounds (``--repeats``, order alternating); the time
ratio is the median of the per-round ratios xmlc / LR. Metrics on the test split with
``xmlc.eval`` (macro AUPRC over labels with a test positive; F1 and predicted / true positives
at each system's thresholds).

Usage::

    python benchmarks/text_recipe.py                                   # all data sets, all systems
    python benchmarks/text_recipe.py --datasets rcv1sub2 --only xmlc --xmlc-overrides train.epochs=3
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this checkout's xmlc, in spawned children too
DATA = next((p for p in (ROOT.parent / "shared" / "data", Path("/work/shared/data")) if p.is_dir()),
            ROOT.parent / "shared" / "data")
GO = DATA / "goemotions"

#: name -> the data overrides of configs/text.yaml
DATASETS: dict[str, list[str]] = {
    "goemotions": [f"data.train={GO / 'train.tsv.gz'}", f"data.val={GO / 'dev.tsv.gz'}",
                   f"data.test={GO / 'test.tsv.gz'}", "data.text_column=0", "data.labels_column=1",
                   f"data.label_names={GO / 'labels.txt'}"],
    **{name: [f"data.train={DATA / f'{name}_train.txt.gz'}", f"data.test={DATA / f'{name}_test.txt.gz'}"]
       for name in ("rcv1sub2", "yahoo_arts", "bibtex", "delicious")},
}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(threads: int, fn, *args) -> dict:
    """``fn(*args)`` in a fresh spawned process with ``threads`` threads; its result plus ``peak_mb``."""
    ctx = mp.get_context("spawn")
    os.environ["OMP_NUM_THREADS"] = str(threads)   # inherited by the child before torch loads
    with ctx.Pool(1) as pool:
        return pool.apply(_wrapped, (threads, fn, args))


def _wrapped(threads: int, fn, args) -> dict:
    import torch
    torch.set_num_threads(threads)
    out = fn(*args)
    out["peak_mb"] = peak_mb()
    return out


def config(dataset: str, extra: list[str], out: str):
    from xmlc.config import load_config
    return load_config(ROOT / "configs" / "text.yaml", [*DATASETS[dataset], "output.tensorboard=false",
                                                        "output.figures=false", f"output.dir={out}", *extra])


def score(scores, labels, thresholds) -> dict:
    import torch
    from xmlc.eval import summary

    scores = torch.as_tensor(scores, dtype=torch.float32)
    ranked = summary.evaluate_all(scores, labels, thresholds=0.5, ks=(1,))
    decided = summary.threshold_metrics(scores, labels, torch.as_tensor(thresholds, dtype=torch.float32))
    return {"p@1": float(ranked["p@1"]), "auprc_macro": float(ranked["auprc_macro"]),
            "f1_macro": decided["f1_macro"], "f1_micro": decided["f1_micro"], "ratio": decided["positive_rate_ratio"]}


# ---------------------------------------------------------------------------------------
# Systems


def run_xmlc(dataset: str, overrides: list[str]) -> dict:
    from xmlc.train import run
    from xmlc.train._malloc import reuse_large_blocks

    reuse_large_blocks()   # as python -m xmlc.train does
    out = tempfile.mkdtemp(prefix=f"xmlc-{dataset}-")
    try:
        cfg = config(dataset, overrides, out)
        start = time.perf_counter()
        results = run(cfg)
        wall = time.perf_counter() - start
        ckpt = (Path(out) / "best.pt").stat().st_size
    finally:
        shutil.rmtree(out, ignore_errors=True)
    m = results["test_calibrated"]
    return {"p@1": m["p@1"], "auprc_macro": m["auprc_macro"], "f1_macro": m["f1_macro"], "f1_micro": m["f1_micro"],
            "ratio": m["positive_rate_ratio"],
            "train_s": wall, "ckpt_mb": ckpt / 2**20, "D": results["num_features"], "L": results["num_labels"],
            "epochs": f"{results['selected_epoch']}/{results['epochs']}"}


def _splits(dataset: str):
    from xmlc.data import load_splits
    cfg = config(dataset, [], tempfile.gettempdir())
    return cfg, load_splits(cfg.data, seed=cfg.train.seed, features=cfg.features)


def _fit_lr(X, Y):
    """One-vs-rest liblinear LR (C=1) on the labels with a positive; a (N, L) probability function."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    keep = np.flatnonzero((np.asarray(Y.sum(axis=0)).ravel() > 0) & (np.asarray(Y.sum(axis=0)).ravel() < Y.shape[0]))
    clf = OneVsRestClassifier(LogisticRegression(C=1.0, solver="liblinear")).fit(X, Y[:, keep].toarray())

    def predict(Xq):
        P = np.zeros((Xq.shape[0], Y.shape[1]), dtype=np.float32)
        P[:, keep] = clf.predict_proba(Xq)
        return P
    return predict


def run_lr(dataset: str) -> dict:
    import scipy.sparse as sp
    from xmlc.eval import calibrate

    start = time.perf_counter()
    cfg, (train, val, test) = _splits(dataset)
    predict = _fit_lr(train.features, train.labels)
    thresholds = calibrate.fit_thresholds(predict(val.features), val.labels, method="f1",
                                          min_positives=cfg.eval.min_positives)
    predict = _fit_lr(sp.vstack([train.features, val.features]).tocsr(), sp.vstack([train.labels, val.labels]).tocsr())
    wall = time.perf_counter() - start
    out = score(predict(test.features), test.labels, thresholds.numpy())
    return out | {"train_s": wall, "ckpt_mb": train.num_features * train.num_labels * 4 / 2**20,
                  "D": train.num_features, "L": train.num_labels}


@contextlib.contextmanager
def _quiet_fds():
    """omikuji's Rust logger writes progress bars to file descriptors 1 and 2; keep them out of the output."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def run_omikuji(dataset: str, threads: int) -> dict:
    try:
        import omikuji
    except ImportError as exc:
        return {"error": f"omikuji not importable ({exc})"}
    import numpy as np
    import scipy.sparse as sp
    from xmlc import data as xdata

    start = time.perf_counter()
    _, (train, val, test) = _splits(dataset)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.txt"
        xdata.write_xmc(path, sp.vstack([train.features, val.features]).tocsr(),
                        sp.vstack([train.labels, val.labels]).tocsr())
        with _quiet_fds():
            model = omikuji.Model.train_on_data(str(path), omikuji.Model.default_hyper_param(), n_threads=threads)
    wall = time.perf_counter() - start
    X, L = test.features, test.num_labels
    scores = np.zeros((X.shape[0], L), dtype=np.float32)
    for i in range(X.shape[0]):
        row = X[i]
        for label, s in model.predict(list(zip(row.indices.tolist(), row.data.tolist())), top_k=L):
            scores[i, label] = s
    out = score(scores, test.labels, np.full(L, 2.0))   # no decision rule: F1 not reported
    return out | {"train_s": wall, "f1_macro": float("nan"), "f1_micro": float("nan"), "ratio": float("nan"),
                  "ckpt_mb": float("nan"),
                  "D": train.num_features, "L": L}


# ---------------------------------------------------------------------------------------


def measure(dataset: str, systems: list[str], args) -> dict[str, list[dict]]:
    """Each system ``args.repeats`` times, in rounds whose order alternates."""
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    calls = {"xmlc": (run_xmlc, dataset, args.xmlc_overrides), "lr": (run_lr, dataset),
             "omikuji": (run_omikuji, dataset, args.threads)}
    for r in range(args.repeats):
        for system in (systems if r % 2 == 0 else systems[::-1]):
            result = in_child(args.threads, *calls[system])
            runs[system].append(result)
            print(f"{dataset} {system} round {r + 1}: " + ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()),
                file=sys.stderr, flush=True)
    return runs


def table(results: dict[str, dict[str, list[dict]]]) -> list[str]:
    lines = ["| data (D, L) | system | P@1 | macro AUPRC | macro F1 | micro F1 | predicted / true | train s | time / LR | peak RSS MB "
             "| checkpoint MB (/ LR) | epochs (shipped/run) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for dataset, runs in results.items():
        lr = runs.get("lr")
        for system, rs in runs.items():
            if "error" in rs[0]:
                lines.append(f"| {dataset} | {system} | {rs[0]['error']} ||||||||||")
                continue
            r = rs[0]
            median = statistics.median(x["train_s"] for x in rs)
            ratio = (statistics.median(x["train_s"] / y["train_s"] for x, y in zip(rs, lr))
                     if lr and system != "lr" else float("nan"))
            ck = r["ckpt_mb"]
            ck_cell = "" if ck != ck else f"{ck:.1f}" + (f" ({ck / lr[0]['ckpt_mb']:.2f}x)" if lr and system != "lr" else "")
            f1 = "" if r["f1_macro"] != r["f1_macro"] else f"{r['f1_macro']:.3f}"
            f1m = "" if r["f1_micro"] != r["f1_micro"] else f"{r['f1_micro']:.3f}"
            rate = "" if r.get("ratio", float("nan")) != r.get("ratio", float("nan")) else f"{r['ratio']:.3f}"
            lines.append(f"| {dataset} ({r['D']:,}, {r['L']}) | {system} | {100 * r['p@1']:.2f} | {r['auprc_macro']:.4f} "
                         f"| {f1} | {f1m} | {rate} | {median:.1f} | {'' if ratio != ratio else f'{ratio:.2f}'} "
                         f"| {max(x['peak_mb'] for x in rs):,.0f} | {ck_cell} | {r.get('epochs', '')} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--only", default="xmlc,lr,omikuji", help="comma-separated subset of xmlc,lr,omikuji")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--xmlc-overrides", nargs="*", default=[], help="extra section.key=value for the xmlc runs")
    args = parser.parse_args()
    systems = [s for s in args.only.split(",") if s]
    results = {d: measure(d, systems, args) for d in args.datasets.split(",") if d}
    print(f"configs/text.yaml {' '.join(args.xmlc_overrides)}; {args.threads} threads, {args.repeats} round(s)\n")
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
