"""``train.final``: what happens to the validation rows once the epoch is selected.

- ``none``: the selected model ships; the validation rows only select and calibrate.
- ``refit``: :func:`refit` trains a fresh model on train + validation for the selected number of
  epochs and ships it; the thresholds fitted on the first model's validation scores move to it by
  each label's predicted count on a sample of training rows (:func:`refit_sample`,
  :func:`xmlc.eval.calibrate.transfer_thresholds`): the refitted model scores higher, and the
  first model's thresholds over-predicted on it (GoEmotions: test ratio 1.09-1.11 against 1.08).
- ``crossfit`` (an ensemble's alternative, :mod:`xmlc.train.folds`): the training itself runs on
  train + validation, each member leaving out its share of the validation rows, so nothing runs
  here.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from xmlc.config import Config
from xmlc.data import concat_data
from xmlc.train.build import Training, new_model, seed_everything, start_training
from xmlc.train.distributed import DistEnv, any_process
from xmlc.train.stops import Interrupted, NonFiniteLoss, StopOnSignal

__all__ = ["refit", "refit_selected", "refit_sample", "SAMPLE_ENTRIES", "SAMPLE_MIN_ROWS"]

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


def refit_selected(tr: Training, cfg: Config, env: DistEnv, train_set, val_set, *, prior, run_dir: Path,
                   say) -> dict:
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
                f"saved: python -m xmlc.train --resume {run_dir} runs the refit again")
            raise
        except NonFiniteLoss:
            say("error: non-finite loss in the refit on train + validation; no metrics written")
            raise
