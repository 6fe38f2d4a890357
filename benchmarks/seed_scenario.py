"""The seed scenario: why a model trained with ``pos_weight = neg/pos`` over-predicts, and the fix.

Trains xmlc on the seed-scenario synthetic data (``xmlc.data.synthetic_preset("seed")``:
80,000 examples x 7,900 labels, ~130 labels per example, label frequencies ~1%-15%, 5,000
sparse features) once per loss setting, each through the real CLI
(``python -m xmlc.train --config configs/seed.yaml ...``) in its own process, so the epoch
time and peak RSS in the table are those of one training run. Every trained model is then
read three (four) ways from its ``metrics.json`` (test split):

* ``as trained (@0.5)``: the default decision threshold;
* ``corrected (ln w)``: the ln(pos_weight) correction (threshold ``w / (1 + w)``,
  :func:`xmlc.eval.calibrate.prior_thresholds`); identical to @0.5 when no pos_weight was used;
* ``calibrated``: per-label thresholds fitted on the validation split as ``eval.calibration``
  says (configs/seed.yaml: ``f1_count``, the best F1 with the predicted count within
  [1, 1.1] x the validation count; :func:`xmlc.eval.calibrate.fit_thresholds`);
* ``calibrated (rate)``, with ``--rate``: per-label thresholds predicting as many as the
  validation positives (``fit_thresholds(method="rate")``), from re-scoring each ``best.pt``.

Prints one Markdown table. Usage::

    python benchmarks/seed_scenario.py --only neg_pos  # the story: as trained -> corrected -> calibrated
    python benchmarks/seed_scenario.py                 # all settings, configs/seed.yaml epochs
    python benchmarks/seed_scenario.py --epochs 2 --only bce,neg_pos
    python benchmarks/seed_scenario.py --epochs 1 --rate model.hidden=[256] optim.lr=0.003 data.batch_size=128
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # xmlc from this checkout (the runs use it via `python -m` in ROOT)
from xmlc._json import loads_with_nan  # noqa: E402  (metrics.json writes undefined metrics as null)

#: name -> (description, config overrides). The model, data and schedule come from configs/seed.yaml.
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "bce": ("BCE", ["loss.name=bce", "loss.pos_weight=none"]),
    "neg_pos": ("BCE + pos_weight neg/pos", ["loss.name=bce", "loss.pos_weight=neg_pos"]),
    "sqrt": ("BCE + pos_weight sqrt(neg/pos)", ["loss.name=bce", "loss.pos_weight=sqrt_neg_pos"]),
    "focal": ("focal (gamma 2)", ["loss.name=focal", "loss.gamma=2.0", "loss.pos_weight=none"]),
    "asymmetric": ("asymmetric (gamma- 4, clip 0.05)", ["loss.name=asymmetric", "loss.pos_weight=none"]),
    "ohem": ("OHEM over BCE (keep 10%)", ["loss.name=bce", "loss.pos_weight=none", "loss.ohem=0.1"]),
}

COLUMNS = [("auprc_micro", "micro AUPRC", "{:.3f}"), ("auprc_macro", "macro AUPRC", "{:.3f}"),
           ("f1_micro", "micro F1", "{:.3f}"), ("f1_macro", "macro F1", "{:.3f}"),
           ("positive_rate_ratio", "pos. rate ratio", "{:.2f}"),
           *[(f"positive_rate_ratio_{b}", f"ratio {b}", "{:.2f}") for b in ("head", "torso", "tail")],
           ("expected_positive_ratio", "sum of scores / true", "{:.2f}"), ("p@5", "P@5", "{:.3f}")]


def train(name: str, overrides: list[str], out_dir: Path, extra: list[str], reuse: bool = False) -> dict:
    """One training run through the CLI in a fresh process; returns its metrics.json."""
    if reuse and (out_dir / name / "metrics.json").is_file():   # a finished run of this setting
        metrics = loads_with_nan((out_dir / name / "metrics.json").read_text())
        metrics["wall_s"] = float("nan")
        metrics["calibration"] = yaml.safe_load((out_dir / name / "config.yaml").read_text())["eval"]["calibration"]
        return metrics
    cmd = [sys.executable, "-m", "xmlc.train", "--config", str(ROOT / "configs" / "seed.yaml"),
           f"output.dir={out_dir / name}", "output.overwrite=true", "output.tensorboard=false",
           *overrides, *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"setting {name!r} failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    metrics = loads_with_nan((out_dir / name / "metrics.json").read_text())
    metrics["wall_s"] = wall
    metrics["calibration"] = yaml.safe_load((out_dir / name / "config.yaml").read_text())["eval"]["calibration"]
    return metrics


def rate_views(out_dir: Path, names: list[str]) -> dict[str, dict]:
    """Re-score each run's best.pt with per-label rate-matching thresholds fitted on validation
    (``fit_thresholds(method="rate")``: as many predictions per label as validation positives).

    The data are generated once for all runs (every setting shares configs/seed.yaml's data section).
    """
    import torch
    from xmlc.eval import calibrate
    from xmlc.eval import metrics
    from xmlc.checkpoint import load_checkpoint
    from xmlc.config import Config, from_dict
    from xmlc.data import load_splits, make_loader
    from xmlc.models import build_model, probabilities

    def scores(model, data):
        with torch.no_grad():
            return torch.cat([probabilities(model(b)) for b in make_loader(data, 1024, shuffle=False)])

    out, splits = {}, None
    for name in names:
        ckpt = load_checkpoint(out_dir / name / "best.pt")
        cfg = from_dict(Config, ckpt["config"])
        if splits is None:
            _, val, test = splits = load_splits(cfg.data, seed=cfg.train.seed)
        model = build_model(cfg.model, ckpt["num_features"], ckpt["num_labels"])
        model.load_state_dict(ckpt["model"])
        model.eval()
        thresholds = calibrate.fit_thresholds(scores(model, val), val.labels, method="rate",
                                              min_positives=cfg.eval.min_positives)
        s = scores(model, test)
        out[name] = {"f1_micro": metrics.f1_score(s, test.labels, thresholds, average="micro"),
                     "f1_macro": metrics.f1_score(s, test.labels, thresholds, average="macro"),
                     "positive_rate_ratio": metrics.positive_rate_ratio(s, test.labels, thresholds)}
    return out


def rows(desc: str, m: dict, rate: dict | None = None) -> list[str]:
    """Table rows (as trained @0.5, corrected by ln w, calibrated, optionally rate-calibrated) for one model."""
    lines = []
    views = [("as trained (@0.5)", m["test"]), ("corrected (ln w)", m.get("test_prior")),
             (f"calibrated ({m['calibration']})", m["test_calibrated"])]
    if rate is not None:
        views.append(("calibrated (rate)", m["test"] | {k: float(v) for k, v in rate.items()}))
    for view, metrics in views:
        if metrics is None:   # no pos_weight: ln(1) = 0, the prior correction is the 0.5 threshold
            metrics, view = m["test"], "corrected (= @0.5, w = 1)"
        cells = [fmt.format(metrics[key]) for key, _, fmt in COLUMNS]
        lines.append(f"| {desc} | {view} | " + " | ".join(cells)
                     + f" | {m['epoch_time_s']:.0f} | {m['peak_rss_mb'] / 1024:.2f} |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SETTINGS), help=f"comma-separated subset of {list(SETTINGS)}")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs of configs/seed.yaml")
    parser.add_argument("--out", default=None, help="run directories (default: a temporary directory)")
    parser.add_argument("--rate", action="store_true",
                        help="add rows at per-label rate-matching thresholds fitted on validation (re-scores best.pt)")
    parser.add_argument("--reuse", action="store_true",
                        help="read metrics.json of settings already finished in --out instead of training again")
    parser.add_argument("overrides", nargs="*", help="extra dotted config overrides for every run")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; valid: {', '.join(SETTINGS)}")
    extra = list(args.overrides) + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="xmlc_seed_"))

    table = ["| loss | thresholds | " + " | ".join(h for _, h, _ in COLUMNS) + " | epoch s | peak RSS GB |",
             "|---|---|" + "---:|" * (len(COLUMNS) + 2)]
    total = time.perf_counter()
    results = {}
    for name in names:
        desc, overrides = SETTINGS[name]
        results[name] = m = train(name, overrides, out_dir, extra, args.reuse)
        print(f"{desc}: best epoch {m['best_epoch']}/{m['epochs']}, {m['wall_s']:.0f} s", file=sys.stderr, flush=True)
    rate = rate_views(out_dir, names) if args.rate else {}
    for name in names:
        table += rows(SETTINGS[name][0], results[name], rate.get(name))
    print(f"\nconfigs/seed.yaml + {' '.join(extra) or '(no overrides)'}; test split of the seed preset; "
          f"runs in {out_dir}; total {time.perf_counter() - total:.0f} s\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
