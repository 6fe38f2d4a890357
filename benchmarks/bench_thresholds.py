"""Threshold policies side by side on the same trained models: the positive-rate ratio (predicted /
true positives on test, overall and per frequency bucket) and F1 of each ``eval.calibration``.

Two steps, so each data set is trained once and the policies are compared offline:

* ``dump OUT.npz -- TRAIN ARGS``: one ``python -m xmlc.train`` run (the arguments as given), saving
  the final validation scores (out-of-fold under ``train.final: crossfit``), the test scores, both
  label matrices, the training split's label counts and frequency buckets;
* ``compare [--min-positives M] OUT.npz ...``: for each file, thresholds fitted on the validation
  scores by each policy (``f1`` as before, ``rate``, ``f1_count``, and ``global``: the one
  threshold of the best micro F1 for all labels), measured on validation and test;
  one Markdown table, with each policy's F1 relative to ``f1`` on the same scores; then, as a
  reference point and not a policy, the micro F1 of one threshold for all labels chosen on the
  test scores themselves (the best, and the best at a ratio <= 1.1 and <= 1.0).

Usage::

    python benchmarks/bench_thresholds.py dump /tmp/bibtex0.npz -- --config configs/text.yaml \\
        data.train=../shared/data/bibtex_train.txt.gz data.test=../shared/data/bibtex_test.txt.gz \\
        output.dir=/tmp/x train.seed=0
    python benchmarks/bench_thresholds.py compare --min-positives 20 /tmp/bibtex0.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this checkout's xmlc
from xmlc.eval.calibrate import fit_thresholds  # noqa: E402
from xmlc.eval.summary import evaluate_all  # noqa: E402

POLICIES = ("f1", "rate", "f1_count", "global")   # global: one micro-F1 threshold for all labels


def dump(out: str, train_args: list[str]) -> int:
    """Run the trainer with ``train_args``; save the last validation and test scores it computed."""
    from xmlc.train import evaluator, loop

    saved: dict = {}
    calibrate, test = evaluator.Evaluator.calibrate, evaluator.Evaluator.test

    def keep_validation(self, model, loader, labels):
        val = calibrate(self, model, loader, labels)
        saved.update(val_scores=val.scores.float().numpy(), val_labels=labels, buckets=self.label_stats.buckets,
                     train_counts=self.label_stats.counts, num_train=np.array(self.label_stats.num_examples))
        return val

    def keep_test(self, model, loader, labels, thresholds):
        results, scores = test(self, model, loader, labels, thresholds)
        saved.update(test_scores=scores.float().numpy(), test_labels=labels)
        return results, scores

    evaluator.Evaluator.calibrate, evaluator.Evaluator.test = keep_validation, keep_test
    status = loop.main(train_args)
    arrays = {k: v for k, v in saved.items() if not sp.issparse(v)}
    for split in ("val", "test"):
        y = sp.csr_matrix(saved[f"{split}_labels"])
        arrays |= {f"{split}_indptr": y.indptr, f"{split}_indices": y.indices, f"{split}_shape": np.array(y.shape)}
    np.savez_compressed(out, **arrays)
    return status


def load(path: str) -> dict:
    z = np.load(path)
    d = {k: z[k] for k in z.files}
    for split in ("val", "test"):
        indices = d[f"{split}_indices"]
        d[f"{split}_labels"] = sp.csr_matrix((np.ones(indices.size, np.float32), indices, d[f"{split}_indptr"]),
                                             shape=tuple(d[f"{split}_shape"]))
    return d


def measure(d: dict, split: str, thresholds) -> dict:
    m = evaluate_all(d[f"{split}_scores"], d[f"{split}_labels"], thresholds=thresholds, ks=(), buckets=d["buckets"])
    return {k: m[k] for k in ("positive_rate_ratio", "positive_rate_ratio_head", "positive_rate_ratio_torso",
                              "positive_rate_ratio_tail", "f1_micro", "f1_macro", "expected_positive_ratio")}


def compare(paths: list[str], min_positives: int) -> None:
    print(f"min_positives {min_positives}. Ratio: predicted / true positives, all (head / torso / tail). "
          "F1 rel.: micro / macro F1 over f1's on the same split.\n")
    print("| scores | policy | val ratio | test ratio | test F1 micro / macro | F1 rel. | test expected ratio |")
    print("|---|---|---|---|---|---|---:|")
    for path in paths:
        d = load(path)
        base = None
        for policy in POLICIES:
            few = {"rate": 1, "global": 2**62}.get(policy, min_positives)   # global: every label falls back
            extra = {"buckets": d["buckets"]} if policy == "f1_count" else {}   # as the trainer passes them
            t = fit_thresholds(d["val_scores"], d["val_labels"], method="f1" if policy == "global" else policy,
                               min_positives=few, **extra)
            val, test = measure(d, "val", t), measure(d, "test", t)
            base = base or test
            print(f"| {Path(path).stem} | {policy} | {_ratios(val)} | {_ratios(test)} | "
                  f"{test['f1_micro']:.4f} / {test['f1_macro']:.4f} | {test['f1_micro'] / base['f1_micro']:.3f} / "
                  f"{test['f1_macro'] / base['f1_macro']:.3f} | {test['expected_positive_ratio']:.2f} |")
    print("\nOne threshold for all labels, chosen on the test scores (a reference point, not a policy):\n")
    print("| scores | best test micro F1 (at ratio) | at ratio <= 1.1 | at ratio <= 1.0 |")
    print("|---|---|---:|---:|")
    for path in paths:
        d = load(path)
        f1, ratio = _global_cuts(d["test_scores"], d["test_labels"])
        i = int(np.argmax(f1))
        print(f"| {Path(path).stem} | {f1[i]:.4f} ({ratio[i]:.3f}) | {f1[ratio <= 1.1].max(initial=0):.4f} | "
              f"{f1[ratio <= 1.0].max(initial=0):.4f} |")


def _global_cuts(scores: np.ndarray, labels: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Micro F1 and predicted / true ratio of every cut of one threshold over all entries (cuts
    between distinct scores only, so tied entries are predicted together)."""
    s, y = scores.ravel(), labels.toarray().ravel() > 0
    order = np.argsort(-s, kind="stable")
    tp, total = np.cumsum(y[order]), max(int(y.sum()), 1)
    k = np.arange(1, s.size + 1)
    cut = np.r_[s[order][:-1] > s[order][1:], True]
    return (2 * tp / (k + total))[cut], (k / total)[cut]


def _ratios(m: dict) -> str:
    return (f"{m['positive_rate_ratio']:.3f} ({m['positive_rate_ratio_head']:.2f} / "
            f"{m['positive_rate_ratio_torso']:.2f} / {m['positive_rate_ratio_tail']:.2f})")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dump"]:
        if len(argv) < 3 or argv[2] != "--":
            sys.exit("usage: bench_thresholds.py dump OUT.npz -- TRAIN ARGS")
        return dump(argv[1], argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["compare"])
    parser.add_argument("--min-positives", type=int, default=20, help="eval.min_positives of the recipe")
    parser.add_argument("paths", nargs="+", help="files written by the dump step")
    args = parser.parse_args(argv)
    compare(args.paths, args.min_positives)
    return 0


if __name__ == "__main__":
    sys.exit(main())
