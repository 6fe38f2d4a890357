"""What a training phase is built from: the model, the loaders, AdamW and its schedule, and the
:class:`Training` that holds them with the run's :class:`xmlc.run.Progress`."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from xmlc import data as xdata
from xmlc.checkpoint import load_weights, set_rng_state
from xmlc.config import Config, ModelConfig, TrainConfig
from xmlc.models import build_model, init_output_bias
from xmlc.optim import AdamW, Schedule, build_optimizer, build_scheduler
from xmlc.run import Progress, RunArtifact
from xmlc.train import selection
from xmlc.train.distributed import DistEnv, ResumableSampler, data_parallel, steps_per_epoch
from xmlc.train.epoch import train_one_epoch
from xmlc.train.folds import Folds

__all__ = ["Training", "start_training", "new_model", "make_loader", "make_eval_loader", "seed_everything"]


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
    optimizer: AdamW
    scheduler: Schedule
    sampler: ResumableSampler
    loader: xdata.DeviceLoader
    progress: Progress = field(default_factory=Progress)
    best_model: dict | None = None   # weights of the selected epoch so far
    folds: Folds | None = None       # train.final: crossfit: which member leaves out which row

    def train_epoch(self, *, tcfg: TrainConfig, grad_clip: float | None, env: DistEnv, stop,
                    writer=None) -> None:
        """:func:`train_one_epoch` on the current epoch, from the batch ``progress`` has reached."""
        self.sampler.set_epoch(self.progress.epoch, skip_batches=self.progress.batch_in_epoch)
        train_one_epoch(self.step_model, self.loader, self.loss_fn, self.optimizer, self.scheduler,
                        progress=self.progress, tcfg=tcfg, grad_clip=grad_clip, env=env, stop=stop,
                        writer=writer, folds=self.folds)

    def end_epoch(self, val_metrics: dict, metric: str, margin: float = 0.0) -> bool:
        """:func:`xmlc.train.selection.end_epoch`, keeping the weights of the epoch it selects."""
        selected = selection.end_epoch(self.progress, val_metrics, metric, margin)
        if selected:
            weights = self.model.state_dict()
            if self.best_model is None:
                self.best_model = {k: v.detach().clone() for k, v in weights.items()}
            else:   # into the same buffers: a large table is not allocated (page-faulted) afresh each time
                for name, value in weights.items():
                    self.best_model[name].copy_(value)
        return selected


def start_training(cfg: Config, env: DistEnv, dataset, model: nn.Module, loss_fn: nn.Module, *,
                   resume: RunArtifact | None = None, folds: Folds | None = None, lr_scale: float = 1.0) -> Training:
    """Sampler, loader, AdamW and schedule to train ``model`` on ``dataset``; with ``resume`` (a
    ``last.pt`` run) the model, optimizer, schedule, progress and RNG states continue from it;
    with ``folds`` (``train.final: crossfit``) each member leaves out its rows of ``dataset``.

    Each process takes its share of the global ``data.batch_size``; the schedule spans
    ``train.epochs`` epochs of ``dataset`` at ``lr_scale`` x the configured rates.
    """
    batch_size = cfg.data.batch_size // env.world_size
    sampler = ResumableSampler(dataset, env, seed=cfg.train.seed, batch_size=batch_size)
    loader = make_loader(dataset, batch_size, sampler, env=env)
    total_steps = steps_per_epoch(len(dataset), cfg.data.batch_size, env.world_size) * cfg.train.epochs
    optimizer = build_optimizer(cfg.optim, model, lr_scale=lr_scale)
    scheduler = build_scheduler(cfg.optim, optimizer, total_steps=total_steps)
    progress = Progress()
    if resume is not None:
        load_weights(model, resume.weights, source="the --resume checkpoint")
        optimizer.load_state_dict(resume.training.optimizer)
        scheduler.load_state_dict(resume.training.scheduler)
        progress = Progress(**vars(resume.progress))
        set_rng_state(resume.training.rng)
    if folds is not None:   # looked up by the row ids of batches, on the device
        folds = folds._replace(held_out_by=folds.held_out_by.to(env.device))
    return Training(model, data_parallel(model, env), loss_fn, optimizer, scheduler, sampler, loader, progress,
                    folds=folds)


def make_loader(dataset, batch_size: int, sampler, *, env: DistEnv) -> xdata.DeviceLoader:
    """Batches of ``sampler``'s rows gathered on this process's device, where ``dataset`` is
    copied once (:class:`xmlc.data.DeviceLoader`)."""
    return xdata.DeviceLoader(dataset, batch_size, sampler=sampler, device=env.device)


def make_eval_loader(dataset, *, seed: int, env: DistEnv) -> xdata.DeviceLoader:
    """This process's shard of ``dataset`` in order, in batches of :data:`xmlc.data.EVAL_BATCH_SIZE`."""
    sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=False, seed=seed)
    return make_loader(dataset, xdata.EVAL_BATCH_SIZE, sampler, env=env)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
