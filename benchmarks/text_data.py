"""Raw text in: GoEmotions through xmlc beside what a user would otherwise run, in one script.

Systems, each in its own fresh process (``multiprocessing`` spawn) so that its peak RSS is its own:

* **xmlc**: ``configs/text.yaml`` from the raw ``.tsv.gz`` files (the default ``features``
  section: word 1-2-grams, min_df 2, sublinear tf; l2 rows), trained with
  ``xmlc.train.run`` exactly as ``python -m xmlc.train --config configs/text.yaml
  data.train=train.tsv.gz data.val=dev.tsv.gz data.test=test.tsv.gz data.text_column=0
  data.labels_column=1 data.label_names=labels.txt`` plus ``--xmlc-overrides``;
* **sklearn**: ``TfidfVectorizer`` (scikit-learn defaults, and xmlc's settings) + one-vs-rest
  ``LogisticRegression`` (default C=1), probabilities; decisions at 0.5 and at per-label F1
  thresholds fitted on dev with the same ``xmlc.eval.calibrate`` call and ``min_positives`` as the
  recipe, then refitted on train + dev (the recipe trains on the dev rows too);
* **LibMultiLabel**: ``linear.Preprocessor()`` (its default tf-idf) + ``linear.train_thresholding``
  (one-vs-rest liblinear with per-label thresholds chosen by internal cross-validation for
  micro + macro F1; CIKM 2023), trained on train, decisions at its own thresholds. Needs
  ``pip install libmultilabel``; if it cannot be imported the row says why.

All metrics on the GoEmotions test split with ``xmlc.eval.metrics`` (macro AUPRC over labels with a
test positive; F1 at each system's decision rule). Train time = wall time of featurising,
fitting, threshold fitting (and refit); peak memory = the process's peak RSS.

``--featurise-rows N`` instead measures featurising a generated table of N short texts
(xmlc's reader + tf-idf, the hashing option, and plain sklearn ``TfidfVectorizer`` on the
same list of strings): peak RSS and time. ``--train-hashed N`` trains ``configs/text.yaml`` for
one epoch on such a table hashed to 2^20 columns (``features.method=hashing``) and prints the
model's sizes and the run's peak RSS.

Usage::

    python benchmarks/text_data.py                                  # GoEmotions, all systems
    python benchmarks/text_data.py --xmlc-overrides model.ensemble=1 train.final=none train.epochs=10
    python benchmarks/text_data.py --featurise-rows 1000000
    python benchmarks/text_data.py --train-hashed 1000000
    python benchmarks/text_data.py --only xmlc --keep-run runs/goemotions   # keep the run (4-7 GB) for predict
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GO = next((p for p in (ROOT.parent / "shared" / "data" / "goemotions", ROOT.parents[1] / "shared" / "data" / "goemotions")
           if p.is_dir()), ROOT.parent / "shared" / "data" / "goemotions")   # from /work/main or a worktree

sys.path.insert(0, str(ROOT))   # this checkout's xmlc, in spawned children too

PUBLISHED = [("BERT-base fine-tuned (Demszky et al. 2020)", "0.46"),
             ("BERT-base-cased fine-tuned, threshold 0.3 (GoEmotions-pytorch)", "0.503")]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(fn, *args):
    """Run ``fn(*args)`` in a fresh spawned process; returns its result dict plus ``peak_mb``."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_wrapped, (fn, args))


def _wrapped(fn, args):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    out = fn(*args)
    out["peak_mb"] = peak_mb()
    return out


def goemotions(split: str):
    """(texts, label-name lists) of a GoEmotions split, read with xmlc's table reader."""
    from xmlc.data.labels import ids_to_names, read_label_names
    from xmlc.data.tables import read_table

    raw = read_table(GO / f"{split}.tsv.gz", text_column=0, labels_column=1, label_sep=",")
    names = read_label_names(GO / "labels.txt")
    return raw.texts, ids_to_names(raw.labels, names, split), names


def score(scores, Y, thresholds) -> dict:
    import torch
    from xmlc.eval import summary

    scores = torch.as_tensor(scores, dtype=torch.float32)
    ranked = summary.evaluate_all(scores, Y, thresholds=0.5, ks=(1,))
    decided = summary.threshold_metrics(scores, Y, torch.as_tensor(thresholds, dtype=torch.float32))
    return {"p@1": float(ranked["p@1"]), "auprc_macro": float(ranked["auprc_macro"]),
            "f1_macro": decided["f1_macro"], "f1_micro": decided["f1_micro"],
            "ratio": decided["positive_rate_ratio"]}


# ---------------------------------------------------------------------------------------
# Systems


def run_xmlc(overrides: list[str], keep: str | None = None) -> dict:
    """The recipe's run in ``keep`` (kept), or in a temporary directory removed afterwards (its
    checkpoints take 4-7 GB at D = 58k)."""
    from xmlc.train._malloc import reuse_large_blocks
    from xmlc.config import load_config
    from xmlc.train import run

    reuse_large_blocks()   # as python -m xmlc.train does
    out = keep or tempfile.mkdtemp(prefix="xmlc-goemotions-")
    cfg = load_config(ROOT / "configs" / "text.yaml", [
        f"data.train={GO / 'train.tsv.gz'}", f"data.val={GO / 'dev.tsv.gz'}", f"data.test={GO / 'test.tsv.gz'}",
        "data.text_column=0", "data.labels_column=1", f"data.label_names={GO / 'labels.txt'}",
        "output.tensorboard=false", f"output.dir={out}", *overrides])
    start = time.perf_counter()
    try:
        results = run(cfg)   # the metrics.json dict
        wall = time.perf_counter() - start
    finally:
        if keep is None:
            shutil.rmtree(out, ignore_errors=True)
    m = results["test_calibrated"]
    return {"p@1": m["p@1"], "auprc_macro": m["auprc_macro"], "f1_macro": m["f1_macro"],
            "f1_micro": m["f1_micro"], "ratio": m["positive_rate_ratio"], "train_s": wall,
            "at_half": {k: results["test"][k] for k in ("f1_macro", "f1_micro", "positive_rate_ratio")},
            "num_features": results["num_features"]}


def run_sklearn(xmlc_features: bool) -> dict:
    import numpy as np
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer
    from xmlc.eval import calibrate

    (tr_x, tr_y, names), (dv_x, dv_y, _), (te_x, te_y, _) = (goemotions(s) for s in ("train", "dev", "test"))
    binarizer = MultiLabelBinarizer(classes=names, sparse_output=True)
    Ytr, Ydv, Yte = (sp.csr_matrix(binarizer.fit_transform(y), dtype=np.float32) for y in (tr_y, dv_y, te_y))
    params = dict(ngram_range=(1, 2), min_df=2, sublinear_tf=True) if xmlc_features else {}
    start = time.perf_counter()
    vec = TfidfVectorizer(**params)
    Xtr = vec.fit_transform(tr_x)
    clf = OneVsRestClassifier(LogisticRegression(max_iter=1000)).fit(Xtr, Ytr.toarray())
    thresholds = calibrate.fit_thresholds(clf.predict_proba(vec.transform(dv_x)), Ydv, method="f1", min_positives=20)
    # refit on train + dev with those thresholds: the recipe trains on the dev rows too (train.final: crossfit)
    vec = TfidfVectorizer(**params)
    Xall = vec.fit_transform(tr_x + dv_x)
    clf = OneVsRestClassifier(LogisticRegression(max_iter=1000)).fit(Xall, sp.vstack([Ytr, Ydv]).toarray())
    wall = time.perf_counter() - start
    P = clf.predict_proba(vec.transform(te_x))
    out = score(P, Yte, thresholds.numpy())
    half = score(P, Yte, np.full(len(names), 0.5))
    return out | {"train_s": wall, "num_features": Xall.shape[1],
                  "at_half": {"f1_macro": half["f1_macro"], "f1_micro": half["f1_micro"],
                              "positive_rate_ratio": half["ratio"]}}


def run_libmultilabel() -> dict:
    try:
        import libmultilabel.linear as linear
    except ImportError as exc:
        return {"error": f"libmultilabel not importable here: {exc}"}
    import numpy as np
    import scipy.sparse as sp
    from sklearn.preprocessing import MultiLabelBinarizer

    (tr_x, tr_y, names), (te_x, te_y, _) = goemotions("train"), goemotions("test")
    start = time.perf_counter()
    pre = linear.Preprocessor()
    data = pre.fit_transform({"data_format": "txt", "train": {"x": tr_x, "y": tr_y},
                              "test": {"x": te_x, "y": te_y}})
    note = ""
    try:
        model = linear.train_thresholding(data["train"]["y"], data["train"]["x"], options="", verbose=False)
    except ValueError as exc:
        # libmultilabel 0.10.0 orders labels by np.sum(y, 2) (axis 2 of a 2-d sparse matrix), which
        # scipy >= 1.15 rejects; the same function with the label counts taken over axis 0.
        import types
        import libmultilabel.linear.linear as impl
        shim = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
        shim.sum = lambda a, axis=None, **kw: np.sum(a, axis=0 if axis == 2 else axis, **kw)
        impl.np, real = shim, impl.np
        try:
            model = linear.train_thresholding(data["train"]["y"], data["train"]["x"], options="", verbose=False)
        finally:
            impl.np = real
        note = f"train_thresholding raised {exc!r} at np.sum(y, 2); ran with that sum over axis 0"
    wall = time.perf_counter() - start
    values = linear.predict_values(model, data["test"]["x"])   # decision values; > 0 = predicted
    order = [list(pre.label_mapping).index(n) if n in pre.label_mapping else -1 for n in names]
    full = np.full((values.shape[0], len(names)), -1e9)
    for j, k in enumerate(order):
        if k >= 0:
            full[:, j] = values[:, k]
    Yte = sp.csr_matrix(MultiLabelBinarizer(classes=names, sparse_output=True).fit_transform(te_y), dtype=np.float32)
    return score(full, Yte, np.zeros(len(names))) | {"train_s": wall, "num_features": data["train"]["x"].shape[1],
                                                      "note": note}


# ---------------------------------------------------------------------------------------
# Featurising a large generated table


def make_table(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` short texts (5-15 words from a Zipf vocabulary of 50k words) with 1-3 of 100 tags."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(50_000)])
    p = 1.0 / (np.arange(50_000) + 10.0)
    p /= p.sum()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "labels"])
        block = 100_000
        for s in range(0, rows, block):
            n = min(block, rows - s)
            lengths = rng.integers(5, 16, n)
            words = vocab[rng.choice(50_000, lengths.sum(), p=p)]
            cuts = np.cumsum(lengths)[:-1]
            tags = rng.integers(0, 100, (n, 3))
            ntags = rng.integers(1, 4, n)
            for i, doc in enumerate(np.split(words, cuts)):
                w.writerow([" ".join(doc), ",".join(f"t{t}" for t in tags[i, :ntags[i]])])


def featurise(path: str, how: str) -> dict:
    from xmlc.config import FeaturesConfig
    from xmlc.data.features import TextFeaturizer
    from xmlc.data.tables import read_table

    start = time.perf_counter()
    if how == "sklearn":   # what a user writes: csv module + TfidfVectorizer(bigrams, min_df=2)
        import numpy as np
        from sklearn.feature_extraction.text import TfidfVectorizer
        with open(path, newline="") as f:
            rows = list(csv.reader(f))[1:]
        texts = [r[0] for r in rows]
        del rows
        X = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, dtype=np.float32).fit_transform(texts)
    else:
        raw = read_table(path)
        fcfg = FeaturesConfig(method="hashing") if how == "xmlc-hashing" else FeaturesConfig()
        _, X = TextFeaturizer.fit(raw.texts, fcfg)
    return {"seconds": time.perf_counter() - start, "shape": X.shape, "nnz": X.nnz}


def train_hashed(path: str, columns: int) -> dict:
    """One epoch of configs/text.yaml on the table at ``path`` hashed to ``columns`` features."""
    from xmlc.config import load_config
    from xmlc.models import auto_hidden
    from xmlc.train import run
    from xmlc.train._malloc import reuse_large_blocks

    reuse_large_blocks()
    out = tempfile.mkdtemp(prefix="xmlc-hashed-")
    cfg = load_config(ROOT / "configs" / "text.yaml", [
        f"data.train={path}", "features.method=hashing", f"features.max_features={columns}",
        "train.epochs=1", "output.tensorboard=false", "output.figures=false", f"output.dir={out}"])
    start = time.perf_counter()
    try:
        results = run(cfg)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    D, L, M = results["num_features"], results["num_labels"], cfg.model.ensemble
    return {"seconds": time.perf_counter() - start, "D": D, "L": L, "M": M, "H": auto_hidden(D, L, M),
            "rows": results["num_train"], "epoch_s": results["epoch_time_s"], "rss_run": results["peak_rss_mb"],
            "val_p1": results["val"]["p@1"], "optimizer_mb": results["optimizer_state"]["total_mb"]}


def print_train_hashed(rows: int) -> None:
    """Generate ``rows`` texts, train one epoch on them hashed to 2^20 columns, print one table row."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "table.csv"
        make_table(path, rows)
        r = in_child(train_hashed, str(path), 2**20)
    D, L, M, H = r["D"], r["L"], r["M"], r["H"]
    weights = D * (L + H) + M * H * L
    print(f"configs/text.yaml, features.method=hashing features.max_features={D}, one epoch, "
          f"{rows:,} generated rows ({r['rows']:,} train)\n")
    print("| D | L | M | H (auto) | weights D(L+H)+MHL | weights MB | optimizer state MB | epoch s | run s "
          "| peak RSS MB | val P@1 |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {D:,} | {L} | {M} | {H} | {weights:,} | {4 * weights / 2**20:,.0f} | {r['optimizer_mb']:,.0f} "
          f"| {r['epoch_s']:.0f} | {r['seconds']:.0f} | {r['peak_mb']:,.0f} | {100 * r['val_p1']:.2f} |")


# ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--xmlc-overrides", nargs="*", default=[], help="extra section.key=value for the xmlc run")
    parser.add_argument("--only", nargs="*", default=["xmlc", "sklearn", "sklearn-xmlc-features", "libmultilabel"])
    parser.add_argument("--featurise-rows", type=int, help="measure featurising a generated table of this many rows")
    parser.add_argument("--train-hashed", type=int, metavar="N", help="train configs/text.yaml one epoch on a "
                        "generated table of N rows hashed to 2^20 columns; print sizes and peak RSS")
    parser.add_argument("--keep-run", metavar="DIR", help="write the xmlc run into DIR and keep it (default: a "
                        "temporary directory, removed afterwards)")
    args = parser.parse_args()
    if args.featurise_rows:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "table.csv"
            make_table(path, args.featurise_rows)
            size = path.stat().st_size / 2**20
            print(f"generated {args.featurise_rows:,} rows, {size:.0f} MB CSV\n")
            print("| featuriser | columns | nnz | time (s) | peak RSS (MB) |\n|---|---:|---:|---:|---:|")
            for how, label in (("sklearn", "csv module + sklearn TfidfVectorizer (1-2-grams, min_df 2)"),
                               ("xmlc", "xmlc: read_table + features defaults (tf-idf 1-2-grams, min_df 2)"),
                               ("xmlc-hashing", "xmlc: features.method=hashing (2^18 columns)")):
                r = in_child(featurise, str(path), how)
                print(f"| {label} | {r['shape'][1]:,} | {r['nnz']:,} | {r['seconds']:.1f} | {r['peak_mb']:,.0f} |")
        return

    if args.train_hashed:
        print_train_hashed(args.train_hashed)
        return
    rows = []
    if "xmlc" in args.only:
        rows.append((f"**xmlc** configs/text.yaml {' '.join(args.xmlc_overrides)}".strip(), in_child(run_xmlc, args.xmlc_overrides, args.keep_run)))
    if "sklearn" in args.only:
        rows.append(("sklearn TfidfVectorizer() + OvR LogisticRegression, F1 thresholds on dev, refit", in_child(run_sklearn, False)))
    if "sklearn-xmlc-features" in args.only:
        rows.append(("same, xmlc's tf-idf settings (1-2-grams, min_df 2, sublinear)", in_child(run_sklearn, True)))
    if "libmultilabel" in args.only:
        rows.append(("LibMultiLabel linear.train_thresholding (default tf-idf)", in_child(run_libmultilabel)))
    print("GoEmotions test (5,427 comments, 28 labels); F1 and ratio at each system's decision rule\n")
    print("| system | D | P@1 | macro AUPRC | macro F1 | micro F1 | pos. rate ratio | train (s) | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        if "error" in r:
            print(f"| {name} | {r['error']} |||||||")
            continue
        print(f"| {name} | {r['num_features']:,} | {100 * r['p@1']:.2f} | {r['auprc_macro']:.3f} | {r['f1_macro']:.3f} | "
              f"{r['f1_micro']:.3f} | {r['ratio']:.2f} | {r['train_s']:.0f} | {r['peak_mb']:,.0f} |")
    for name, r in rows:
        if r.get("note"):
            print(f"\nNote ({name}): {r['note']}")
    for name, f1 in PUBLISHED:
        print(f"| {name} (published) | | | | {f1} | | | | |")
    print("\nAt threshold 0.5 (macro F1 / micro F1 / ratio):")
    for name, r in rows:
        if "at_half" in r:
            h = r["at_half"]
            print(f"- {name}: {h['f1_macro']:.3f} / {h['f1_micro']:.3f} / {h['positive_rate_ratio']:.2f}")


if __name__ == "__main__":
    main()
