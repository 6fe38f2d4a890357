"""Train a multilabel classifier: ``python -m xmlc.train [--config FILE] [section.key=value ...]``.

With no arguments it trains the default MLP on the built-in synthetic data set. The file reads
top to bottom as the run goes:

1. :func:`main` resolves the config (defaults <- YAML file <- dotted overrides; or a
   checkpoint with ``--resume``) and maps the errors a user can fix to a one-line message and
   an exit status (:mod:`xmlc.cli`);
2. :func:`run` builds: train / val / test (XMC files or a synthetic preset), the label
   statistics of train (:class:`LabelStats`), model, loss, AdamW and a warmup +
   cosine/constant schedule (:func:`start_training`);
3. :func:`fit`: per epoch :func:`train_one_epoch`, validation (:class:`Evaluator`),
   TensorBoard, ``last.pt`` / ``best.pt`` (the run directory: :class:`xmlc.train.monitor.RunFiles`),
   early stopping;
4. :func:`finish`: best weights, per-label thresholds fitted on validation
   (``xmlc.eval.calibrate``); with ``train.refit`` a fresh model trained on train + validation for
   the selected number of epochs replaces them (:func:`refit`, the thresholds stay); test
   scored at 0.5 and at the calibrated thresholds, ``metrics.json`` and a short table.

With ``train.crossfit`` (an ensemble's alternative to the refit) step 2 trains on train +
validation, each member leaving out its own share of the validation rows (:func:`crossfit_folds`,
:class:`Folds`), and validation scores each row with the member that left it out, so one
training both selects and ships.

A run that ends early raises a :class:`RunStopped` (:class:`StepLimit`, :class:`Interrupted`,
:class:`NonFiniteLoss`) after saving what ``--resume`` needs; its ``status`` is the exit status.

Under ``torchrun --nproc_per_node=N -m xmlc.train ...`` the same code runs data parallel:
``data.batch_size`` is the global batch, each process trains on its shard
(``DistributedSampler``), gradients are all-reduced (DDP), validation scores are gathered so
metrics cover the whole split, and only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from xmlc import data as xdata, losses, stats
from xmlc.train._malloc import reuse_large_blocks
from xmlc.eval.calibrate import prior_thresholds, thresholds_for
from xmlc.checkpoint import CheckpointError, check_run_dir, load_checkpoint, load_weights, set_rng_state
from xmlc.cli import ExitStatus, report_error
from xmlc.config import (Config, ConfigError, DataConfig, EvalConfig, LossConfig, ModelConfig, TrainConfig,
                         apply_overrides, dump_config, from_dict, load_config)
from xmlc.data import concat_data, load_splits
from xmlc.train.distributed import (DistEnv, ResumableSampler, agree, any_process, data_parallel, launched_world_size,
                              setup_distributed, steps_per_epoch, teardown_distributed)
from xmlc.inference import predict_scores
from xmlc.eval.summary import metrics_report, results_table, threshold_metrics
from xmlc.models import build_model, ensemble_loss, init_output_bias
from xmlc.train.monitor import RunFiles
from xmlc.optim import build_optimizer, build_scheduler, clip_grad_norm_, optimizer_state_report

__all__ = ["main", "run", "fit", "finish", "refit", "train_one_epoch", "RunStopped", "StepLimit", "Interrupted",
           "NonFiniteLoss", "LabelStats", "Evaluator"]


# ---------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m xmlc.train",
        description="Train a multilabel classifier. Without arguments: the default MLP on "
                    "built-in synthetic data. Overrides look like optim.lr=3e-4 or "
                    "data.train=path/train.txt (values are parsed as YAML).")
    parser.add_argument("--config", help="YAML config file (sections: data, model, loss, optim, "
                                         "train, eval, output)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run saved in RUN (a run "
                        "directory or a .pt checkpoint) with its own config; overrides still apply")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """CLI entry point; returns the exit status (:class:`xmlc.cli.ExitStatus`; 128 + N after signal N)."""
    args = parse_args(argv)
    reuse_large_blocks()   # the command owns its process: big freed tensors stay in the heap (xmlc/train/_malloc.py)
    try:
        cfg, resume = resolve_config(args)
        if args.print_config:
            print(dump_config(cfg), end="")
        else:
            run(cfg, resume=resume)
    except RunStopped as stopped:   # already reported, last.pt saved where it can be resumed
        return stopped.status
    except Exception as exc:        # a user error: one line and its status; anything else: traceback
        return report_error(exc)
    return ExitStatus.OK


def resolve_config(args) -> tuple[Config, dict | None]:
    """Config from (``--resume`` checkpoint | ``--config`` file | defaults) plus overrides."""
    if args.resume is None:
        return load_config(args.config, args.overrides), None
    if args.config is not None:
        raise ConfigError("give either --config or --resume (a resumed run keeps its own config; "
                          "change it with overrides)")
    path = Path(args.resume)
    ckpt = load_checkpoint(path)
    if "optimizer" not in ckpt:
        raise CheckpointError(f"checkpoint {path} holds the best weights only, not the training state; "
                              f"resume from the run directory (its last.pt)")
    cfg = from_dict(Config, ckpt["config"])
    cfg.output.dir = str(path if path.is_dir() else path.parent)
    return apply_overrides(cfg, args.overrides), ckpt


class RunStopped(Exception):
    """The run ended before its last epoch; ``status`` is the job's exit status."""

    status: int = ExitStatus.OK


class StepLimit(RunStopped):
    """``train.max_steps`` optimizer steps are done (exit 0; ``--resume`` continues)."""


class Interrupted(RunStopped):
    """SIGINT or SIGTERM arrived (on some process); exit 128 + the signal, ``--resume`` continues."""

    def __init__(self, signum: int | None):
        self.signum = signum or signal.SIGTERM   # None: another process got the signal
        self.status = ExitStatus.for_signal(self.signum)
        super().__init__(f"signal {self.signum}")


class NonFiniteLoss(RunStopped):
    """A NaN/inf loss on some process, caught before that step touched the parameters (exit 1)."""

    status = ExitStatus.FAILED


# ---------------------------------------------------------------------------------------
# The run: build, fit, finish


def run(cfg: Config, *, resume: dict | None = None) -> dict:
    """Train, calibrate and test as ``cfg`` says, writing the run directory ``output.dir``.

    Args:
        cfg: the resolved config tree.
        resume: a checkpoint dict (``last.pt``) to continue from, or None for a fresh run.

    Returns:
        The final metrics, as written to ``metrics.json``.

    Raises:
        RunStopped: the run ended early (signal, ``train.max_steps``, non-finite loss) after
            saving what it could; ``ConfigError`` / ``DataFileError`` before any data is read
            or trained on.
    """
    check_config(cfg, world_size=launched_world_size())
    check_run_dir(cfg.output.dir)
    env = setup_distributed(cfg.train.device)
    say = _printer(env.rank == 0)
    files = None
    try:
        seed_everything(cfg.train.seed)
        splits = load_splits(cfg.data, seed=cfg.train.seed, features=cfg.features, say=say)
        train_set, val_set, test_set = splits
        say(f"data: train {len(train_set):,} / val {len(val_set):,} / test "
            f"{len(test_set) if test_set is not None else 0:,} examples, {train_set.num_features:,} "
            f"features, {train_set.num_labels:,} labels")
        label_stats = LabelStats.of(train_set, cfg.loss)
        prior = label_stats.output_prior() if cfg.model.output_bias == "prior" else None
        model = new_model(cfg.model, train_set.num_features, train_set.num_labels, prior).to(env.device)
        loss_fn = losses.build_loss(cfg.loss, pos_weight=label_stats.pos_weight,
                                    weight=label_stats.label_weight).to(env.device)
        fit_set, folds = train_set, None
        if cfg.train.crossfit:
            fit_set, folds = crossfit_folds(train_set, val_set, cfg.model.ensemble, seed=cfg.train.seed)
            say(f"crossfit: {len(fit_set):,} training rows; each of the {cfg.model.ensemble} members leaves out "
                f"~{len(val_set) / cfg.model.ensemble:,.0f} validation rows and scores them")
        tr = start_training(cfg, env, fit_set, model, loss_fn, resume=resume, folds=folds)
        files = RunFiles(cfg, train_set, label_stats, write=env.rank == 0)
        if resume is not None:
            tr.best_model = files.best_model(env.device)
            say(f"resumed from {files.dir} at epoch {tr.progress.epoch + 1}, step {tr.progress.step}")
        files.open(label_stats, resumed=resume is not None, step=tr.progress.step)
        evaluator = Evaluator(cfg.eval, label_stats, env, amp=cfg.train.amp,
                              val_members=None if folds is None else folds.val_members)
        val_loader = make_eval_loader(val_set, cfg.data, seed=cfg.train.seed, env=env)
        epoch_times = fit(tr, val_loader, val_set.labels, evaluator, files, tcfg=cfg.train,
                          grad_clip=cfg.optim.grad_clip, env=env, say=say)
        return finish(tr, splits, val_loader, evaluator, files, cfg, env, prior=prior,
                      epoch_times=epoch_times, say=say)
    finally:
        if files is not None:
            files.close()
        leaving = sys.exc_info()[1]   # the exception on its way out, if any
        teardown_distributed(env, barrier=leaving is None or isinstance(leaving, RunStopped))


def check_config(cfg: Config, *, world_size: int) -> None:
    """What each key alone cannot say, checked before any data is read: the early-stopping
    metric against ``eval.ks``, and a global batch that splits evenly over the processes."""
    names = ["auprc_micro", "auprc_macro", "f1_micro", "f1_macro",
             *[f"{m}@{k}" for m in ("p", "ndcg", "psp") for k in cfg.eval.ks],
             *[f"auprc_macro_{b}" for b in stats.BUCKET_NAMES]]
    if cfg.train.early_stopping_metric not in names:
        raise ConfigError(f"config key 'train.early_stopping_metric' must be one of {', '.join(names)}; "
                          f"got {cfg.train.early_stopping_metric!r}")
    if cfg.train.refit and cfg.train.crossfit:
        raise ConfigError("config keys 'train.refit' and 'train.crossfit' are two ways to train on the "
                          "validation rows; set one of them, not both (configs/text.yaml sets crossfit: for the "
                          "refit, give train.refit=true train.crossfit=false)")
    if cfg.train.crossfit and cfg.model.ensemble < 2:
        raise ConfigError(f"config key 'train.crossfit' needs an ensemble (model.ensemble >= 2; got "
                          f"{cfg.model.ensemble}): each member leaves out a different share of the validation rows; "
                          f"with one model set train.crossfit=false (and train.refit=true to train on them too)")
    if cfg.data.batch_size % world_size:
        raise ConfigError(f"config key 'data.batch_size' ({cfg.data.batch_size}) must be divisible "
                          f"by the number of processes ({world_size})")


def fit(tr: Training, val_loader, val_labels, ev: Evaluator, files: RunFiles, *, tcfg: TrainConfig,
        grad_clip: float | None, env: DistEnv, say) -> list[float]:
    """Train epochs until ``train.epochs`` or early stopping, validating after each.

    After each epoch: validation metrics (at 0.5, and ``calibrated/...`` at thresholds fitted
    on these same scores), TensorBoard, and the checkpoints when due
    (:meth:`RunFiles.save_epoch`); the weights of the epoch with the best early-stopping metric
    are kept in ``tr.best_model``.

    Returns:
        The training time (s) of each epoch run here.

    Raises:
        RunStopped: after saving ``last.pt`` (not after a non-finite loss) and saying why.
    """
    metric, epoch_times, p = tcfg.early_stopping_metric, [], tr.progress
    with StopOnSignal() as stop:
        try:
            while p.epoch < tcfg.epochs:
                start = time.perf_counter()
                tr.train_epoch(tcfg=tcfg, grad_clip=grad_clip, env=env, stop=stop, writer=files.writer)
                epoch_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                val = ev.calibrate(tr.model, val_loader, val_labels)
                val_metrics = val.metrics | _prefixed(val.calibrated, "calibrated/")
                tr.end_epoch(val_metrics, metric, tcfg.patience_margin, tcfg.select_margin)
                eval_time = time.perf_counter() - start
                stopping = bool(tcfg.patience) and p.bad_epochs >= tcfg.patience
                figures_time = files.log_epoch(p.step, val_metrics, val.scores, val_labels, epoch_times[-1],
                                               ev.figure_inputs(val.thresholds), epoch=p.epoch,
                                               last=stopping or p.epoch >= tcfg.epochs)
                kept = "" if p.selected_epoch == p.best_epoch else f", keeping epoch {p.selected_epoch}"
                say(f"epoch {p.epoch}/{tcfg.epochs}: {metric} {val_metrics[metric]:.4f} (best "
                    f"{p.best_value:.4f} @ epoch {p.best_epoch}{kept}); train {epoch_times[-1]:.1f} s, "
                    f"eval {eval_time:.1f} s" + ("" if figures_time is None else f", figures {figures_time:.1f} s"))
                files.save_epoch(tr, last=stopping or p.epoch >= tcfg.epochs)
                del val   # its (N_val, L) dense scores are not kept alive into the final phase
                if stopping:
                    say(f"early stopping: no improvement in {metric} for {p.bad_epochs} epochs"
                        + (f" (each more than {tcfg.patience_margin:.0%} below the best)" if tcfg.patience_margin else ""))
                    break
                if any_process(stop.requested, env):
                    raise Interrupted(stop.signum)
        except RunStopped as stopped:
            report_stop(stopped, tr, files, say)
            raise
    return epoch_times


def report_stop(stopped: RunStopped, tr: Training, files: RunFiles, say) -> None:
    """Save ``last.pt`` for ``--resume`` (not after a non-finite loss) and say why the run stopped."""
    p, last = tr.progress, files.dir / "last.pt"
    if isinstance(stopped, NonFiniteLoss):
        files.save_best(tr)
        say(f"error: non-finite loss at step {p.step + 1} (epoch {p.epoch + 1}); stopped without "
            f"updating. Last good checkpoint: {last if last.is_file() else 'none (no epoch finished)'}")
        return
    files.save_progress(tr)
    why = f"signal {stopped.signum}" if isinstance(stopped, Interrupted) else f"train.max_steps={p.step}"
    say(f"stopped by {why} at step {p.step} (epoch {p.epoch + 1}); saved {last}. "
        f"Continue with: python -m xmlc.train --resume {files.dir}")


def finish(tr: Training, splits, val_loader, ev: Evaluator, files: RunFiles, cfg: Config, env: DistEnv, *, prior,
           epoch_times: list[float], say) -> dict:
    """The final phase: best weights, thresholds fitted on validation, the optional refit, test,
    then the outputs (:meth:`RunFiles.finish`) and the table; returns the metrics."""
    train_set, val_set, test_set = splits
    optimizer_state = optimizer_state_report(tr.optimizer, tr.model)   # before the refit drops it
    if tr.best_model is not None:
        tr.model.load_state_dict(tr.best_model)
        tr.best_model = None   # now in tr.model: one copy of the weights fewer through refit and test
    val = ev.calibrate(tr.model, val_loader, val_set.labels)
    thresholds, results = val.thresholds, {"val": val.metrics, "val_calibrated": val.metrics | val.calibrated}
    # the final figures' scores: test when there is a test split, else these validation scores
    final_scores = ("validation", val.scores, val_set.labels) if test_set is None else None
    del val
    test_loader = None if test_set is None else make_eval_loader(test_set, cfg.data, seed=cfg.train.seed, env=env)
    if cfg.train.refit:
        if test_set is not None:   # the selected model on test, to show what the refit changed
            results["test_before_refit"] = ev.test(tr.model, test_loader, test_set.labels,
                                                   thresholds)[0]["test_calibrated"]
        tr.optimizer.state.clear()   # the first phase's Adam moments (2x the weights) are not needed again
        results["refit"] = refit_selected(tr, cfg, env, train_set, val_set, prior=prior, files=files, say=say)
    if test_set is not None:
        test_results, test_scores = ev.test(tr.model, test_loader, test_set.labels, thresholds)
        results |= test_results
        final_scores = ("test", test_scores, test_set.labels)
        del test_scores
    results |= run_summary(tr.progress, cfg.train.early_stopping_metric, splits, epoch_times,
                           rows_per_epoch=len(tr.sampler.dataset))
    if tr.folds is not None:
        results["crossfit"] = {"members": tr.folds.members, "num_train": len(tr.folds.held_out_by),
                               "val_rows_per_member": torch.bincount(tr.folds.val_members,
                                                                     minlength=tr.folds.members).tolist()}
    results["optimizer_state"] = optimizer_state
    files.finish(tr, thresholds, results, final_scores=final_scores,
                 figure_inputs=ev.figure_inputs(thresholds))
    say(results_table(results))
    say(files.describe())
    return results


def refit_selected(tr: Training, cfg: Config, env: DistEnv, train_set, val_set, *, prior, files: RunFiles, say) -> dict:
    """:func:`refit` for the selected number of epochs into ``tr.model``; returns its info.

    Raises:
        RunStopped: after saying that no metrics were written (``last.pt`` / ``best.pt`` keep
            the finished first phase, so ``--resume`` runs the refit again).
    """
    p = tr.progress
    with StopOnSignal() as stop:
        try:
            return refit(tr.model, cfg, env, train_set, val_set, tr.loss_fn, prior=prior, stop=stop, say=say,
                         epochs=p.selected_epoch if p.selected_epoch > 0 else p.epoch)
        except Interrupted as stopped:
            say(f"refit stopped by signal {stopped.signum}; no metrics written. The training itself is "
                f"saved: python -m xmlc.train --resume {files.dir} runs the refit again")
            raise
        except NonFiniteLoss:
            say("error: non-finite loss in the refit on train + validation; no metrics written")
            raise


def run_summary(p: Progress, metric: str, splits, epoch_times: list[float], *, rows_per_epoch: int) -> dict:
    """The run-level entries of ``metrics.json``: selection, steps, speed, memory and sizes
    (``rows_per_epoch``: the rows an epoch trains on, train + validation under crossfit)."""
    train_set, val_set, test_set = splits
    epoch_time = float(np.mean(epoch_times)) if epoch_times else None
    return {"best_epoch": p.best_epoch, "best_metric": {metric: p.best_value}, "selected_epoch": p.selected_epoch,
            "epochs": p.epoch,
            "steps": p.step, "epoch_time_s": epoch_time,
            "train_examples_per_s": rows_per_epoch / epoch_time if epoch_times else None,
            "peak_rss_mb": peak_rss_mb(), "num_train": len(train_set), "num_val": len(val_set),
            "num_test": len(test_set) if test_set is not None else 0,
            "num_features": train_set.num_features, "num_labels": train_set.num_labels}


# ---------------------------------------------------------------------------------------
# What a run is built from


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint."""

    step: int = 0                # optimizer steps done
    epoch: int = 0               # epoch in progress (0-based)
    batch_in_epoch: int = 0      # batches of `epoch` done: the data-order state
    best_value: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0          # epochs in a row without improvement (beyond train.patience_margin)
    history: list = field(default_factory=list)   # per-epoch validation metrics
    selected_epoch: int = -1     # the epoch whose weights ship: best_epoch, or the latest within train.select_margin

    def __post_init__(self):
        if self.selected_epoch < 0:   # a checkpoint from before select_margin: the best epoch was kept
            self.selected_epoch = self.best_epoch

    def end_epoch(self, val_metrics: dict, metric: str, margin: float = 0.0, select_margin: float = 0.0) -> bool:
        """Close the epoch just trained with its validation metrics; True if its weights are now
        the ones to keep: ``metric`` improved on the best so far (NaN never does) or, with
        ``select_margin``, is within that share of the best (``train.select_margin``: the latest
        such epoch is kept). ``bad_epochs`` counts the epochs in a row without improvement that
        are more than ``margin`` (a share of the best) below the best; an epoch within the margin
        resets it (``train.patience_margin``)."""
        value = val_metrics[metric]
        improved = value > self.best_value
        self.history.append({"epoch": self.epoch + 1, "step": self.step, **val_metrics})
        if improved:
            self.best_value, self.best_epoch, self.bad_epochs = value, self.epoch + 1, 0
        elif self._near_best(value, margin):
            self.bad_epochs = 0   # near the best: a plateau, not past the peak
        else:
            self.bad_epochs += 1
        selected = improved or self._near_best(value, select_margin)
        if selected:
            self.selected_epoch = self.epoch + 1
        self.next_epoch()
        return selected

    def _near_best(self, value: float, margin: float) -> bool:
        """``value`` within ``margin`` (a share, > 0) of the best so far; never for margin 0 or NaN."""
        return margin > 0 and value >= self.best_value - margin * abs(self.best_value)

    def next_epoch(self) -> None:
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0


@dataclass
class LabelStats:
    """Label statistics of the training split: what the loss, the output bias, the metrics and
    the checkpoint need. Validation and test never contribute."""

    counts: np.ndarray                  # (L,) int64 positives per label
    num_examples: int                   # N, rows of the training split
    pos_weight: torch.Tensor | None     # (L,) the loss's positive weight (``loss.pos_weight``)
    label_weight: torch.Tensor | None   # (L,) the loss's per-label weight (``loss.label_weight``)
    buckets: np.ndarray                 # (L,) head / torso / tail bucket of each label
    propensities: np.ndarray            # (L,) for PSP@k

    @classmethod
    def of(cls, data: xdata.XMCData, lcfg: LossConfig) -> LabelStats:
        """The statistics of ``data``'s labels, loss weights as the ``loss`` section says."""
        counts, num_examples = stats.label_and_example_counts(data.labels, data.num_labels)
        pos_weight, label_weight = loss_weights(lcfg, counts, num_examples)
        return cls(counts, num_examples, pos_weight, label_weight, stats.frequency_buckets(counts),
                   stats.propensity(counts, num_examples))

    def output_prior(self) -> torch.Tensor:
        """(L,) the constant probability that minimises the loss: the positive rate ``p``, or with
        ``pos_weight`` w the minimiser of weighted BCE, ``w p / (w p + 1 - p)``."""
        prior = torch.as_tensor(self.counts, dtype=torch.float32) / max(self.num_examples, 1)
        if self.pos_weight is not None:
            prior = self.pos_weight * prior / (self.pos_weight * prior + 1 - prior)
        return prior

    def for_checkpoint(self) -> dict:
        """What ``evaluate`` / ``predict`` need from a checkpoint alone (plain tensors and ints)."""
        return {"counts": torch.as_tensor(self.counts, dtype=torch.int64),
                "num_examples": int(self.num_examples), "pos_weight": self.pos_weight}


def loss_weights(lcfg: LossConfig, counts, num_examples: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(pos_weight (L,) or None, per-label loss weight (L,) or None) from the ``loss`` section."""
    pos_weight = None
    if lcfg.pos_weight == "neg_pos":
        pos_weight = stats.pos_weight_from_counts(counts, num_examples, power=lcfg.pos_weight_power,
                                                  max_value=lcfg.pos_weight_max)
    weight = None
    if lcfg.label_weight == "class_balanced":
        weight = stats.class_balanced_weights(counts)
    elif lcfg.label_weight == "propensity":
        inverse = 1.0 / stats.propensity(counts, num_examples)
        weight = inverse / inverse.mean()   # normalised to mean 1, like class_balanced
    return pos_weight, (None if weight is None else weight.float())


def new_model(mcfg: ModelConfig, num_features: int, num_labels: int, prior: torch.Tensor | None = None) -> nn.Module:
    """The ``model`` section's encoder; output bias at ``log(p / (1 - p))`` of ``prior`` (L,) if given."""
    model = build_model(mcfg, num_features, num_labels)
    if prior is not None:
        init_output_bias(model, prior)
    return model


@dataclass
class Training:
    """One training phase: the model, what updates it, its data order and where it stands."""

    model: nn.Module                 # the bare model: state_dict, evaluation
    step_model: nn.Module            # what the loop calls: ``model`` or its DDP wrap
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: ResumableSampler
    loader: torch.utils.data.DataLoader
    progress: Progress = field(default_factory=Progress)
    best_model: dict | None = None   # weights of the selected (best) epoch so far
    folds: Folds | None = None       # train.crossfit: which member leaves out which row

    def train_epoch(self, *, tcfg: TrainConfig, grad_clip: float | None, env: DistEnv, stop,
                    writer=None) -> None:
        """:func:`train_one_epoch` on the current epoch, from the batch ``progress`` has reached."""
        self.sampler.set_epoch(self.progress.epoch, skip_batches=self.progress.batch_in_epoch)
        train_one_epoch(self.step_model, self.loader, self.loss_fn, self.optimizer, self.scheduler,
                        progress=self.progress, tcfg=tcfg, grad_clip=grad_clip, env=env, stop=stop,
                        writer=writer, folds=self.folds)

    def end_epoch(self, val_metrics: dict, metric: str, margin: float = 0.0, select_margin: float = 0.0) -> bool:
        """:meth:`Progress.end_epoch`, keeping the weights of the epoch it selects."""
        selected = self.progress.end_epoch(val_metrics, metric, margin, select_margin)
        if selected:
            weights = self.model.state_dict()
            if self.best_model is None:
                self.best_model = {k: v.detach().clone() for k, v in weights.items()}
            else:   # into the same buffers: a 1 GB table is not allocated (page-faulted) afresh each time
                for name, value in weights.items():
                    self.best_model[name].copy_(value)
        return selected


def start_training(cfg: Config, env: DistEnv, dataset, model: nn.Module, loss_fn: nn.Module, *,
                   resume: dict | None = None, folds: Folds | None = None) -> Training:
    """Sampler, loader, AdamW and schedule to train ``model`` on ``dataset``; with ``resume`` (a
    checkpoint dict) the model, optimizer, schedule, progress and RNG states continue from it;
    with ``folds`` (``train.crossfit``) each member leaves out its rows of ``dataset``.

    Each process takes its share of the global ``data.batch_size``; the schedule spans
    ``train.epochs`` epochs of ``dataset``.
    """
    batch_size = cfg.data.batch_size // env.world_size
    sampler = ResumableSampler(dataset, env, seed=cfg.train.seed, batch_size=batch_size)
    loader = make_loader(dataset, batch_size, sampler, cfg.data, seed=cfg.train.seed, env=env)
    total_steps = steps_per_epoch(len(dataset), cfg.data.batch_size, env.world_size) * cfg.train.epochs
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.optim, optimizer, total_steps=total_steps)
    progress = Progress()
    if resume is not None:
        load_weights(model, resume["model"], source="the --resume checkpoint")
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        progress = Progress(**resume["progress"])
        set_rng_state(resume["rng"])
    return Training(model, data_parallel(model, env), loss_fn, optimizer, scheduler, sampler, loader, progress,
                    folds=folds)


class Folds(NamedTuple):
    """``train.crossfit``: which ensemble member leaves out which row (:func:`crossfit_folds`).

    Under DDP each process averages a member's loss over the rows of its own shard that the
    member keeps, and DDP averages those: the same as one process when the shards keep as many
    rows each, slightly reweighted otherwise (tested: ``tests/test_train.py``).
    """

    held_out_by: torch.Tensor   # (N_fit,) int64: the member that never trains on the row, -1 for none
    members: int                # M

    @property
    def val_members(self) -> torch.Tensor:
        """(N_val,) int64: the member that scores each validation row (the rows after train's)."""
        return self.held_out_by[self.held_out_by >= 0]

    def keep(self, row_ids: torch.Tensor) -> torch.Tensor | None:
        """(M, B) bool: which rows of a batch (its ``row_ids``, CPU) each member trains on; None: all."""
        held = self.held_out_by[row_ids]
        if bool((held < 0).all()):
            return None
        return held[None, :] != torch.arange(self.members)[:, None]


def crossfit_folds(train_set, val_set, members: int, *, seed: int):
    """(train + validation as one training set, :class:`Folds`): the validation rows are dealt
    out to the ``members`` at random (seeded by ``seed``; shares differ by at most one row), and
    member m trains on every row but its own share."""
    share = torch.from_numpy(np.random.default_rng(seed).permutation(len(val_set)) % members).long()
    held_out_by = torch.cat([torch.full((len(train_set),), -1, dtype=torch.int64), share])
    return concat_data(train_set, val_set), Folds(held_out_by, members)


class Validation(NamedTuple):
    """One scoring of the validation split (:meth:`Evaluator.calibrate`)."""

    metrics: dict             # metrics at 0.5
    calibrated: dict          # threshold metrics at ``thresholds``
    thresholds: torch.Tensor  # (L,) fitted on ``scores``
    scores: torch.Tensor      # (N, L)


@dataclass
class Evaluator:
    """Scores a split and computes its metrics with the training split's label statistics."""

    ecfg: EvalConfig
    label_stats: LabelStats
    env: DistEnv
    amp: bool = True
    val_members: torch.Tensor | None = None   # train.crossfit: the member that scores each validation row

    def scores(self, model, loader, labels, members: torch.Tensor | None = None) -> torch.Tensor:
        """(N, L) probabilities of every row of ``loader``'s split (gathered under DDP); the
        member mean, or with ``members`` (N,) row i scored by member ``members[i]``."""
        return predict_scores(model, loader, labels.shape[0], device=self.env.device, amp=self.amp,
                              world_size=self.env.world_size, members=members)

    def report(self, scores, labels, thresholds: dict | None = None) -> dict:
        """:func:`xmlc.eval.metrics.metrics_report` with ``eval.ks`` and the training split's buckets."""
        ls = self.label_stats
        return metrics_report(scores, labels, thresholds, ks=tuple(self.ecfg.ks), buckets=ls.buckets,
                              propensities=ls.propensities)

    def calibrate(self, model, loader, labels) -> Validation:
        """Metrics at 0.5 and at per-label thresholds fitted (``eval.calibration``) on these scores
        of the validation split (out-of-fold under ``train.crossfit``)."""
        scores = self.scores(model, loader, labels, self.val_members)
        thresholds = thresholds_for(self.ecfg, scores, labels, self.label_stats.pos_weight)
        calibrated = threshold_metrics(scores, labels, thresholds, self.label_stats.buckets)
        return Validation(self.report(scores, labels)["at_0.5"], calibrated, thresholds, scores)

    def test(self, model, loader, labels, thresholds: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """Metrics at 0.5 ("test"), at ``thresholds`` ("test_calibrated") and, with a pos_weight, at
        the ln(pos_weight) logit correction ("test_prior", for comparison); and the scores (N, L)."""
        scores, pos_weight = self.scores(model, loader, labels), self.label_stats.pos_weight
        named = {"test_calibrated": thresholds}
        if pos_weight is not None:
            named["test_prior"] = prior_thresholds(pos_weight.cpu())
        report = self.report(scores, labels, named)
        return {"test": report.pop("at_0.5"), **report}, scores

    def figure_inputs(self, thresholds: torch.Tensor) -> dict:
        """What :func:`xmlc.eval.figures.run_figures` needs besides scores and labels."""
        ls = self.label_stats
        return {"train_counts": ls.counts, "buckets": ls.buckets, "thresholds": thresholds,
                "calibration": self.ecfg.calibration,
                "pos_weight": None if ls.pos_weight is None else ls.pos_weight.cpu()}


# ---------------------------------------------------------------------------------------
# Refit on train + validation


def refit(model, cfg: Config, env: DistEnv, train_set, val_set, loss_fn, *, epochs: int, prior=None, stop,
          say) -> dict:
    """Train a fresh model on train + validation for ``epochs`` epochs; copy its weights into ``model``.

    The run that selected ``epochs`` (on validation), repeated with the validation rows added
    to the training rows: same seed, initialisation (``prior`` as in :func:`new_model`), loss,
    optimizer, and a schedule spanning ``train.epochs`` epochs of the larger set, stopped after
    ``epochs`` of them, so the refit ends at the learning rate the selected model ended at.
    ``train.max_steps`` does not apply. The refit is not logged to TensorBoard. ``stop`` is a
    :class:`StopOnSignal`; ``say`` prints one progress line per epoch.

    Returns:
        ``{"epochs", "steps", "num_train", "time_s"}`` for ``metrics.json``.

    Raises:
        RunStopped: :class:`Interrupted` or :class:`NonFiniteLoss`; ``model`` is unchanged then.
    """
    data = concat_data(train_set, val_set)
    seed_everything(cfg.train.seed)
    fresh = new_model(cfg.model, data.num_features, data.num_labels, prior).to(env.device)
    tr = start_training(cfg, env, data, fresh, loss_fn)
    tcfg = dataclasses.replace(cfg.train, max_steps=None)
    start = time.perf_counter()
    while tr.progress.epoch < epochs:
        tr.train_epoch(tcfg=tcfg, grad_clip=cfg.optim.grad_clip, env=env, stop=stop)
        tr.progress.next_epoch()
        say(f"refit epoch {tr.progress.epoch}/{epochs} on train + validation ({len(data):,} examples)")
        if any_process(stop.requested, env):
            raise Interrupted(stop.signum)
    model.load_state_dict(fresh.state_dict())
    return {"epochs": epochs, "steps": tr.progress.step, "num_train": len(data),
            "time_s": time.perf_counter() - start}


# ---------------------------------------------------------------------------------------
# One epoch


def train_one_epoch(model, loader, loss_fn, optimizer, scheduler, *, progress: Progress, tcfg: TrainConfig,
                    grad_clip: float | None, env: DistEnv, stop, writer=None, folds: Folds | None = None) -> None:
    """One pass over ``loader`` (from where ``progress`` says), counting steps in ``progress``.

    Args:
        tcfg: the ``train`` section (``max_steps``, ``amp``, ``log_every``, ``progress``, ``epochs``).
        grad_clip: ``optim.grad_clip``, the max gradient norm, or None.
        env: :class:`DistEnv`; under DDP every process takes the same decisions.
        stop: :class:`StopOnSignal` (anything with ``requested`` and ``signum``).
        writer: TensorBoard writer for ``train/*`` every ``train.log_every`` steps, or None.
        folds: ``train.crossfit``'s :class:`Folds` (each member's loss leaves out its rows), or None.

    Raises:
        StepLimit: at ``train.max_steps``, before the next step.
        NonFiniteLoss: on a NaN/inf loss, before that step touches the parameters.
        Interrupted: after the step in flight when a SIGINT/SIGTERM arrived.
    """
    model.train()
    device = env.device
    amp = tcfg.amp and native_bf16(device)
    window_start, window_examples, window_steps, loss_sum = time.perf_counter(), 0, 0, 0.0
    with tqdm(loader, desc=f"epoch {progress.epoch + 1}/{tcfg.epochs}", leave=False, dynamic_ncols=True,
              disable=env.rank != 0 or not tcfg.progress, mininterval=0.5) as bar:
        for batch in bar:
            if tcfg.max_steps is not None and progress.step >= tcfg.max_steps:
                raise StepLimit(f"train.max_steps={tcfg.max_steps}")
            keep = None if folds is None else folds.keep(batch.row_ids)
            batch = batch.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(batch)
            loss = ensemble_loss(loss_fn, logits, batch.targets, keep)
            agreed = agree(loss.detach(), stop.requested, env)
            if agreed.nonfinite:
                raise NonFiniteLoss(f"non-finite loss at step {progress.step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            log_now = (progress.step + 1) % tcfg.log_every == 0
            # the norm costs a pass over every gradient: only to clip, or to log it
            grad_norm = (clip_grad_norm_(model.parameters(), grad_clip)
                         if grad_clip is not None or (log_now and writer is not None) else None)
            lr = optimizer.param_groups[0]["lr"]   # the rate this step used
            optimizer.step()
            scheduler.step()
            progress.step += 1
            progress.batch_in_epoch += 1
            window_examples += len(batch) * env.world_size
            window_steps += 1
            loss_sum += agreed.loss
            if log_now:
                elapsed = time.perf_counter() - window_start
                rate = window_examples / max(elapsed, 1e-9)
                mean_loss = loss_sum / window_steps
                bar.set_postfix(loss=f"{mean_loss:.4f}", ex_s=f"{rate:,.0f}", refresh=False)
                if writer is not None:
                    writer.add_scalar("train/loss", mean_loss, progress.step)
                    writer.add_scalar("train/lr", lr, progress.step)
                    writer.add_scalar("train/grad_norm", float(grad_norm), progress.step)
                    writer.add_scalar("train/examples_per_s", rate, progress.step)
                window_start, window_examples, window_steps, loss_sum = time.perf_counter(), 0, 0, 0.0
            if agreed.stop:
                raise Interrupted(stop.signum)


def native_bf16(device: torch.device) -> bool:
    """Whether ``train.amp`` turns bf16 autocast on for training steps on ``device``: on CUDA, and
    on CPUs with native bf16 matrix products (AVX512-BF16 or AMX), where the text recipe's wide
    layers run about 3x faster in bf16 (``benchmarks/bench_train.py --cases tricks``). Other CPUs
    emulate bf16, slower than float32, so they train in float32. Scoring (validation, test,
    predict) stays float32 on CPU."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(probe()) for probe in probes if probe is not None)


# ---------------------------------------------------------------------------------------
# Loaders


def make_loader(dataset, batch_size: int, sampler, dcfg: DataConfig, *, seed: int, env: DistEnv):
    """A loader over ``sampler``'s rows; ``data.num_workers`` workers, pinned memory on CUDA."""
    # xdata.make_loader seeds the loader's own generator, so creating iterators never draws
    # from the global RNG (dropout masks stay the same across a mid-epoch resume).
    return xdata.make_loader(dataset, batch_size, shuffle=False, seed=seed, num_workers=dcfg.num_workers,
                             pin_memory=env.device.type == "cuda", sampler=sampler)


def make_eval_loader(dataset, dcfg: DataConfig, *, seed: int, env: DistEnv):
    """This process's shard of ``dataset`` in order, in batches of ``data.eval_batch_size``."""
    sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=False)
    return make_loader(dataset, dcfg.eval_batch_size, sampler, dcfg, seed=seed, env=env)


# ---------------------------------------------------------------------------------------
# Seeds, signals, small helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class StopOnSignal:
    """Context manager: SIGINT/SIGTERM set ``requested`` (the loop saves and exits) instead of killing."""

    def __init__(self):
        self.requested, self.signum, self._old = False, None, {}

    def _handle(self, signum, frame):
        if self.requested:   # a second signal: stop now
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prefixed(d: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in d.items()}


def _printer(enabled: bool):
    def say(message: str) -> None:
        if enabled:
            tqdm.write(message)
    return say

