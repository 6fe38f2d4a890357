"""Train a multilabel classifier: ``python -m xmlc.train [--config FILE] [section.key=value ...]``.

With no arguments it trains the default MLP on the built-in synthetic data set. The flow,
top to bottom:

1. resolve the config (defaults <- YAML file <- dotted overrides; or a checkpoint with ``--resume``);
2. load train / val / test (XMC files or a synthetic preset), label statistics on train;
3. build model, loss, AdamW, warmup + cosine/constant schedule;
4. per epoch: :func:`train_one_epoch`, then :func:`evaluate` on validation, TensorBoard,
   ``last.pt`` / ``best.pt``, early stopping;
5. at the end: best weights, per-label thresholds fitted on validation (``xmlc.calibrate``);
   with ``train.refit`` a fresh model trained on train + validation for the selected number
   of epochs replaces them (:func:`refit`, the thresholds stay); test scored at 0.5 and at
   the calibrated thresholds, ``metrics.json`` and a short table.

Under ``torchrun --nproc_per_node=N -m xmlc.train ...`` the same code runs data parallel:
``data.batch_size`` is the global batch, each process trains on its shard
(``DistributedSampler``), gradients are all-reduced (DDP), validation scores are gathered so
metrics cover the whole split, and only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from xmlc import calibrate, data as xdata, losses, metrics, stats
from xmlc.calibrate import thresholds_for
from xmlc.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from xmlc.config import Config, ConfigError, apply_overrides, dump_config, from_dict, load_config, to_dict
from xmlc.data import DataFileError, concat_data, load_splits
from xmlc.inference import predict_scores
from xmlc.metrics import results_table, threshold_metrics
from xmlc.models import build_model, ensemble_loss, init_output_bias
from xmlc.monitor import log_epoch, log_final, log_run_start, open_writer, remove_figures, write_final_figures
from xmlc.optim import build_optimizer, build_scheduler, clip_grad_norm_

__all__ = ["main", "run", "train_one_epoch", "refit", "evaluate"]

EXIT_OK, EXIT_NONFINITE, EXIT_USAGE = 0, 1, 2


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
    """CLI entry point; returns the process exit status."""
    args = parse_args(argv)
    try:
        cfg, resume = resolve_config(args)
        if args.print_config:
            print(dump_config(cfg), end="")
            return EXIT_OK
        result = run(cfg, resume=resume)
    except (ConfigError, DataFileError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return result["exit_code"]


def resolve_config(args) -> tuple[Config, dict | None]:
    """Config from (``--resume`` checkpoint | ``--config`` file | defaults) plus overrides."""
    if args.resume is None:
        return load_config(args.config, args.overrides), None
    if args.config is not None:
        raise ConfigError("give either --config or --resume (a resumed run keeps its own config; "
                          "change it with overrides)")
    path = Path(args.resume)
    ckpt = load_checkpoint(path)
    cfg = from_dict(Config, ckpt["config"])
    cfg.output.dir = str(path if path.is_dir() else path.parent)
    return apply_overrides(cfg, args.overrides), ckpt


# ---------------------------------------------------------------------------------------
# The run


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint."""

    step: int = 0                # optimizer steps done
    epoch: int = 0               # epoch in progress (0-based)
    batch_in_epoch: int = 0      # batches of `epoch` done: the data-order state
    best_value: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0          # epochs since the last improvement
    history: list = field(default_factory=list)   # per-epoch validation metrics


def run(cfg: Config, *, resume: dict | None = None) -> dict:
    """Train, calibrate and test as configured; return ``{"status", "exit_code", "metrics", "dir"}``."""
    env = setup_distributed(cfg.train.device)
    out = Path(cfg.output.dir)
    say = _printer(env.rank == 0)
    seed_everything(cfg.train.seed)
    check_early_stopping_metric(cfg)

    # -- data and label statistics (train split only) --
    train_set, val_set, test_set = load_splits(cfg.data, seed=cfg.train.seed, features=cfg.features, say=say)
    num_features, num_labels = train_set.num_features, train_set.num_labels
    counts, num_train = stats.label_and_example_counts(train_set.labels, num_labels)
    pos_weight, label_weight = loss_weights(cfg.loss, counts, num_train)
    buckets = stats.frequency_buckets(counts)
    propensities = stats.propensity(counts, num_train)
    say(f"data: train {len(train_set):,} / val {len(val_set):,} / test "
        f"{len(test_set) if test_set is not None else 0:,} examples, {num_features:,} features, "
        f"{num_labels:,} labels")

    # -- model, loss, optimizer, schedule --
    device = env.device
    prior = None
    if cfg.model.output_bias == "prior":
        prior = torch.as_tensor(counts, dtype=torch.float32) / max(num_train, 1)
        if pos_weight is not None:   # the constant that minimises BCE with pos_weight w: w p / (w p + 1 - p)
            prior = pos_weight * prior / (pos_weight * prior + 1 - prior)
    model = new_model(cfg.model, num_features, num_labels, prior).to(device)
    loss_fn = losses.build_loss(cfg.loss, pos_weight=pos_weight, weight=label_weight).to(device)
    if cfg.data.batch_size % env.world_size:
        raise ConfigError(f"config key 'data.batch_size' ({cfg.data.batch_size}) must be divisible "
                          f"by the number of processes ({env.world_size})")
    sampler, train_loader, optimizer, scheduler = training_parts(cfg, env, train_set, model)
    val_loader = make_eval_loader(val_set, cfg, env)

    progress, best_state = Progress(), None
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        progress = Progress(**resume["progress"])
        best_path = out / "best.pt"
        if best_path.is_file():
            best_state = load_checkpoint(best_path, map_location=device)["model"]
        set_rng_state(resume["rng"])
        say(f"resumed from {out} at epoch {progress.epoch + 1}, step {progress.step}")
    train_model = data_parallel(model, env)

    # -- outputs --
    writer = None
    if env.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_config(cfg))
        writer = open_writer(cfg, out, resumed=resume is not None, step=progress.step)
        if resume is None:
            remove_figures(out)
        if writer is not None and resume is None:
            log_run_start(writer, cfg, counts, num_train, pos_weight)
    label_stats = {"counts": torch.as_tensor(counts, dtype=torch.int64), "num_examples": int(num_train),
                   "pos_weight": pos_weight}

    def figure_inputs(thresholds) -> dict:
        """What the figures need besides scores and labels: arrays the run already has."""
        return {"train_counts": counts, "buckets": buckets, "thresholds": thresholds, "calibration": cfg.eval.calibration,
                "pos_weight": None if pos_weight is None else pos_weight.cpu()}

    def checkpoint(thresholds=None) -> dict:
        return {
            "format": 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "progress": vars(progress).copy(),
            "step": progress.step, "epoch": progress.epoch, "rng": rng_state(),
            "config": to_dict(cfg), "num_features": num_features, "num_labels": num_labels,
            "label_stats": label_stats, "thresholds": thresholds,
            "label_names": train_set.label_names, "featurizer": train_set.featurizer,
            "best": {"metric": cfg.train.early_stopping_metric, "value": progress.best_value,
                     "epoch": progress.best_epoch},
        }

    # -- training --
    status, epoch_times = "completed", []
    with StopOnSignal() as stop:
        while progress.epoch < cfg.train.epochs:
            sampler.set_epoch(progress.epoch, skip_batches=progress.batch_in_epoch)
            start = time.perf_counter()
            status = train_one_epoch(train_model, train_loader, loss_fn, optimizer, scheduler,
                                     progress=progress, cfg=cfg, env=env, stop=stop, writer=writer)
            if status != "completed":
                break
            epoch_times.append(time.perf_counter() - start)
            eval_start = time.perf_counter()
            val_metrics, val_scores, val_thresholds = validate(model, val_loader, val_set.labels, cfg=cfg, env=env,
                                                               buckets=buckets, propensities=propensities,
                                                               pos_weight=pos_weight)
            value = val_metrics[cfg.train.early_stopping_metric]
            improved = value > progress.best_value   # False for NaN
            progress.history.append({"epoch": progress.epoch + 1, "step": progress.step, **val_metrics})
            if improved:
                progress.best_value, progress.best_epoch, progress.bad_epochs = value, progress.epoch + 1, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                progress.bad_epochs += 1
            progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0
            say(f"epoch {progress.epoch}/{cfg.train.epochs}: {cfg.train.early_stopping_metric} "
                f"{value:.4f} (best {progress.best_value:.4f} @ epoch {progress.best_epoch}); "
                f"train {epoch_times[-1]:.1f} s, eval {time.perf_counter() - eval_start:.1f} s")
            if env.rank == 0:
                log_epoch(writer, cfg, progress.step, val_metrics, val_scores, val_set.labels,
                          epoch_times[-1], figure_inputs=figure_inputs(val_thresholds) if cfg.output.figures else None)
                save_checkpoint(checkpoint(), out / "last.pt")
                if improved:
                    save_checkpoint(checkpoint(), out / "best.pt")
            del val_scores, val_thresholds   # (N_val, L) dense: not kept alive into the final phase
            if cfg.train.patience and progress.bad_epochs >= cfg.train.patience:
                say(f"early stopping: no improvement in {cfg.train.early_stopping_metric} for "
                    f"{progress.bad_epochs} epochs")
                break
            if any_process(stop.requested, env):
                status = "interrupted"
                break

    if status != "completed":
        return stop_run(status, stop, progress, checkpoint, out, env, writer, say)

    # -- final: best weights, thresholds fitted on validation, optional refit, test --
    if best_state is not None:
        model.load_state_dict(best_state)
    results, thresholds, val_scores = fit_on_validation(model, cfg, env, val_set, val_loader, buckets,
                                                        propensities, pos_weight)
    # the final figures' scores: test when there is a test split, else these validation scores
    final_scores = None if test_set is not None else ("validation", val_scores, val_set.labels)
    del val_scores
    if cfg.train.refit:
        if test_set is not None:   # the selected model on test, to show what the refit changed
            results["test_before_refit"] = score_test(model, cfg, env, test_set, thresholds, buckets,
                                                      propensities, pos_weight)[0]["test_calibrated"]
        epochs = progress.best_epoch if progress.best_epoch > 0 else progress.epoch
        with StopOnSignal() as stop:
            status, results["refit"] = refit(model, cfg, env, train_set, val_set, loss_fn, epochs=epochs,
                                             prior=prior, stop=stop, say=say)
        if status != "completed":
            return stop_refit(status, stop, out, env, writer, say)
    if test_set is not None:
        test_results, test_scores = score_test(model, cfg, env, test_set, thresholds, buckets, propensities,
                                               pos_weight)
        results |= test_results
        final_scores = ("test", test_scores, test_set.labels)
        del test_scores
    results |= {
        "best_epoch": progress.best_epoch, "best_metric": {cfg.train.early_stopping_metric: progress.best_value},
        "epochs": progress.epoch, "steps": progress.step,
        "epoch_time_s": float(np.mean(epoch_times)) if epoch_times else None,
        "train_examples_per_s": (len(train_set) / float(np.mean(epoch_times))) if epoch_times else None,
        "peak_rss_mb": peak_rss_mb(),
        "num_train": len(train_set), "num_val": len(val_set),
        "num_test": len(test_set) if test_set is not None else 0,
        "num_features": num_features, "num_labels": num_labels,
    }
    if env.rank == 0:
        save_checkpoint(checkpoint(thresholds.float().cpu()), out / "best.pt")
        (out / "metrics.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
        if cfg.output.figures:
            split, scores, labels = final_scores
            write_final_figures(out, writer, progress.step, split, scores, labels, **figure_inputs(thresholds),
                                num_train=num_train,
                                pos_weight_power=cfg.loss.pos_weight_power if pos_weight is not None else 1.0,
                                pos_weight_max=cfg.loss.pos_weight_max if pos_weight is not None else None)
        del final_scores
        if writer is not None:
            log_final(writer, cfg, results)
            writer.close()
        say(results_table(results))
        say(f"outputs: {out.resolve()}/ (config.yaml, best.pt, last.pt, metrics.json"
            f"{', figures/*.png' if cfg.output.figures else ''}"
            f"{', TensorBoard events: tensorboard --logdir ' + str(out.resolve()) if cfg.output.tensorboard else ''}); "
            f"one HTML page: python -m xmlc.report {out}")
    teardown_distributed(env)
    return {"status": "completed", "exit_code": EXIT_OK, "metrics": results, "dir": str(out)}


def stop_run(status, stop, progress, checkpoint, out, env, writer, say) -> dict:
    """Leave a run that did not complete: save last.pt (except after a non-finite loss)."""
    if status == "nonfinite":
        last = out / "last.pt"
        say(f"error: non-finite loss at step {progress.step + 1} (epoch {progress.epoch + 1}); "
            f"stopped without updating. Last good checkpoint: "
            f"{last if last.is_file() else 'none (no epoch finished)'}")
        code = EXIT_NONFINITE
    else:
        if env.rank == 0:
            save_checkpoint(checkpoint(), out / "last.pt")
        why = f"signal {stop.signum}" if status == "interrupted" else f"train.max_steps={progress.step}"
        say(f"stopped by {why} at step {progress.step} (epoch {progress.epoch + 1}); saved "
            f"{out / 'last.pt'}. Continue with: python -m xmlc.train --resume {out}")
        code = 128 + stop.signum if status == "interrupted" else EXIT_OK
    if writer is not None:
        writer.close()
    teardown_distributed(env)
    return {"status": status, "exit_code": code, "metrics": None, "dir": str(out)}


def stop_refit(status, stop, out, env, writer, say) -> dict:
    """Leave a run whose refit did not finish; last.pt and best.pt keep the finished first phase."""
    if status == "nonfinite":
        say("error: non-finite loss in the refit on train + validation; no metrics written")
        code = EXIT_NONFINITE
    else:
        say(f"refit stopped by signal {stop.signum}; no metrics written. The training itself is saved: "
            f"python -m xmlc.train --resume {out} runs the refit again")
        code = 128 + stop.signum
    if writer is not None:
        writer.close()
    teardown_distributed(env)
    return {"status": status, "exit_code": code, "metrics": None, "dir": str(out)}


# ---------------------------------------------------------------------------------------
# Refit on train + validation


def refit(model, cfg: Config, env, train_set, val_set, loss_fn, *, epochs: int, prior=None, stop,
          say) -> tuple[str, dict]:
    """Train a fresh model on train + validation for ``epochs`` epochs; copy its weights into ``model``.

    The run that selected ``epochs`` (on validation), repeated with the validation rows added
    to the training rows: same seed, initialisation (``prior`` as in :func:`new_model`), loss,
    optimizer, and a schedule spanning ``train.epochs`` epochs of the larger set, stopped after
    ``epochs`` of them, so the refit ends at the learning rate the selected model ended at.
    ``train.max_steps`` does not apply. The refit is not logged to TensorBoard. ``stop`` is a
    :class:`StopOnSignal`; ``say`` prints one progress line per epoch.

    Returns:
        (status, info): status as :func:`train_one_epoch` returns it ("completed" once all
        ``epochs`` ran; ``model`` is only changed then); info ``{"epochs", "steps",
        "num_train", "time_s"}`` for ``metrics.json``.
    """
    data = concat_data(train_set, val_set)
    seed_everything(cfg.train.seed)
    fresh = new_model(cfg.model, data.num_features, data.num_labels, prior).to(env.device)
    sampler, loader, optimizer, scheduler = training_parts(cfg, env, data, fresh)
    train_model = data_parallel(fresh, env)
    run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=None))
    progress, start = Progress(), time.perf_counter()
    while progress.epoch < epochs:
        sampler.set_epoch(progress.epoch)
        status = train_one_epoch(train_model, loader, loss_fn, optimizer, scheduler, progress=progress,
                                 cfg=run_cfg, env=env, stop=stop, writer=None)
        if status != "completed":
            return status, {}
        progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0
        say(f"refit epoch {progress.epoch}/{epochs} on train + validation ({len(data):,} examples)")
        if any_process(stop.requested, env):
            return "interrupted", {}
    model.load_state_dict(fresh.state_dict())
    return "completed", {"epochs": epochs, "steps": progress.step, "num_train": len(data),
                         "time_s": time.perf_counter() - start}


# ---------------------------------------------------------------------------------------
# One epoch


def train_one_epoch(model, loader, loss_fn, optimizer, scheduler, *, progress: Progress, cfg: Config,
                    env, stop, writer) -> str:
    """One pass over ``loader`` (from where ``progress`` says); returns why it ended.

    "completed" at the end of the data; "interrupted" after a SIGINT/SIGTERM;
    "max_steps" at ``train.max_steps``; "nonfinite" on a NaN/inf loss, before that
    step touches the parameters.
    """
    model.train()
    device, tcfg = env.device, cfg.train
    amp = tcfg.amp and device.type == "cuda"
    window_start, window_examples, window_steps, loss_sum = time.perf_counter(), 0, 0, 0.0
    with tqdm(loader, desc=f"epoch {progress.epoch + 1}/{tcfg.epochs}", leave=False, dynamic_ncols=True,
              disable=env.rank != 0 or not tcfg.progress, mininterval=0.5) as bar:
        for batch in bar:
            if tcfg.max_steps is not None and progress.step >= tcfg.max_steps:
                return "max_steps"
            batch = batch.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(batch)
            loss = ensemble_loss(loss_fn, logits, batch.targets)
            loss_value, nonfinite, stop_now = agree(loss.detach(), stop.requested, env)
            if nonfinite:
                return "nonfinite"
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            lr = optimizer.param_groups[0]["lr"]   # the rate this step used
            optimizer.step()
            scheduler.step()
            progress.step += 1
            progress.batch_in_epoch += 1
            window_examples += len(batch) * env.world_size
            window_steps += 1
            loss_sum += loss_value
            if progress.step % tcfg.log_every == 0:
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
            if stop_now:
                return "interrupted"
    return "completed"


def agree(loss: torch.Tensor, stop_requested: bool, env) -> tuple[float, bool, bool]:
    """Mean loss over processes, whether any is non-finite, whether any process must stop.

    One small all-reduce per step under DDP, so every process takes the same decision.
    """
    if env.world_size == 1:
        value = loss.item()
        return value, not math.isfinite(value), stop_requested
    flags = torch.stack([loss.float(), (~torch.isfinite(loss)).float(),
                         torch.tensor(float(stop_requested), device=loss.device)])
    dist.all_reduce(flags)
    value, nonfinite, stop_now = flags.tolist()
    return value / env.world_size, nonfinite > 0 or not math.isfinite(value), stop_now > 0


def any_process(flag: bool, env) -> bool:
    """True on every process if ``flag`` is true on any (a collective under DDP)."""
    if env.world_size == 1:
        return flag
    t = torch.tensor(float(flag), device=env.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


# ---------------------------------------------------------------------------------------
# Evaluation


def evaluate(model, loader, labels, *, cfg: Config, env, buckets=None, propensities=None,
             thresholds=0.5) -> tuple[dict, torch.Tensor]:
    """Score ``loader`` and compute :func:`xmlc.metrics.evaluate_all` against CSR ``labels``.

    Returns (metrics, scores (N, L)).
    """
    scores = predict_scores(model, loader, labels.shape[0], device=env.device, amp=cfg.train.amp,
                            world_size=env.world_size)
    result = metrics.evaluate_all(scores, labels, thresholds=thresholds, ks=tuple(cfg.eval.ks),
                                  buckets=buckets, propensities=propensities)
    return {k: float(v) for k, v in result.items()}, scores


def validate(model, loader, labels, *, cfg: Config, env, buckets, propensities, pos_weight):
    """Per-epoch validation: :func:`evaluate` at 0.5, plus ``calibrated/f1_micro``, ``calibrated/f1_macro``
    and ``calibrated/positive_rate_ratio*`` at thresholds fitted on these same scores.

    Returns (metrics, scores (N, L), thresholds (L,)).
    """
    val_metrics, scores = evaluate(model, loader, labels, cfg=cfg, env=env, buckets=buckets,
                                   propensities=propensities)
    thresholds = thresholds_for(cfg.eval, scores, labels, pos_weight)
    val_metrics |= _prefixed(threshold_metrics(scores, labels, thresholds, buckets), "calibrated/")
    return val_metrics, scores, thresholds


def fit_on_validation(model, cfg: Config, env, val_set, val_loader, buckets, propensities,
                      pos_weight) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Score validation with the selected weights and fit per-label thresholds (L,) on those scores.

    Returns ({"val", "val_calibrated"} metrics, thresholds, scores (N_val, L)).
    """
    val_metrics, val_scores = evaluate(model, val_loader, val_set.labels, cfg=cfg, env=env,
                                       buckets=buckets, propensities=propensities)
    thresholds = thresholds_for(cfg.eval, val_scores, val_set.labels, pos_weight)
    results = {"val": val_metrics,
               "val_calibrated": val_metrics | threshold_metrics(val_scores, val_set.labels, thresholds, buckets)}
    return results, thresholds, val_scores


def score_test(model, cfg: Config, env, test_set, thresholds, buckets, propensities,
               pos_weight) -> tuple[dict, torch.Tensor]:
    """Test metrics at 0.5 ("test"), at ``thresholds`` ("test_calibrated") and, with pos_weight,
    at the ln(pos_weight) logit correction ("test_prior"); and the test scores (N_test, L)."""
    test_loader = make_eval_loader(test_set, cfg, env)
    test_metrics, test_scores = evaluate(model, test_loader, test_set.labels, cfg=cfg, env=env,
                                         buckets=buckets, propensities=propensities)
    results = {"test": test_metrics,
               "test_calibrated": test_metrics | threshold_metrics(test_scores, test_set.labels, thresholds, buckets)}
    if pos_weight is not None:   # the ln(pos_weight) logit correction, for comparison
        prior = calibrate.prior_thresholds(pos_weight.cpu())
        results["test_prior"] = test_metrics | threshold_metrics(test_scores, test_set.labels, prior, buckets)
    return results, test_scores


# ---------------------------------------------------------------------------------------
# Data


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` whose epoch can start after its first ``skip_batches`` batches.

    The order of epoch ``e`` is a permutation seeded by ``seed + e``, identical for any number
    of processes: with one process, batch ``i`` holds positions ``[i*B, (i+1)*B)`` of it; with
    ``W`` processes of ``B/W`` each, the same positions are spread over the processes. Skipping
    is what makes a mid-epoch ``--resume`` see exactly the batches it would have seen.
    """

    def __init__(self, dataset, env, *, seed: int, batch_size: int):
        super().__init__(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed)
        self.batch_size = batch_size
        self.skip = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        super().set_epoch(epoch)
        self.skip = skip_batches * self.batch_size

    def indices_for_epoch(self, epoch: int) -> list[int]:
        saved, self.epoch = self.epoch, epoch
        try:
            return list(super().__iter__())
        finally:
            self.epoch = saved

    def __iter__(self):
        return islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return max(super().__len__() - self.skip, 0)


def make_loader(dataset, batch_size: int, sampler, cfg: Config, env):
    # xdata.make_loader seeds the loader's own generator, so creating iterators never draws
    # from the global RNG (dropout masks stay the same across a mid-epoch resume).
    return xdata.make_loader(dataset, batch_size, shuffle=False, seed=cfg.train.seed,
                             num_workers=cfg.data.num_workers, pin_memory=env.device.type == "cuda",
                             sampler=sampler)


def make_eval_loader(dataset, cfg: Config, env):
    sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=False)
    return make_loader(dataset, cfg.data.eval_batch_size, sampler, cfg, env)


def training_parts(cfg: Config, env, dataset, model: nn.Module):
    """(sampler, loader, AdamW, schedule) to train ``model`` on ``dataset``: this process's share
    of the global ``data.batch_size``, a schedule spanning ``train.epochs`` epochs of ``dataset``."""
    batch_size = cfg.data.batch_size // env.world_size
    sampler = ResumableSampler(dataset, env, seed=cfg.train.seed, batch_size=batch_size)
    loader = make_loader(dataset, batch_size, sampler, cfg, env)
    steps_per_epoch = math.ceil(len(sampler.indices_for_epoch(0)) / batch_size)
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.optim, optimizer, total_steps=steps_per_epoch * cfg.train.epochs)
    return sampler, loader, optimizer, scheduler


def data_parallel(model: nn.Module, env) -> nn.Module:
    """``model`` in DistributedDataParallel when several processes train, else ``model`` itself."""
    if env.world_size == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)


def new_model(mcfg, num_features: int, num_labels: int, prior: torch.Tensor | None = None) -> nn.Module:
    """The ``model`` section's encoder; output bias at ``log(p / (1 - p))`` of ``prior`` (L,) if given."""
    model = build_model(mcfg, num_features, num_labels)
    if prior is not None:
        init_output_bias(model, prior)
    return model


def loss_weights(lcfg, counts, num_examples) -> tuple[torch.Tensor | None, torch.Tensor | None]:
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


# ---------------------------------------------------------------------------------------
# TensorBoard


# ---------------------------------------------------------------------------------------
# Small helpers


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")


def setup_distributed(device_choice: str) -> DistEnv:
    """Device from ``train.device``; under torchrun (WORLD_SIZE > 1) join the process group."""
    use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    if device_choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'train.device' is 'cuda' but no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistEnv(device=torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistEnv(rank=dist.get_rank(), world_size=world_size,
                   device=torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"))


def teardown_distributed(env: DistEnv) -> None:
    if env.world_size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_early_stopping_metric(cfg: Config) -> None:
    names = ["auprc_micro", "auprc_macro", "f1_micro", "f1_macro",
             *[f"{m}@{k}" for m in ("p", "ndcg", "psp") for k in cfg.eval.ks],
             *[f"auprc_macro_{b}" for b in stats.BUCKET_NAMES]]
    if cfg.train.early_stopping_metric not in names:
        raise ConfigError(f"config key 'train.early_stopping_metric' must be one of {', '.join(names)}; "
                          f"got {cfg.train.early_stopping_metric!r}")


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


if __name__ == "__main__":
    sys.exit(main())
