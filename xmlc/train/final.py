"""``train.final``: what happens to the validation rows once the epoch is selected.

- ``none``: the selected model ships; the validation rows only select and calibrate.
- ``refit``: :func:`refit` trains a fresh model on train + validation for the selected number of
  epochs and ships it (about twice the training).
- ``finetune``: :func:`finetune` continues the selected model on train + validation for
  :data:`FINETUNE_EPOCHS` passes under a fresh warmup + cosine schedule at
  :data:`FINETUNE_LR` x the run's rates, and ships it: the validation rows' evidence at the cost
  of two passes.
- After either, the thresholds fitted on the selected model's validation scores move to the
  shipped one by each label's predicted count on a sample of training rows
  (:func:`refit_sample`, :func:`xmlc.eval.calibrate.transfer_thresholds`): the new model scores
  higher, and the first model's thresholds over-predicted on it (GoEmotions refit: test ratio
  1.09-1.11 against 1.08).
- ``crossfit`` (an ensemble's alternative, :mod:`xmlc.train.folds`): the training itself runs on
  train + validation, each member leaving out its share of the validation rows, so nothing runs
  here.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import numpy as np

from xmlc.config import Config
from xmlc.data import concat_data
from xmlc.train.build import Training, new_model, seed_everything, start_training
from xmlc.train.distributed import DistEnv, any_process
from xmlc.train.stops import Interrupted, NonFiniteLoss, StopOnSignal

__all__ = ["refit", "finetune", "final_phase", "refit_sample", "SAMPLE_ENTRIES", "SAMPLE_MIN_ROWS",
           "FINETUNE_EPOCHS", "FINETUNE_LR"]

#: ``train.final: finetune``: passes over train + validation after the selected epoch ...
FINETUNE_EPOCHS = 2
#: ... at this share of the run's learning rates (Adam's and the linear part's SGD rate), under
#: the run's warmup and cosine schedule spanning them.
FINETUNE_LR = 0.5

#: :func:`refit_sample`: at most this many score entries (rows x labels) ...
SAMPLE_ENTRIES = 2**24
#: ... but at least this many rows (or the whole split).
SAMPLE_MIN_ROWS = 2_000


def refit_sample(train_set, seed: int):
    """The training rows on which the thresholds move to the refitted model: a seeded random
    sample of ``max(SAMPLE_MIN_ROWS, SAMPLE_ENTRIES // L)`` rows (all of them where fewer), so the
    two models' scores on it stay within 2 x 64 MiB of float32."""
    rows = min(len(train_set), max(SAMPLE_MIN_ROWS, SAMPLE_ENTRIES // max(train_set.num_labels, 1)))
    if rows == len(train_set):
        return train_set
    return train_set.subset(np.sort(np.random.default_rng(seed).choice(len(train_set), rows, replace=False)))


def refit(model, cfg: Config, env: DistEnv, train_set, val_set, loss_fn, *, epochs: int, prior=None, stop,
          say) -> dict:
    """Train a fresh model on train + validation for ``epochs`` epochs; copy its weights into ``model``.

    The run that selected ``epochs`` (on validation), repeated with the validation rows added
    to the training rows: same seed, initialisation (``prior`` as in
    :func:`xmlc.train.build.new_model`), loss, optimizer, and a schedule spanning
    ``train.epochs`` epochs of the larger set, stopped after ``epochs`` of them, so the refit ends
    at the learning rate the selected model ended at. ``train.max_steps`` does not apply. The
    refit is not logged to TensorBoard. ``stop`` is a :class:`StopOnSignal`; ``say`` prints one
    progress line per epoch.

    Returns:
        ``{"epochs", "steps", "num_train", "time_s"}`` for ``metrics.json``.

    Raises:
        RunStopped: :class:`Interrupted` or :class:`NonFiniteLoss`; ``model`` is unchanged then.
    """
    data = concat_data(train_set, val_set)
    seed_everything(cfg.train.seed)
    fresh = new_model(cfg.model, data.num_features, data.num_labels, prior).to(env.device)
    return _train_into(model, fresh, cfg, env, data, loss_fn, epochs, stop=stop, say=say, what="refit")


def finetune(model, cfg: Config, env: DistEnv, train_set, val_set, loss_fn, *, stop, say) -> dict:
    """Continue ``model`` (the selected one) on train + validation for :data:`FINETUNE_EPOCHS` epochs.

    A fresh AdamW (and the linear part's SGD) at :data:`FINETUNE_LR` x the configured rates, under
    the configured warmup and schedule spanning these epochs (a warm restart), the same loss; the
    run's seed. On the three text sets (benchmarks/RESULTS.md, seeds 0-4, with the wide part's
    column-normalised SGD) P@1 moved +0.65 / -0.33 / +0.18 (GoEmotions / rcv1sub2 / yahoo_arts)
    and macro AUPRC +0.009 / +0.003 / +0.002: an option, not the default. Returns and raises as
    :func:`refit` does.
    """
    data = concat_data(train_set, val_set)
    seed_everything(cfg.train.seed)
    short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=FINETUNE_EPOCHS))
    tuned = copy.deepcopy(model)   # a module of its own: ``model`` may sit in the first phase's DDP wrap
    return _train_into(model, tuned, short, env, data, loss_fn, FINETUNE_EPOCHS, stop=stop, say=say,
                       what="fine-tune", lr_scale=FINETUNE_LR)


def _train_into(model, trained, cfg: Config, env: DistEnv, data, loss_fn, epochs: int, *, stop, say, what: str,
                lr_scale: float = 1.0) -> dict:
    """Train ``trained`` on ``data`` for ``epochs`` epochs of a schedule spanning ``train.epochs``
    (no step limit, not logged to TensorBoard, a progress line each), then copy its weights into
    ``model``; the phase's info. A stop leaves ``model`` as it was."""
    tr = start_training(cfg, env, data, trained, loss_fn, lr_scale=lr_scale)
    tcfg = dataclasses.replace(cfg.train, max_steps=None, epochs=epochs)
    start, rows = time.perf_counter(), len(tr.sampler.dataset)
    while tr.progress.epoch < epochs:
        tr.train_epoch(tcfg=tcfg, grad_clip=cfg.optim.grad_clip, env=env, stop=stop)
        tr.progress.next_epoch()
        say(f"{what} epoch {tr.progress.epoch}/{epochs} on train + validation ({rows:,} examples)")
        if any_process(stop.requested, env):
            raise Interrupted(stop.signum)
    model.load_state_dict(trained.state_dict())
    return {"epochs": epochs, "steps": tr.progress.step, "num_train": rows, "time_s": time.perf_counter() - start}


def final_phase(tr: Training, cfg: Config, env: DistEnv, train_set, val_set, *, prior, run_dir: Path,
                say) -> dict:
    """``train.final`` ``refit`` (for the selected number of epochs) or ``finetune`` into
    ``tr.model``; returns its info.

    Raises:
        RunStopped: after saying that no metrics were written (``last.pt`` / ``best.pt`` keep
            the finished first phase, so ``--resume`` runs this phase again).
    """
    p, what = tr.progress, cfg.train.final
    with StopOnSignal() as stop:
        try:
            if what == "finetune":
                return finetune(tr.model, cfg, env, train_set, val_set, tr.loss_fn, stop=stop, say=say)
            return refit(tr.model, cfg, env, train_set, val_set, tr.loss_fn, prior=prior, stop=stop, say=say,
                         epochs=p.selected_epoch if p.selected_epoch > 0 else p.epoch)
        except Interrupted as stopped:
            say(f"{what} stopped by signal {stopped.signum}; no metrics written. The training itself is "
                f"saved: python -m xmlc.train --resume {run_dir} runs the {what} again")
            raise
        except NonFiniteLoss:
            say(f"error: non-finite loss in the {what} on train + validation; no metrics written")
            raise
