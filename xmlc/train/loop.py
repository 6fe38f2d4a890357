"""Train a multilabel classifier: ``python -m xmlc.train [--config FILE] [section.key=value ...]``.

With no arguments it trains the default MLP on the built-in synthetic data set. The file reads
top to bottom as the run goes:

1. :func:`main` resolves the config (defaults <- YAML file <- dotted overrides; or a run's
   ``last.pt`` with ``--resume``) and maps the errors a user can fix to a one-line message and an
   exit status (:mod:`xmlc.cli`);
2. :func:`run` builds: train / val / test, the label statistics of train
   (:class:`xmlc.run.LabelStats`), model, loss, AdamW and its schedule (:mod:`.build`);
3. :func:`fit`: per epoch :func:`xmlc.train.epoch.train_one_epoch`, validation
   (:class:`xmlc.train.evaluator.Evaluator`), the epoch rules (:mod:`.selection`), TensorBoard and
   ``last.pt`` / ``best.pt`` (:class:`xmlc.train.monitor.RunFiles`);
4. :func:`finish`: the selected weights, per-label thresholds fitted on validation, what
   ``train.final`` does with the validation rows (:mod:`.final`), test, ``metrics.json`` and a table.

A run that ends early raises a :class:`xmlc.train.stops.RunStopped` after saving what ``--resume``
needs; its ``status`` is the exit status.

Under ``torchrun --nproc_per_node=N -m xmlc.train ...`` the same code runs data parallel:
``data.batch_size`` is the global batch, each process trains on its shard, gradients are
all-reduced (DDP), validation scores are gathered so metrics cover the whole split, and only
rank 0 writes files (:mod:`.distributed`).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from xmlc import losses, stats
from xmlc.baseline import comparison_table, linear_baseline
from xmlc.checkpoint import CheckpointError, check_run_dir
from xmlc.cli import ExitStatus, report_error
from xmlc.config import Config, ConfigError, TrainConfig, apply_overrides, dump_config, load_config, to_dict
from xmlc.data import load_splits
from xmlc.eval.calibrate import transfer_thresholds
from xmlc.eval.summary import results_table
from xmlc.optim import optimizer_state_report
from xmlc.recipe import AUTO_KEYS, resolve_auto, resolve_final
from xmlc.run import LabelStats, Progress, RunArtifact
from xmlc.train import selection
from xmlc.train._malloc import reuse_large_blocks
from xmlc.train.build import (Training, make_eval_loader, new_model, seed_everything,
                              start_training)
from xmlc.train.distributed import DistEnv, any_process, launched_world_size, setup_distributed, teardown_distributed
from xmlc.train.evaluator import Evaluator
from xmlc.train.final import final_phase, refit_sample
from xmlc.train.folds import crossfit_folds
from xmlc.train.monitor import RunDirLock, RunFiles, check_fresh_run_dir
from xmlc.train.stops import Interrupted, NonFiniteLoss, RunStopped, StopOnSignal

__all__ = ["main", "run", "fit", "finish", "check_config"]


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
    except KeyboardInterrupt:       # Ctrl-C before training started (reading the data): nothing to save
        print("stopped by signal 2 (SIGINT) before training started; nothing was saved", file=sys.stderr)
        return ExitStatus.for_signal(2)
    except Exception as exc:        # a user error: one line and its status; anything else: traceback
        return report_error(exc)
    return ExitStatus.OK


def resolve_config(args) -> tuple[Config, RunArtifact | None]:
    """Config from (``--resume`` checkpoint | ``--config`` file | defaults) plus overrides."""
    if args.resume is None:
        return load_config(args.config, args.overrides), None
    if args.config is not None:
        raise ConfigError("give either --config or --resume (a resumed run keeps its own config; "
                          "change it with overrides)")
    path = Path(args.resume)
    resume = RunArtifact.load(path)
    if resume.training is None:
        raise CheckpointError(f"checkpoint {path} holds the best weights only, not the training state; "
                              f"resume from the run directory (its last.pt)")
    cfg = resume.config
    cfg.output.dir = str(path if path.is_dir() else path.parent)
    model = to_dict(cfg)["model"]
    cfg = apply_overrides(cfg, args.overrides)
    changed = [f"model.{k}={v!r} (was {model.get(k)!r})" for k, v in to_dict(cfg)["model"].items()
               if model.get(k) != v]
    if changed and not _weights_fit(cfg, resume):   # the override, not the checkpoint, is at fault
        raise ConfigError(f"--resume: the override {', '.join(changed)} builds a model whose weights have other "
                          f"shapes than those in {path}; a resumed run keeps its model: drop the override, "
                          f"or start a new run")
    return cfg, resume


def _weights_fit(cfg: Config, resume: RunArtifact) -> bool:
    """Whether the model ``cfg`` builds has the parameter names and shapes of ``resume``'s weights
    (built on the meta device: no memory)."""
    with torch.device("meta"):
        fresh = new_model(cfg.model, resume.num_features, resume.num_labels).state_dict()
    shapes = {name: tuple(t.shape) for name, t in resume.weights.items() if torch.is_tensor(t)}
    return {name: tuple(t.shape) for name, t in fresh.items()} == shapes


# ---------------------------------------------------------------------------------------
# The run: build, fit, finish


def run(cfg: Config, *, resume: RunArtifact | None = None) -> dict:
    """Train, calibrate and test as ``cfg`` says, writing the run directory ``output.dir``.

    Args:
        cfg: the resolved config tree.
        resume: a run's ``last.pt`` to continue from, or None for a fresh run.

    Returns:
        The final metrics, as written to ``metrics.json``.

    Raises:
        RunStopped: the run ended early (signal, ``train.max_steps``, non-finite loss) after
            saving what it could; ``ConfigError`` / ``DataFileError`` before any data is read
            or trained on.
    """
    check_config(cfg, world_size=launched_world_size())
    check_run_dir(cfg.output.dir)
    check_fresh_run_dir(cfg.output.dir, resumed=resume is not None, overwrite=cfg.output.overwrite)
    env = setup_distributed(cfg.train.device)
    say = _printer(env.rank == 0)
    files = lock = None
    try:
        lock = RunDirLock(cfg.output.dir) if env.rank == 0 else None   # one run at a time in output.dir
        seed_everything(cfg.train.seed)
        kept = {} if resume is None else {"run_labels": resume.label_names, "run_featurizer": resume.featurizer}
        splits = load_splits(cfg.data, seed=cfg.train.seed, features=cfg.features, say=say, **kept)   # resumed: its own
        train_set, val_set, test_set = splits
        say(f"data: train {len(train_set):,} / val {len(val_set):,} / test "
            f"{len(test_set) if test_set is not None else 0:,} examples, {train_set.num_features:,} "
            f"features, {train_set.num_labels:,} labels")
        cfg, fit_set, folds = training_rows(cfg, train_set, val_set, say)
        label_stats = LabelStats.of(train_set, cfg.loss)
        prior = label_stats.output_prior() if cfg.model.output_bias == "prior" else None
        model = new_model(cfg.model, train_set.num_features, train_set.num_labels, prior).to(env.device)
        loss_fn = losses.build_loss(cfg.loss, pos_weight=label_stats.pos_weight,
                                    weight=label_stats.label_weight).to(env.device)
        tr = start_training(cfg, env, fit_set, model, loss_fn, resume=resume, folds=folds)
        files = RunFiles(cfg, train_set, label_stats, write=env.rank == 0)
        if resume is not None:
            tr.best_model = files.best_model(env.device)
            say(f"resumed from {files.dir} at epoch {tr.progress.epoch + 1}, step {tr.progress.step}")
        files.open(label_stats, resumed=resume is not None, step=tr.progress.step)
        evaluator = Evaluator(cfg.eval, label_stats, env, label_names=train_set.label_names,
                              val_members=None if folds is None else folds.val_members)
        val_loader = make_eval_loader(val_set, seed=cfg.train.seed, env=env)
        epoch_times = fit(tr, val_loader, val_set.labels, evaluator, files, tcfg=cfg.train,
                          grad_clip=cfg.optim.grad_clip, env=env, say=say)
        return finish(tr, splits, val_loader, evaluator, files, cfg, env, prior=prior,
                      epoch_times=epoch_times, say=say)
    finally:
        if files is not None:
            files.close()
        if lock is not None:
            lock.release()
        leaving = sys.exc_info()[1]   # the exception on its way out, if any
        teardown_distributed(env, barrier=leaving is None or isinstance(leaving, RunStopped))


def training_rows(cfg: Config, train_set, val_set, say):
    """(cfg with its ``auto`` values resolved (:mod:`xmlc.recipe`), the rows trained on, the
    crossfit folds or None)."""
    fit_set, folds = train_set, None
    if resolve_final(cfg, train_set.num_features) == "crossfit":
        fit_set, folds = crossfit_folds(train_set, val_set, cfg.model.ensemble, seed=cfg.train.seed)
        say(f"crossfit: {len(fit_set):,} training rows; each of the {cfg.model.ensemble} members leaves out "
            f"~{len(val_set) / cfg.model.ensemble:,.0f} validation rows and scores them")
    resolved = resolve_auto(cfg, num_features=train_set.num_features, num_rows=len(fit_set))
    autos = [f"{section}.{key}: auto -> {getattr(getattr(resolved, section), key)}"
             for section, key in AUTO_KEYS if getattr(getattr(cfg, section), key) == "auto"
             and getattr(getattr(resolved, section), key) != "auto"]   # hidden: auto is sized by the model
    if autos:
        say(f"{'; '.join(autos)} ({train_set.num_features:,} features, {len(fit_set):,} rows, "
            f"batch {cfg.data.batch_size})")
    return resolved, fit_set, folds


def check_config(cfg: Config, *, world_size: int) -> None:
    """What each key alone cannot say, checked before any data is read: the early-stopping
    metric against ``eval.ks``, and a global batch that splits evenly over the processes."""
    names = ["auprc_micro", "auprc_macro", "f1_micro", "f1_macro",
             *[f"{m}@{k}" for m in ("p", "ndcg", "psp") for k in cfg.eval.ks],
             *[f"auprc_macro_{b}" for b in stats.BUCKET_NAMES]]
    if cfg.train.early_stopping_metric not in names:
        raise ConfigError(f"config key 'train.early_stopping_metric' must be one of {', '.join(names)}; "
                          f"got {cfg.train.early_stopping_metric!r}")
    if cfg.train.final == "crossfit" and cfg.model.ensemble < 2:
        raise ConfigError(f"config key 'train.final': crossfit needs an ensemble (model.ensemble >= 2; got "
                          f"{cfg.model.ensemble}): each member leaves out a different share of the validation rows; "
                          f"with one model use train.final=refit (or none)")
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
                tr.end_epoch(val_metrics, metric, tcfg.margin)
                eval_time = time.perf_counter() - start
                stopping = selection.patience_ran_out(p, tcfg.patience)
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
                        + (f" (each more than {tcfg.margin:.0%} below the best)" if tcfg.margin else ""))
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
    with ``eval.baseline: linear`` the baseline on the same splits (:mod:`xmlc.baseline`; rank 0),
    then the outputs (:meth:`RunFiles.finish`) and the tables; returns the metrics."""
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
    test_loader = None if test_set is None else make_eval_loader(test_set, seed=cfg.train.seed, env=env)
    if cfg.train.final in ("refit", "finetune"):
        final = cfg.train.final
        if test_set is not None:   # the selected model on test, to show what the final phase changed
            results[f"test_before_{final}"] = ev.test(tr.model, test_loader, test_set.labels,
                                                      thresholds)[0]["test_calibrated"]
        tr.optimizer.state.clear()   # the first phase's Adam moments (2x the weights) are not needed again
        sample = refit_sample(train_set, cfg.train.seed)
        sample_loader = make_eval_loader(sample, seed=cfg.train.seed, env=env)
        before = ev.scores(tr.model, sample_loader, sample.labels)
        results[final] = final_phase(tr, cfg, env, train_set, val_set, prior=prior, run_dir=files.dir, say=say)
        # the first model's thresholds, moved to the shipped one by each label's rate on these rows
        thresholds = transfer_thresholds(thresholds, before, ev.scores(tr.model, sample_loader, sample.labels))
        del before
    if test_set is not None:
        test_results, test_scores = ev.test(tr.model, test_loader, test_set.labels, thresholds)
        results |= test_results
        final_scores = ("test", test_scores, test_set.labels)
        del test_scores
    results |= run_summary(tr.progress, cfg.train.early_stopping_metric, splits, epoch_times,
                           rows_per_epoch=len(tr.sampler.dataset))
    if tr.folds is not None:
        results["crossfit"] = tr.folds.summary()
    results["optimizer_state"] = optimizer_state
    if cfg.eval.baseline == "linear" and env.rank == 0:   # after run_summary: the run's time and memory are its own
        results["baseline"] = linear_baseline(splits, cfg, run_results=results, say=say)
    files.finish(tr, thresholds, results, final_scores=final_scores,
                 figure_inputs=ev.figure_inputs(thresholds))
    say(results_table(results))
    if "baseline" in results:
        say(comparison_table(results))
    say(files.describe())
    return results


def run_summary(p: Progress, metric: str, splits, epoch_times: list[float], *, rows_per_epoch: int) -> dict:
    """The run-level entries of ``metrics.json``: selection, steps, speed, memory and sizes
    (``rows_per_epoch``: the rows an epoch trains on, train + validation under crossfit;
    ``train_time_s``: the mean epoch's training time x epochs, validation excluded)."""
    train_set, val_set, test_set = splits
    epoch_time = float(np.mean(epoch_times)) if epoch_times else None
    return {"best_epoch": p.best_epoch, "best_metric": {metric: p.best_value}, "selected_epoch": p.selected_epoch,
            "epochs": p.epoch,
            "steps": p.step, "epoch_time_s": epoch_time,
            "train_time_s": epoch_time * p.epoch if epoch_times else None,
            "train_examples_per_s": rows_per_epoch / epoch_time if epoch_times else None,
            "peak_rss_mb": peak_rss_mb(), "num_train": len(train_set), "num_val": len(val_set),
            "num_test": len(test_set) if test_set is not None else 0,
            "num_features": train_set.num_features, "num_labels": train_set.num_labels}


# ---------------------------------------------------------------------------------------
# Small helpers


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
