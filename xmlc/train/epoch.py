"""One pass over the training data: :func:`train_one_epoch`, the inner loop (forward, loss,
backward, clip, step), and what it logs every ``train.log_every`` steps."""

from __future__ import annotations

import time

import torch
from tqdm import tqdm

from xmlc.config import TrainConfig
from xmlc.models import ensemble_loss
from xmlc.optim import clip_grad_norm_
from xmlc.run import Progress
from xmlc.train.distributed import DistEnv, agree
from xmlc.train.stops import Interrupted, NonFiniteLoss, StepLimit

__all__ = ["train_one_epoch", "native_bf16"]


def train_one_epoch(model, loader, loss_fn, optimizer, scheduler, *, progress: Progress, tcfg: TrainConfig,
                    grad_clip: float | None, env: DistEnv, stop, writer=None, folds=None) -> None:
    """One pass over ``loader`` (from where ``progress`` says), counting steps in ``progress``.

    Args:
        tcfg: the ``train`` section (``max_steps``, ``amp``, ``log_every``, ``epochs``).
        grad_clip: ``optim.grad_clip``, the max gradient norm, or None.
        env: :class:`DistEnv`; under DDP every process takes the same decisions.
        stop: :class:`xmlc.train.stops.StopOnSignal` (anything with ``requested`` and ``signum``).
        writer: TensorBoard writer for ``train/*`` every ``train.log_every`` steps, or None.
        folds: ``train.final: crossfit``'s :class:`xmlc.train.final.Folds` (each member's loss
            leaves out its rows), or None.

    Raises:
        StepLimit: at ``train.max_steps``, before the next step.
        NonFiniteLoss: on a NaN/inf loss, before that step touches the parameters.
        Interrupted: after the step in flight when a SIGINT/SIGTERM arrived.
    """
    model.train()
    device = env.device
    amp = tcfg.amp and native_bf16(device)
    log = _LogWindow(writer, tcfg.log_every, env.world_size)
    with tqdm(loader, desc=f"epoch {progress.epoch + 1}/{tcfg.epochs}", leave=False, dynamic_ncols=True,
              disable=True if env.rank != 0 else None, mininterval=0.5) as bar:   # None: only on a terminal
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
            log_now = log.due(progress.step + 1)
            # the norm costs a pass over every gradient: only to clip, or to log it
            grad_norm = (clip_grad_norm_(model.parameters(), grad_clip)
                         if grad_clip is not None or (log_now and writer is not None) else None)
            lr = optimizer.param_groups[0]["lr"]   # the rate this step used
            optimizer.step()
            scheduler.step()
            progress.step += 1
            progress.batch_in_epoch += 1
            log.add(len(batch), agreed.loss)
            if log_now:
                log.flush(bar, progress.step, lr, grad_norm)
            if agreed.stop:
                raise Interrupted(stop.signum)


class _LogWindow:
    """Loss and throughput over the steps since the last log line (``train.log_every``)."""

    def __init__(self, writer, every: int, world_size: int):
        self.writer, self.every, self.world_size = writer, every, world_size
        self._reset()

    def _reset(self) -> None:
        self.start, self.examples, self.steps, self.loss_sum = time.perf_counter(), 0, 0, 0.0

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def add(self, batch_rows: int, loss: float) -> None:
        self.examples += batch_rows * self.world_size
        self.steps += 1
        self.loss_sum += loss

    def flush(self, bar, step: int, lr: float, grad_norm) -> None:
        """The window's mean loss and examples/s to the progress bar and TensorBoard; a new window."""
        rate = self.examples / max(time.perf_counter() - self.start, 1e-9)
        mean_loss = self.loss_sum / self.steps
        bar.set_postfix(loss=f"{mean_loss:.4f}", ex_s=f"{rate:,.0f}", refresh=False)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", mean_loss, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/grad_norm", float(grad_norm), step)
            self.writer.add_scalar("train/examples_per_s", rate, step)
        self._reset()


def native_bf16(device: torch.device) -> bool:
    """Whether ``train.amp`` turns bf16 autocast on for training steps on ``device``: on CUDA, and
    on CPUs with native bf16 matrix products (AVX512-BF16 or AMX; measured in
    ``benchmarks/bench_train.py --cases tricks``). Other CPUs emulate bf16, slower than float32, so
    they train in float32. Scoring (validation, test, predict) is float32 on every device
    (:func:`xmlc.inference.predict_scores`)."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(probe()) for probe in probes if probe is not None)
