"""TensorBoard logging of a training run: config and label statistics at the start, validation
metrics, per-label AP histogram and a micro PR curve per epoch, hparams at the end.

Only rank 0 writes; every function takes the writer :func:`open_writer` returned.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from xmlc import metrics, stats
from xmlc.config import Config, dump_config, to_dict

__all__ = ["open_writer", "log_run_start", "log_epoch", "log_final"]


def open_writer(cfg: Config, out: Path, *, resumed: bool, step: int):
    if not cfg.output.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    if not resumed:   # a fresh run in an existing directory replaces that directory's run
        for old in out.glob("events.out.tfevents.*"):
            old.unlink()
        for old in (out / "hparams").glob("events.out.tfevents.*"):
            old.unlink()
    # purge_step drops events logged after the checkpoint a resumed run restarts from
    return SummaryWriter(log_dir=str(out), purge_step=step if resumed else None)


def log_run_start(writer, cfg: Config, counts, num_train: int, pos_weight) -> None:
    writer.add_text("config", "    " + dump_config(cfg).replace("\n", "\n    "), 0)
    neg_pos = stats.pos_weight_from_counts(counts, num_train)
    writer.add_histogram("label_stats/pos_weight_neg_pos", neg_pos, 0)
    if pos_weight is not None:
        writer.add_histogram("label_stats/pos_weight_used", pos_weight, 0)
    writer.add_histogram("label_stats/label_count", torch.as_tensor(counts, dtype=torch.float32), 0)


def log_epoch(writer, cfg: Config, step: int, val_metrics: dict, scores, labels, epoch_time: float) -> None:
    if writer is None:
        return
    for name, value in val_metrics.items():
        if "/" in name:   # "calibrated/f1_micro" -> val_calibrated/f1_micro
            prefix, name = name.split("/", 1)
            writer.add_scalar(f"val_{prefix}/{name}", value, step)
        else:
            writer.add_scalar(f"val/{name}", value, step)
    writer.add_scalar("train/epoch_time_s", epoch_time, step)
    per_label_ap = metrics.average_precision(scores, labels, average="none")
    per_label_ap = torch.as_tensor(per_label_ap, dtype=torch.float32)
    per_label_ap = per_label_ap[torch.isfinite(per_label_ap)]
    if per_label_ap.numel():
        writer.add_histogram("val/ap_per_label", per_label_ap, step)
    # micro PR curve over a fixed subsample of rows (every entry of those rows)
    num_rows = scores.shape[0]
    take = min(num_rows, max(1, cfg.eval.pr_curve_samples // max(scores.shape[1], 1)))
    rows = np.sort(np.random.default_rng(cfg.train.seed).choice(num_rows, take, replace=False))
    targets = torch.from_numpy(np.asarray(labels[rows].todense())).flatten() > 0
    writer.add_pr_curve("val/pr_curve_micro", targets, scores[torch.from_numpy(rows)].flatten(), step)
    writer.flush()


def log_final(writer, cfg: Config, results: dict) -> None:
    split = "test_calibrated" if "test_calibrated" in results else "val_calibrated"
    hparams = {}
    for section, values in to_dict(cfg).items():
        for key, value in values.items():
            hparams[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    final = {f"hparams/{split}/{k}": v for k, v in results[split].items()
             if isinstance(v, (int, float)) and math.isfinite(v)}
    writer.add_hparams(hparams, final, run_name="hparams")
