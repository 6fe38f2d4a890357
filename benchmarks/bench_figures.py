"""What the diagnostic figures cost a training run, at 7,900 labels (the seed scenario).

    python benchmarks/bench_figures.py [--config configs/seed.yaml --rounds 3] [section.key=value ...]

Per round, interleaved, on the seed scenario's own splits and model (configs/seed.yaml with
``loss.pos_weight=neg_pos``):

* epoch: one epoch of :func:`xmlc.train.loop.train_one_epoch` over the whole training split (the
  model trains on, so later rounds see the scores of a model in training);
* validation pass: :meth:`xmlc.train.evaluator.Evaluator.calibrate`, what every epoch of a run does anyway
  (score the validation split, all metrics, fit the per-label thresholds);
* figures per validation: what ``output.figures`` adds to :func:`xmlc.train.monitor.log_epoch`:
  :func:`xmlc.eval.figures.run_figures` on the validation scores (reusing the per-label AP that
  ``log_epoch`` computes for its histogram either way) and ``add_figure`` of the three figures
  into a SummaryWriter;
* figures at the end (once per run): :func:`xmlc.train.monitor.write_final_figures` (the three
  figures plus the long tail, per-label AP computed afresh, PNG files and ``add_figure``).

Prints one Markdown table: median seconds of each, and the median over rounds of the ratios
figures / epoch and figures / validation pass.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from xmlc import losses  # noqa: E402
from xmlc.config import load_config  # noqa: E402
from xmlc.data import load_splits  # noqa: E402
from xmlc.eval import figures, metrics  # noqa: E402
from xmlc.train import monitor  # noqa: E402
from xmlc.train.distributed import DistEnv  # noqa: E402
from xmlc.run import LabelStats  # noqa: E402
from xmlc.train.build import make_eval_loader, new_model, start_training  # noqa: E402
from xmlc.train.evaluator import Evaluator  # noqa: E402


class _NoStop:
    requested = False


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "seed.yaml"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("overrides", nargs="*", help="extra config overrides")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config, ["loss.pos_weight=neg_pos", *args.overrides])
    env = DistEnv()
    train_set, val_set, _ = load_splits(cfg.data, seed=cfg.train.seed, features=cfg.features)
    label_stats = LabelStats.of(train_set, cfg.loss)
    model = new_model(cfg.model, train_set.num_features, train_set.num_labels)
    loss_fn = losses.build_loss(cfg.loss, pos_weight=label_stats.pos_weight, weight=label_stats.label_weight)
    tr = start_training(cfg, env, train_set, model, loss_fn)
    evaluator = Evaluator(cfg.eval, label_stats, env)
    val_loader = make_eval_loader(val_set, seed=cfg.train.seed, env=env)
    print(f"{Path(args.config).name} {' '.join(args.overrides)}: train {len(train_set):,} / val {len(val_set):,} "
          f"examples, {train_set.num_labels:,} labels; torch threads 1")

    rows = {"epoch": [], "validation pass": [], "figures per validation": [], "figures at the end": []}
    with tempfile.TemporaryDirectory() as tmp:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=tmp)
        for r in range(args.rounds):
            t_epoch, _ = timed(lambda: tr.train_epoch(tcfg=cfg.train, grad_clip=cfg.optim.grad_clip, env=env,
                                                      stop=_NoStop()))
            tr.progress.epoch, tr.progress.batch_in_epoch = tr.progress.epoch + 1, 0
            t_val, val = timed(lambda: evaluator.calibrate(model, val_loader, val_set.labels))
            ap_per_label = metrics.average_precision(val.scores, val_set.labels, average="none")   # log_epoch's
            inputs = evaluator.figure_inputs(val.thresholds)
            t_fig, _ = timed(lambda: monitor.log_figures(writer, figures.run_figures(
                val.scores, val_set.labels, ap=ap_per_label, title=f"validation, round {r}", **inputs),
                tr.progress.step))
            t_end, _ = timed(lambda: monitor.write_final_figures(
                Path(tmp), writer, tr.progress.step, "validation", val.scores, val_set.labels,
                num_train=label_stats.num_examples, **inputs))
            for key, value in zip(rows, (t_epoch, t_val, t_fig, t_end)):
                rows[key].append(value)
            print(f"round {r + 1}: epoch {t_epoch:.1f} s, validation {t_val:.1f} s, figures {t_fig:.2f} s, "
                  f"end {t_end:.2f} s", flush=True)
        writer.close()

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(rows[a], rows[b]))

    print()
    print(f"| step ({train_set.num_labels:,} labels) | median s | figures per validation / this | "
          "figures at the end / this |")
    print("|---|---:|---:|---:|")
    for key in ("epoch", "validation pass"):
        print(f"| {key} | {statistics.median(rows[key]):.2f} | {ratio('figures per validation', key):.1%} | "
              f"{ratio('figures at the end', key):.1%} |")
    for key in ("figures per validation", "figures at the end"):
        print(f"| {key} | {statistics.median(rows[key]):.2f} | | |")
    print(f"\n{args.rounds} interleaved rounds; ratios are medians of per-round ratios.")


if __name__ == "__main__":
    main()
