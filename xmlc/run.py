"""One trained run as one typed object: :class:`RunArtifact`, what ``last.pt`` and ``best.pt`` hold.

Training writes it (:class:`xmlc.train.monitor.RunFiles`), ``--resume`` continues from it, and
``evaluate``, ``predict``, ``report`` and :func:`xmlc.load` read it: the config, the weights, the
label names, the featuriser of a raw-text run, the training split's label statistics, the
calibrated thresholds and where the run stands (:class:`Progress`). ``last.pt`` adds the optimizer,
schedule and RNG states (:class:`TrainingState`).

On disk it is one plain dict (:meth:`RunArtifact.to_dict`, the layout in :mod:`xmlc.checkpoint`)
written atomically, read with ``torch.load(weights_only=True)``; a file that lacks a field or holds
one of the wrong kind is a :class:`xmlc.errors.CheckpointError` naming the file and the field.

Layer: above config, models and stats (it rebuilds the model the config names); below the commands.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xmlc import stats
from xmlc.checkpoint import FORMAT, checkpoint_path, load_checkpoint, load_weights, save_checkpoint
from xmlc.config import Config, ConfigError, LossConfig, from_dict, to_dict
from xmlc.errors import CheckpointError
from xmlc.models import build_model, weights_to_load

__all__ = ["RunArtifact", "Progress", "LabelStats", "TrainingState"]


@dataclass
class Progress:
    """Where a run stands; the epoch rules that move it are in :mod:`xmlc.train.selection`."""

    step: int = 0                # optimizer steps done
    epoch: int = 0               # epoch in progress (0-based)
    batch_in_epoch: int = 0      # batches of `epoch` done: the data-order state
    best_value: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0          # epochs in a row clearly past the best (beyond train.margin)
    history: list = field(default_factory=list)   # per-epoch validation metrics
    selected_epoch: int = -1     # the epoch whose weights ship: the latest within train.margin of the best

    def __post_init__(self):
        if self.selected_epoch < 0:   # a run saved before any epoch was selected: the best one
            self.selected_epoch = self.best_epoch

    def next_epoch(self) -> None:
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0


@dataclass
class LabelStats:
    """Label statistics of the training split: what the loss, the output bias, the metrics and the
    run file need. Validation and test never contribute. Only ``counts``, ``num_examples`` and
    ``pos_weight`` are saved; the rest follows from them (and the config's ``loss`` section)."""

    counts: np.ndarray                  # (L,) int64 positives per label
    num_examples: int                   # N, rows of the training split
    pos_weight: torch.Tensor | None     # (L,) the loss's positive weight (``loss.pos_weight``)
    label_weight: torch.Tensor | None = None   # (L,) the loss's per-label weight (``loss.label_weight``)

    @classmethod
    def of(cls, data, lcfg: LossConfig) -> LabelStats:
        """The statistics of ``data``'s labels (an :class:`xmlc.data.XMCData`), loss weights as ``lcfg`` says."""
        counts, num_examples = stats.label_and_example_counts(data.labels, data.num_labels)
        pos_weight, label_weight = loss_weights(lcfg, counts, num_examples)
        return cls(counts, num_examples, pos_weight, label_weight)

    @functools.cached_property
    def buckets(self) -> np.ndarray:
        """(L,) head / torso / tail bucket of each label (:func:`xmlc.stats.frequency_buckets`)."""
        return stats.frequency_buckets(self.counts)

    @functools.cached_property
    def propensities(self) -> np.ndarray:
        """(L,) label propensities for PSP@k (:func:`xmlc.stats.propensity`)."""
        return stats.propensity(self.counts, self.num_examples)

    def output_prior(self) -> torch.Tensor:
        """(L,) the constant probability that minimises the loss: the positive rate ``p``, or with
        ``pos_weight`` w the minimiser of weighted BCE, ``w p / (w p + 1 - p)``."""
        prior = torch.as_tensor(self.counts, dtype=torch.float32) / max(self.num_examples, 1)
        if self.pos_weight is not None:
            prior = self.pos_weight * prior / (self.pos_weight * prior + 1 - prior)
        return prior

    def to_dict(self) -> dict:
        return {"counts": torch.as_tensor(self.counts, dtype=torch.int64),
                "num_examples": int(self.num_examples), "pos_weight": self.pos_weight}

    @classmethod
    def from_dict(cls, d: dict) -> LabelStats:
        return cls(np.asarray(d["counts"].numpy(), dtype=np.int64), int(d["num_examples"]), d.get("pos_weight"))


def pos_weight_power(lcfg: LossConfig) -> float:
    """The power of neg/pos that ``loss.pos_weight`` names: 0.5 for sqrt_neg_pos, else 1."""
    return 0.5 if lcfg.pos_weight == "sqrt_neg_pos" else 1.0


def loss_weights(lcfg: LossConfig, counts, num_examples: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(pos_weight (L,) or None, per-label loss weight (L,) or None) from the ``loss`` section."""
    pos_weight = None
    if lcfg.pos_weight != "none":
        pos_weight = stats.pos_weight_from_counts(counts, num_examples, power=pos_weight_power(lcfg))
    weight = None
    if lcfg.label_weight == "class_balanced":
        weight = stats.class_balanced_weights(counts)
    elif lcfg.label_weight == "propensity":
        inverse = 1.0 / stats.propensity(counts, num_examples)
        weight = inverse / inverse.mean()   # normalised to mean 1, like class_balanced
    return pos_weight, (None if weight is None else weight.float())


@dataclass
class TrainingState:
    """What ``--resume`` needs beyond the weights (``last.pt`` only)."""

    optimizer: dict   # optimizer.state_dict()
    scheduler: dict   # scheduler.state_dict()
    rng: dict         # xmlc.checkpoint.rng_state()


@dataclass
class RunArtifact:
    """A trained run (see the module docstring); ``weights`` is the model's ``state_dict``."""

    config: Config
    weights: dict
    num_features: int
    num_labels: int
    label_stats: LabelStats
    progress: Progress = field(default_factory=Progress)
    label_names: list | None = None       # column j of the output is label_names[j]
    featurizer: dict | None = None        # raw-text runs: TextFeaturizer.state_dict()
    thresholds: torch.Tensor | None = None   # (L,) calibrated probability thresholds
    training: TrainingState | None = None    # last.pt: optimizer, schedule and RNG states

    @property
    def best(self) -> dict:
        """The selection: early-stopping metric, its best value and epoch, the epoch that ships."""
        p = self.progress
        return {"metric": self.config.train.early_stopping_metric, "value": p.best_value, "epoch": p.best_epoch,
                "selected_epoch": p.selected_epoch}

    def shipped(self) -> RunArtifact:
        """This run without the training state: what ``best.pt`` holds."""
        return dataclasses.replace(self, training=None)

    def build_model(self, device: str | torch.device = "cpu", *, source: str = "the checkpoint") -> nn.Module:
        """The model the config builds, holding ``weights``, in eval mode on ``device``: its
        parameters are the artifact's tensors themselves (no copy; on another device, their copies
        there), so the model is for inference; a training run builds its own (:mod:`xmlc.train.build`).

        Raises:
            CheckpointError: the weights do not fit that model (:func:`xmlc.checkpoint.load_weights`).
        """
        with weights_to_load():   # no random initialisation: the weights overwrite it
            model = build_model(self.config.model, self.num_features, self.num_labels)
        load_weights(model, self.weights, source=source, assign=True)
        return model.to(device).eval()

    def to_dict(self) -> dict:
        """The plain dict written to disk (layout: :mod:`xmlc.checkpoint`)."""
        p = self.progress
        out = {"format": FORMAT, "model": self.weights, "progress": vars(p).copy(), "step": p.step, "epoch": p.epoch,
               "config": to_dict(self.config), "num_features": self.num_features, "num_labels": self.num_labels,
               "label_stats": self.label_stats.to_dict(), "label_names": self.label_names,
               "featurizer": self.featurizer, "thresholds": self.thresholds, "best": self.best}
        if self.training is not None:
            out |= dataclasses.asdict(self.training)
        return out

    @classmethod
    def from_dict(cls, ckpt: dict, *, source: str = "the checkpoint") -> RunArtifact:
        """The run in a dict read from disk; a missing or ill-typed field is a :class:`CheckpointError`."""
        for key, kind in _FIELDS.items():
            if not isinstance(ckpt.get(key), kind):
                got = "missing" if key not in ckpt else f"a {type(ckpt[key]).__name__}"
                raise CheckpointError(f"{source} is not a complete xmlc run: field {key!r} is {got}")
        _check_per_label(ckpt, source)
        try:
            config = from_dict(Config, ckpt["config"])
        except ConfigError as exc:
            raise CheckpointError(f"{source}: its config does not load in this xmlc ({exc})") from None
        training = (TrainingState(ckpt["optimizer"], ckpt["scheduler"], ckpt["rng"])
                    if "optimizer" in ckpt else None)
        known = {f.name for f in dataclasses.fields(Progress)}
        progress = Progress(**{k: v for k, v in (ckpt.get("progress") or {}).items() if k in known})
        return cls(config, ckpt["model"], int(ckpt["num_features"]), int(ckpt["num_labels"]),
                   LabelStats.from_dict(ckpt["label_stats"]), progress, ckpt.get("label_names"),
                   ckpt.get("featurizer"), ckpt.get("thresholds"), training)

    def save(self, path: str | Path) -> Path:
        """Write atomically (:func:`xmlc.checkpoint.save_checkpoint`); the previous file survives a crash."""
        return save_checkpoint(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu", *,
             in_run_dir: str = "last.pt", mmap: bool = False) -> RunArtifact:
        """Read a run file; a run directory means its ``in_run_dir``. ``mmap``: the tensors map the
        file (:func:`xmlc.checkpoint.load_checkpoint`; ``predict`` and ``evaluate`` use it)."""
        path = checkpoint_path(path, in_run_dir)
        return cls.from_dict(load_checkpoint(path, map_location=map_location, mmap=mmap), source=f"checkpoint {path}")


_FIELDS = {"config": dict, "model": dict, "num_features": int, "num_labels": int, "label_stats": dict}


def _check_per_label(ckpt: dict, source: str) -> None:
    """Every per-label field of a run file holds ``num_labels`` entries (a crafted or damaged file
    would otherwise fail later, deep in indexing), else a :class:`CheckpointError` naming it."""
    L, stats_ = ckpt["num_labels"], ckpt["label_stats"]
    fields = {"label_stats.counts": stats_.get("counts", "missing"), "label_stats.pos_weight": stats_.get("pos_weight"),
              "thresholds": ckpt.get("thresholds"), "label_names": ckpt.get("label_names")}
    for key, value in fields.items():
        if value is None and key != "label_stats.counts":
            continue
        size = (tuple(value.shape) if torch.is_tensor(value) else (len(value),) if isinstance(value, list) else None)
        if size != (L,):
            got = (f"{len(value):,} names" if isinstance(value, list) else f"shape {size}" if size is not None
                   else repr(value) if isinstance(value, str) else f"a {type(value).__name__}")
            raise CheckpointError(f"{source} is not a consistent xmlc run: {key} holds {got} for num_labels={L:,}")
    if not isinstance(stats_.get("num_examples"), int):
        raise CheckpointError(f"{source} is not a complete xmlc run: field 'label_stats.num_examples' is missing")
    if ckpt.get("featurizer") is not None and not isinstance(ckpt["featurizer"], dict):
        raise CheckpointError(f"{source} is not a complete xmlc run: field 'featurizer' is a "
                              f"{type(ckpt['featurizer']).__name__}")
