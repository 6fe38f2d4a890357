"""TensorBoard logging of a training run: config and label statistics at the start, validation
metrics, per-label AP histogram and a micro PR curve per epoch, hparams at the end; with
``output.figures`` the diagnostic figures of :mod:`xmlc.figures` per epoch (``figures/*``) and at
the end (``final/*``, also written as ``RUN_DIR/figures/*.png``).

Only rank 0 writes; every function takes the writer :func:`open_writer` returned.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from xmlc import figures, metrics, stats
from xmlc.config import Config, dump_config, to_dict

__all__ = ["open_writer", "log_run_start", "log_epoch", "log_final", "log_figures", "write_final_figures",
           "remove_figures", "FIGURES_DIR"]

FIGURES_DIR = "figures"   # RUN_DIR/figures/<name>.png


def open_writer(out: Path, *, resumed: bool, step: int):
    """A ``SummaryWriter`` logging into the run directory ``out``.

    A fresh run replaces the events of an earlier run in ``out``; a resumed one drops the
    events logged after ``step``, the step its checkpoint was saved at.
    """
    from torch.utils.tensorboard import SummaryWriter

    if not resumed:   # a fresh run in an existing directory replaces that directory's run
        for old in out.glob("events.out.tfevents.*"):
            old.unlink()
        for old in (out / "hparams").glob("events.out.tfevents.*"):
            old.unlink()
    # purge_step drops events logged after the checkpoint a resumed run restarts from
    return SummaryWriter(log_dir=str(out), purge_step=step if resumed else None)


def log_run_start(writer, cfg: Config, counts, num_train: int, pos_weight) -> None:
    """The resolved config as text; histograms of the label counts and of the pos_weight."""
    writer.add_text("config", "    " + dump_config(cfg).replace("\n", "\n    "), 0)
    neg_pos = stats.pos_weight_from_counts(counts, num_train)
    writer.add_histogram("label_stats/pos_weight_neg_pos", neg_pos, 0)
    if pos_weight is not None:
        writer.add_histogram("label_stats/pos_weight_used", pos_weight, 0)
    writer.add_histogram("label_stats/label_count", torch.as_tensor(counts, dtype=torch.float32), 0)


def log_epoch(writer, step: int, val_metrics: dict, scores, labels, epoch_time: float, *,
              pr_curve_samples: int, seed: int, figure_inputs: dict | None = None) -> None:
    """Validation metrics (``"calibrated/x"`` -> ``val_calibrated/x``, others ``val/x``), the epoch
    time, a histogram of per-label AP and a micro PR curve over about ``pr_curve_samples``
    entries (whole rows, drawn with ``seed``) of ``scores`` (N, L) against CSR ``labels``; with
    ``figure_inputs`` (the keyword arguments of :func:`xmlc.figures.run_figures` besides scores,
    targets and ap) also the diagnostic figures, built from these scores and this per-label AP.
    """
    for name, value in val_metrics.items():
        if "/" in name:   # "calibrated/f1_micro" -> val_calibrated/f1_micro
            prefix, name = name.split("/", 1)
            writer.add_scalar(f"val_{prefix}/{name}", value, step)
        else:
            writer.add_scalar(f"val/{name}", value, step)
    writer.add_scalar("train/epoch_time_s", epoch_time, step)
    all_ap = torch.as_tensor(metrics.average_precision(scores, labels, average="none"), dtype=torch.float32)
    per_label_ap = all_ap[torch.isfinite(all_ap)]
    if per_label_ap.numel():
        writer.add_histogram("val/ap_per_label", per_label_ap, step)
    if figure_inputs is not None:
        log_figures(writer, figures.run_figures(scores, labels, ap=all_ap, title=f"validation, step {step:,}",
                                                **figure_inputs), step)
    # micro PR curve over a fixed subsample of rows (every entry of those rows)
    num_rows = scores.shape[0]
    take = min(num_rows, max(1, pr_curve_samples // max(scores.shape[1], 1)))
    rows = np.sort(np.random.default_rng(seed).choice(num_rows, take, replace=False))
    targets = torch.from_numpy(np.asarray(labels[rows].todense())).flatten() > 0
    writer.add_pr_curve("val/pr_curve_micro", targets, scores[torch.from_numpy(rows)].flatten(), step)
    writer.flush()


def log_final(writer, cfg: Config, results: dict) -> None:
    """Every config key as an hparam beside the final calibrated metrics (test, else validation)."""
    split = "test_calibrated" if "test_calibrated" in results else "val_calibrated"
    hparams = {}
    for section, values in to_dict(cfg).items():
        for key, value in values.items():
            hparams[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    final = {f"hparams/{split}/{k}": v for k, v in results[split].items()
             if isinstance(v, (int, float)) and math.isfinite(v)}
    writer.add_hparams(hparams, final, run_name="hparams")


def log_figures(writer, figs: dict, step: int, *, prefix: str = "figures") -> None:
    """``add_figure`` each ``{name: Figure}`` under ``prefix/name`` (IMAGES tab)."""
    for name, fig in figs.items():
        writer.add_figure(f"{prefix}/{name}", fig, step, close=False)   # not pyplot-managed: nothing to close


def write_final_figures(out: Path, writer, step: int, split: str, scores, labels, *, train_counts, num_train: int,
                        buckets, thresholds, pos_weight, calibration: str, pos_weight_power: float = 1.0,
                        pos_weight_max: float | None = None) -> list[Path]:
    """The run's figures from the final ``scores`` of ``split`` plus the label long tail of the
    training split: PNG files in ``out/figures/`` and, with a writer, ``final/<name>`` in TensorBoard.

    Returns the paths written.
    """
    figs = figures.run_figures(scores, labels, train_counts=train_counts, buckets=buckets, thresholds=thresholds,
                               pos_weight=pos_weight, calibration=calibration, title=f"{split}, final model")
    figs["long_tail"] = figures.long_tail(train_counts, num_train, buckets=buckets, title="training split",
                                          power=pos_weight_power, max_value=pos_weight_max)
    paths = [figures.save_png(fig, out / FIGURES_DIR / f"{name}.png") for name, fig in figs.items()]
    if writer is not None:
        log_figures(writer, figs, step, prefix="final")
        writer.flush()
    return paths


def remove_figures(out: Path) -> None:
    """Delete the PNGs a previous run left in ``out/figures/`` (a fresh run replaces its directory's run)."""
    for old in (out / FIGURES_DIR).glob("*.png"):
        old.unlink()
