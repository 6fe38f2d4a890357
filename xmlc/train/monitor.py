"""What a training run writes. :class:`RunFiles` owns the run directory (``config.yaml``,
``last.pt`` / ``best.pt``, ``metrics.json``, TensorBoard events, figures); the functions below
it log to TensorBoard: config and label statistics at the start, validation metrics, per-label
AP histogram and a micro PR curve per epoch, hparams at the end; with ``output.figures`` the
diagnostic figures of :mod:`xmlc.eval.figures` per epoch within :data:`FIGURES_MAX_SHARE` of the
run time and at the last (``figures/*``), and at the end
(``final/*``, also written as ``RUN_DIR/figures/*.png``).

Only rank 0 writes; every logging function takes the writer :func:`open_writer` returned.
:class:`RunDirLock` keeps a second run out of a directory in use, and :func:`check_fresh_run_dir`
keeps a new run from mixing its files with a finished one's.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

try:
    import fcntl
except ImportError:   # pragma: no cover - not POSIX: no lock
    fcntl = None

import numpy as np
import torch

from xmlc import stats
from xmlc.eval import figures
from xmlc.eval import metrics
from xmlc._json import dumps
from xmlc.checkpoint import remove_partial_writes, rng_state
from xmlc.config import Config, ConfigError, dump_config, to_dict
from xmlc.run import RunArtifact, TrainingState, pos_weight_power

__all__ = ["RunFiles", "RunDirLock", "check_fresh_run_dir", "figures_due",
           "open_writer", "log_run_start", "log_epoch", "log_final", "log_figures",
           "write_final_figures", "remove_figures", "FIGURES_DIR"]

FIGURES_DIR = "figures"   # RUN_DIR/figures/<name>.png
LOCK_FILE = ".lock"       # RUN_DIR/.lock: the pid of the run using the directory
RUN_OUTPUTS = ("last.pt", "best.pt", "metrics.json", "eval-*.json")   # what marks a directory as holding a run


def check_fresh_run_dir(directory: str | Path, *, resumed: bool, overwrite: bool) -> None:
    """A new run may start in ``directory`` only if no run's files are there, or with
    ``output.overwrite`` (a resumed run continues its own); else a :class:`ConfigError`."""
    directory = Path(directory)
    if resumed or overwrite or not directory.is_dir():
        return
    found = sorted({p.name for pattern in RUN_OUTPUTS for p in directory.glob(pattern)})
    if found:
        raise ConfigError(f"config key 'output.dir': {directory} holds a run ({', '.join(found[:4])}); set "
                          f"output.overwrite=true to replace it, continue it with --resume {directory}, or "
                          f"choose another output.dir")


def remove_run_outputs(directory: Path) -> None:
    """Delete the checkpoints and metrics an earlier run left in ``directory`` (output.overwrite)."""
    for pattern in RUN_OUTPUTS:
        for old in directory.glob(pattern):
            old.unlink()


class RunDirLock:
    """``directory`` held by this process while its run uses it: ``directory/.lock``, locked with
    ``flock`` (the lock dies with the process, so a crash leaves none behind) and holding the pid.
    A second run there fails at once with a :class:`ConfigError` naming the first one's pid.
    :meth:`release` removes the file, and ``directory`` too if this lock made it and it is empty."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.made = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path, self.fd = self.dir / LOCK_FILE, None
        while fcntl is not None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise ConfigError(f"config key 'output.dir': {self.dir} is in use by another run (pid {holder}, "
                                  f"{self.path}); wait for it to end, or choose another output.dir") from None
            if self.path.exists() and self.path.stat().st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)   # the holder removed the file between our open and lock: take the new one
        if fcntl is not None:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None
        if self.made:
            try:
                self.dir.rmdir()   # only an empty one: a run that failed before writing anything
            except OSError:
                pass


class RunFiles:
    """What a run leaves in ``output.dir``: ``config.yaml``, ``last.pt`` / ``best.pt``,
    ``metrics.json``, TensorBoard events and figures. Only the process with ``write`` (rank 0)
    writes; the others call the same methods, which do nothing there.

    ``train_set`` is the training :class:`xmlc.data.XMCData`, ``label_stats`` its
    :class:`xmlc.run.LabelStats`; ``tr`` below is a :class:`xmlc.train.build.Training` (its model,
    optimizer, scheduler and progress go into the :class:`xmlc.run.RunArtifact`).
    """

    def __init__(self, cfg: Config, train_set, label_stats, *, write: bool):
        self.cfg, self.dir, self.write, self.ocfg, self.writer = cfg, Path(cfg.output.dir), write, cfg.output, None
        self._pr_curve = {"pr_curve_samples": PR_CURVE_SAMPLES, "seed": cfg.train.seed}
        # the long-tail figure draws the pos_weight used
        self._long_tail = {"num_train": label_stats.num_examples,
                           "pos_weight_power": pos_weight_power(cfg.loss)}
        self._written_at, self._best_written = None, None   # time of the last save_progress; epoch in best.pt
        self._opened_at = time.monotonic()   # the run's start, for FIGURES_MAX_SHARE
        self._figures_s = self._figures_cost = 0.0   # seconds in validation figures so far; at the last drawing
        self._fixed = {"config": cfg, "num_features": train_set.num_features, "num_labels": train_set.num_labels,
                       "label_stats": label_stats, "label_names": train_set.label_names,
                       "featurizer": train_set.featurizer}

    def open(self, label_stats, *, resumed: bool, step: int) -> None:
        """Make the directory, write ``config.yaml``, open TensorBoard (a fresh run replaces the
        events and figures of an earlier run there; a resumed one drops events after ``step``)."""
        if not self.write:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_partial_writes(self.dir)   # temp files of checkpoint writes a crash interrupted
        (self.dir / "config.yaml").write_text(dump_config(self.cfg))
        if not resumed:   # a new run replaces the one there (output.overwrite)
            remove_run_outputs(self.dir)
            remove_figures(self.dir)
        if self.ocfg.tensorboard:
            self.writer = open_writer(self.dir, resumed=resumed, step=step)
            if not resumed:
                log_run_start(self.writer, self.cfg, label_stats.counts, label_stats.num_examples,
                              label_stats.pos_weight)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def artifact(self, tr, thresholds: torch.Tensor | None = None) -> RunArtifact:
        """The run as it stands: ``tr``'s weights, progress and training state (``last.pt``)."""
        state = TrainingState(tr.optimizer.state_dict(), tr.scheduler.state_dict(), rng_state())
        return RunArtifact(weights=tr.model.state_dict(), progress=tr.progress, thresholds=thresholds,
                           training=state, **self._fixed)

    def save(self, name: str, tr, thresholds: torch.Tensor | None = None) -> None:
        if self.write:
            self.artifact(tr, thresholds).save(self.dir / name)

    def save_epoch(self, tr, *, last: bool) -> None:
        """After an epoch: :meth:`save_progress` at the run's first epoch, at its ``last`` one, and
        whenever ``output.save_every_s`` seconds have passed since the previous write (bibtex's
        123 MB checkpoint took 0.16 s to write, a quarter of its 2-thread epoch)."""
        if last or self._written_at is None or time.monotonic() - self._written_at >= self.ocfg.save_every_s:
            self.save_progress(tr)

    def save_progress(self, tr) -> None:
        """``last.pt`` (everything ``--resume`` needs), and :meth:`save_best` if the best epoch
        changed since ``best.pt`` was last written."""
        self.save("last.pt", tr)
        self.save_best(tr)
        self._written_at = time.monotonic()

    def save_best(self, tr) -> None:
        """``best.pt`` with the best weights so far (``tr.best_model``) if not yet written: the
        checkpoint without the optimizer, scheduler and RNG states (``--resume`` takes ``last.pt``)."""
        if not self.write or tr.best_model is None or tr.progress.selected_epoch == self._best_written:
            return
        dataclasses.replace(self.shipped(tr), weights=tr.best_model).save(self.dir / "best.pt")
        self._best_written = tr.progress.selected_epoch

    def shipped(self, tr, thresholds: torch.Tensor | None = None) -> RunArtifact:
        """The run without the optimizer, scheduler and RNG states: what ``best.pt`` holds
        (evaluate / predict need the weights; ``--resume`` takes ``last.pt``)."""
        return RunArtifact(weights=tr.model.state_dict(), progress=tr.progress, thresholds=thresholds,
                           **self._fixed)

    def best_model(self, device) -> dict | None:
        """The weights in ``best.pt`` (a resumed run's best so far), or None."""
        path = self.dir / "best.pt"
        return RunArtifact.load(path, map_location=device).weights if path.is_file() else None

    def log_epoch(self, step: int, val_metrics: dict, scores, labels, epoch_time: float,
                  figure_inputs: dict, *, epoch: int, last: bool) -> float | None:
        """TensorBoard after epoch ``epoch`` (:func:`log_epoch`); with ``output.figures`` the
        figures too when :func:`figures_due`. Returns the seconds this logging took when it drew the
        figures (the next drawing's cost estimate), None when it did not."""
        if self.writer is None:
            return None
        due = self.ocfg.figures and figures_due(
            epoch, last=last, every=1, max_share=FIGURES_MAX_SHARE,
            spent=self._figures_s, cost=self._figures_cost, elapsed=time.monotonic() - self._opened_at)
        start = time.perf_counter()
        log_epoch(self.writer, step, val_metrics, scores, labels, epoch_time, **self._pr_curve,
                  figure_inputs=figure_inputs if due else None)
        if not due:
            return None
        self._figures_cost = time.perf_counter() - start
        self._figures_s += self._figures_cost
        return self._figures_cost

    def finish(self, tr, thresholds: torch.Tensor, results: dict, *, final_scores,
               figure_inputs: dict) -> None:
        """``best.pt`` (the final weights with their thresholds), ``metrics.json``, the final figures
        from ``final_scores`` = (split name, scores (N, L), labels), the hparams."""
        if not self.write:
            return
        self.shipped(tr, thresholds.float().cpu()).save(self.dir / "best.pt")
        (self.dir / "metrics.json").write_text(dumps(results, indent=2) + "\n")   # NaN -> null (xmlc._json)
        if self.ocfg.figures:
            split, scores, labels = final_scores
            write_final_figures(self.dir, self.writer, tr.progress.step, split, scores, labels, **figure_inputs,
                                **self._long_tail)
        if self.writer is not None:
            log_final(self.writer, self.cfg, results)

    def describe(self) -> str:
        where = self.dir.resolve()
        return (f"outputs: {where}/ (config.yaml, best.pt, last.pt, metrics.json"
                f"{', figures/*.png' if self.ocfg.figures else ''}"
                f"{', TensorBoard events: tensorboard --logdir ' + str(where) if self.ocfg.tensorboard else ''}); "
                f"one HTML page: python -m xmlc.report {self.dir}")


#: An epoch's validation figures are skipped while drawing them again (at the previous drawing's
#: cost) would take the figures' total above this share of the time since the run started; on
#: small data drawing them takes longer than the epoch. The first and last epochs always draw.
FIGURES_MAX_SHARE = 0.05
#: About this many (score, target) entries, whole rows, go into the TensorBoard PR curve.
PR_CURVE_SAMPLES = 100_000


def figures_due(epoch: int, *, last: bool, every: int, max_share: float, spent: float, cost: float,
                elapsed: float) -> bool:
    """Whether the validation of epoch ``epoch`` (1-based) draws the figures: ``every`` > 0 and
    either the ``last`` epoch, or a multiple of ``every`` where drawing them again, at ``cost`` s
    (the previous drawing's; 0 before the first), keeps their total (``spent`` s so far) within
    ``max_share`` of the ``elapsed`` run time (``max_share`` >= 1: no limit).

    Example:
        >>> figures_due(2, last=False, every=1, max_share=0.05, spent=0.6, cost=0.6, elapsed=10.0)
        False
        >>> figures_due(2, last=False, every=1, max_share=0.05, spent=0.0, cost=0.0, elapsed=1.0)
        True
    """
    if every == 0:
        return False
    return last or (epoch % every == 0 and (max_share >= 1 or spent + cost <= max_share * elapsed))


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
    ``figure_inputs`` (the keyword arguments of :func:`xmlc.eval.figures.run_figures` besides scores,
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
    """Every config key as an hparam beside the final calibrated metrics (test, else validation),
    and the final positive-rate and expected-positive ratios (all, per bucket) as scalars under
    ``final/<split>/``."""
    split = "test_calibrated" if "test_calibrated" in results else "val_calibrated"
    hparams = {}
    for section, values in to_dict(cfg).items():
        for key, value in values.items():
            hparams[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    final = {f"hparams/{split}/{k}": v for k, v in results[split].items()
             if isinstance(v, (int, float)) and math.isfinite(v)}
    writer.add_hparams(hparams, final, run_name="hparams")
    for name, value in results[split].items():   # the calibration of the shipped decisions, by bucket
        if name.startswith(("positive_rate_ratio", "expected_positive_ratio")) and value is not None \
                and math.isfinite(value):
            writer.add_scalar(f"final/{split}/{name}", value)


def log_figures(writer, figs: dict, step: int, *, prefix: str = "figures") -> None:
    """``add_figure`` each ``{name: Figure}`` under ``prefix/name`` (IMAGES tab)."""
    for name, fig in figs.items():
        writer.add_figure(f"{prefix}/{name}", fig, step, close=False)   # not pyplot-managed: nothing to close


def write_final_figures(out: Path, writer, step: int, split: str, scores, labels, *, train_counts, num_train: int,
                        buckets, thresholds, pos_weight, calibration: str,
                        pos_weight_power: float = 1.0) -> list[Path]:
    """The run's figures from the final ``scores`` of ``split`` plus the label long tail of the
    training split: PNG files in ``out/figures/`` and, with a writer, ``final/<name>`` in TensorBoard.

    Returns the paths written.
    """
    figs = figures.run_figures(scores, labels, train_counts=train_counts, buckets=buckets, thresholds=thresholds,
                               pos_weight=pos_weight, calibration=calibration, title=f"{split}, final model")
    figs["long_tail"] = figures.long_tail(train_counts, num_train, buckets=buckets, title="training split",
                                          power=pos_weight_power)
    paths = [figures.save_png(fig, out / FIGURES_DIR / f"{name}.png") for name, fig in figs.items()]
    if writer is not None:
        log_figures(writer, figs, step, prefix="final")
        writer.flush()
    return paths


def remove_figures(out: Path) -> None:
    """Delete the PNGs a previous run left in ``out/figures/`` (a fresh run replaces its directory's run)."""
    for old in (out / FIGURES_DIR).glob("*.png"):
        old.unlink()
