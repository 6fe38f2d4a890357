"""Real data: bibtex and delicious through xmlc, beside the published numbers.

For each dataset, trains through the real CLI (``python -m xmlc.train --config configs/text.yaml
data.train=... data.test=...``), one fresh process per run:

* the loss comparison of the seed scenario on the text model (``configs/text.yaml`` with one
  member trained on train only, ``model.ensemble=1 train.final=none``): BCE, BCE + pos_weight
  neg/pos, sqrt(neg/pos), focal, asymmetric, OHEM over BCE;
* the shipped text recipe itself (``configs/text.yaml`` unchanged: a 5-member ensemble
  trained on train + validation, each member leaving out a fifth of the validation rows).

Prints two Markdown tables: ranking metrics (P@1/3/5 in %, macro/micro AUPRC) beside the
published P@k (Extreme Classification Repository) and the peers measured on this machine
kind (from ``../shared/data/README.md``); and decisions: micro/macro F1 and the positive-rate
ratio (predicted / true positives) at 0.5, with the ln(pos_weight) correction, and at
per-label thresholds calibrated on the validation split.

Usage::

    python benchmarks/real_data.py                         # both datasets, all settings
    python benchmarks/real_data.py --datasets bibtex --only recipe
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
import subprocess

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # xmlc from this checkout
from xmlc._json import loads_with_nan  # noqa: E402  (metrics.json writes undefined metrics as null)
DATA_DIR = ROOT.parent / "shared" / "data"

_SINGLE = ["model.ensemble=1", "train.final=none"]   # the loss alone: one member, train rows only
#: name -> (description, overrides of configs/text.yaml)
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "bce": ("BCE", _SINGLE + ["loss.name=bce"]),
    "neg_pos": ("BCE + pos_weight neg/pos", _SINGLE + ["loss.name=bce", "loss.pos_weight=neg_pos"]),
    "sqrt": ("BCE + pos_weight sqrt(neg/pos)", _SINGLE + ["loss.name=bce", "loss.pos_weight=sqrt_neg_pos"]),
    "focal": ("focal (gamma 1)", _SINGLE),
    "asymmetric": ("asymmetric (gamma- 4, clip 0.05)", _SINGLE + ["loss.name=asymmetric"]),
    "ohem": ("OHEM over BCE (keep 10%)", _SINGLE + ["loss.name=bce", "loss.ohem=0.1"]),
    "recipe": ("**xmlc text recipe** (configs/text.yaml: 5-member ensemble, crossfit)", []),
}

#: Published P@1/3/5 (Extreme Classification Repository) and peers measured on this machine kind
#: (../shared/data/README.md: row-L2-normalised features, macro AUPRC over labels with a test positive).
PUBLISHED = {
    "bibtex": [("SLEEC", "65.08 / 39.64 / 28.87"), ("Parabel", "64.53 / 38.56 / 27.94"),
               ("FastXML", "63.42 / 39.23 / 28.86"), ("1-vs-All", "62.62 / 39.09 / 28.79")],
    "delicious": [("FastXML", "69.61 / 64.12 / 59.27"), ("SLEEC", "67.59 / 61.38 / 56.56"),
                  ("Parabel", "67.44 / 61.83 / 56.75"), ("1-vs-All", "65.02 / 58.88 / 53.28")],
}
MEASURED_PEERS = {
    "bibtex": [("omikuji (Parabel)", "64.7", "0.388"), ("napkinXC PLT", "63.3", "0.390"),
               ("one-vs-rest logistic regression C=10", "63.9", "0.392"),
               ("plain PyTorch MLP 512, BCE", "53.2", "0.241")],
    "delicious": [("omikuji (Parabel)", "66.7", "0.148"), ("napkinXC PLT", "66.9", "0.147"),
                  ("one-vs-rest logistic regression C=1", "67.5", "0.159"),
                  ("plain PyTorch MLP 512, BCE", "66.5", "0.147")],
}


def train(dataset: str, name: str, overrides: list[str], out_dir: Path, data_dir: Path, extra: list[str],
          reuse: bool = False) -> dict:
    """One run of ``python -m xmlc.train`` in a fresh process; returns its metrics.json."""
    run_dir = out_dir / f"{dataset}_{name}"
    cmd = [sys.executable, "-m", "xmlc.train", "--config", str(ROOT / "configs" / "text.yaml"),
           f"data.train={data_dir / f'{dataset}_train.txt.gz'}", f"data.test={data_dir / f'{dataset}_test.txt.gz'}",
           f"output.dir={run_dir}", "output.overwrite=true", "output.tensorboard=false", *overrides, *extra]
    if reuse and (run_dir / "metrics.json").is_file():   # a finished run of this exact command
        metrics = loads_with_nan((run_dir / "metrics.json").read_text())
        metrics["wall_s"] = float("nan")
        return metrics
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{dataset}/{name} failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    metrics = loads_with_nan((run_dir / "metrics.json").read_text())
    metrics["wall_s"] = time.perf_counter() - start
    return metrics


def ranking_table(dataset: str, results: dict) -> list[str]:
    lines = [f"**{dataset}** (test)", "",
             "| method | P@1 / P@3 / P@5 (%) | macro AUPRC | micro AUPRC | train wall s |",
             "|---|---|---:|---:|---:|"]
    for name, (desc, m) in results.items():
        t = m["test"]
        pk = " / ".join(f"{100 * t[f'p@{k}']:.2f}" for k in (1, 3, 5))
        lines.append(f"| {desc} | {pk} | {t['auprc_macro']:.3f} | {t['auprc_micro']:.3f} | {m['wall_s']:.0f} |")
    for method, pk in PUBLISHED[dataset]:
        lines.append(f"| {method} (published) | {pk} | | | |")
    for method, p1, auprc in MEASURED_PEERS[dataset]:
        lines.append(f"| {method} (measured here, data README) | {p1} / – / – | {auprc} | | |")
    return lines


def decision_table(dataset: str, results: dict) -> list[str]:
    lines = [f"**{dataset}** (test; ratio = predicted / true positives)", "",
             "| method | F1 micro @0.5 / prior / calibrated | F1 macro @0.5 / prior / calibrated "
             "| ratio @0.5 / prior / calibrated |",
             "|---|---|---|---|"]
    for name, (desc, m) in results.items():
        views = [m["test"], m.get("test_prior", m["test"]), m["test_calibrated"]]
        cell = lambda key, f: " / ".join(f.format(v[key]) for v in views)
        lines.append(f"| {desc} | {cell('f1_micro', '{:.3f}')} | {cell('f1_macro', '{:.3f}')} "
                     f"| {cell('positive_rate_ratio', '{:.2f}')} |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="bibtex,delicious")
    parser.add_argument("--only", default=",".join(SETTINGS), help=f"comma-separated subset of {list(SETTINGS)}")
    parser.add_argument("--data-dir", default=str(DATA_DIR))
    parser.add_argument("--out", default=None, help="run directories (default: a temporary directory)")
    parser.add_argument("--reuse", action="store_true",
                        help="read metrics.json of runs already finished in --out instead of training again")
    parser.add_argument("overrides", nargs="*", help="extra dotted config overrides for every run")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; valid: {', '.join(SETTINGS)}")
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="xmlc_real_"))
    data_dir = Path(args.data_dir)

    ranking, decisions = [], []
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        results = {}
        for name in names:
            desc, overrides = SETTINGS[name]
            m = train(dataset, name, overrides, out_dir, data_dir, list(args.overrides), args.reuse)
            print(f"{dataset} {desc}: best epoch {m['best_epoch']}/{m['epochs']}, {m['wall_s']:.0f} s",
                  file=sys.stderr, flush=True)
            results[name] = (desc, m)
        ranking += ranking_table(dataset, results) + [""]
        decisions += decision_table(dataset, results) + [""]
    print(f"configs/text.yaml {' '.join(args.overrides)}; runs in {out_dir}\n")
    print("\n".join(ranking + decisions))


if __name__ == "__main__":
    main()
