"""One typed, strict config tree, loaded from YAML with dotted command-line overrides.

The tree is a handful of nested dataclasses; their defaults, with a comment each, are the
documentation of every knob. Loading is strict in the file and on the command line alike:
an unknown key, a value of the wrong type or a value outside the key's allowed range is a
:class:`ConfigError` naming the key and saying what it accepts. The allowed values sit in
the annotations (``batch_size: PositiveInt``, ``dropout: Annotated[float, Range(ge=0, lt=1)]``,
``name: Annotated[str, OneOf(models)]``), so every key is checked when the tree is built,
before any data is read.

Example::

    >>> cfg = load_config(None, ["optim.lr=3e-4", "model.hidden=[1024]"])
    >>> cfg.optim.lr, cfg.model.hidden
    (0.0003, [1024])

Components receive their own section (``build_model(cfg.model, ...)``,
``build_loss(cfg.loss, ...)``), never the whole tree.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping, Optional, Union

import yaml

from xmlc.errors import ConfigError

__all__ = [
    "ConfigError",
    "Config",
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "OptimConfig",
    "TrainConfig",
    "EvalConfig",
    "OutputConfig",
    "FeaturesConfig",
    "load_config",
    "apply_overrides",
    "from_dict",
    "to_dict",
    "dump_config",
    "Range",
    "OneOf",
]


class _RangeError(ConfigError):
    """The value has the right type but lies outside the key's allowed values."""


# ---------------------------------------------------------------------------------------
# Allowed values, declared in the annotations: ``Annotated[type, check, ...]``.


@dataclass(frozen=True)
class Range:
    """A numeric key's allowed interval: ``ge``/``gt`` bound it below, ``le``/``lt`` above."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __str__(self) -> str:
        def num(x):
            return str(x) if isinstance(x, int) else f"{x:g}"
        low = f"[{num(self.ge)}" if self.ge is not None else f"({num(self.gt)}" if self.gt is not None else None
        high = f"{num(self.le)}]" if self.le is not None else f"{num(self.lt)})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f"{'>=' if self.ge is not None else '>'} {low[1:]}"
        return f"{'<=' if self.le is not None else '<'} {high[:-1]}"

    def __call__(self, value: Any, key: str) -> None:
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        if not ok:   # NaN fails every comparison
            raise _RangeError(f"config key '{key}' must be {self}, got {value!r}")


@dataclass(frozen=True)
class NonEmpty:
    """A list key must hold at least one entry; a string key at least one character."""

    def __call__(self, value: Any, key: str) -> None:
        if not value:
            kind = "list" if isinstance(value, list) else "string"
            raise _RangeError(f"config key '{key}' must be a non-empty {kind}, got {value!r}")


@dataclass(frozen=True)
class OneOf:
    """A name key must be a key of a registry, read when the value is checked (so names
    registered by the user count): ``registry()`` returns the dict, ``where`` names it."""

    registry: Callable[[], Mapping[str, Any]]
    where: str

    def __call__(self, value: Any, key: str) -> None:
        names = self.registry()
        if value not in names:
            raise _RangeError(f"config key '{key}' must be one of {', '.join(map(repr, names))} "
                              f"(the names in {self.where}); got {value!r}")


def _models() -> Mapping[str, Any]:
    from xmlc.models import MODELS   # lazily: the config stays importable without torch
    return {**MODELS, "auto": None}   # auto: picked from the data's shape (xmlc.recipe)


def _losses() -> Mapping[str, Any]:
    from xmlc.losses import LOSSES
    return LOSSES


def _synthetic_presets() -> Mapping[str, Any]:
    from xmlc.data import SYNTHETIC_PRESETS
    return SYNTHETIC_PRESETS


PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]
Positive = Annotated[float, Range(gt=0)]
NonNegative = Annotated[float, Range(ge=0)]
Fraction = Annotated[float, Range(gt=0, lt=1)]        # a share of the examples, both parts non-empty
Rate = Annotated[float, Range(ge=0, lt=1)]            # dropout, clip: 0 is off, 1 would drop everything


@dataclass
class DataConfig:
    # Training file in XMC repository / libsvm multilabel format (.gz ok).
    # None: use the built-in synthetic preset named by `synthetic`.
    train: Optional[str] = None
    # Validation file. None: a stratified split of `val_fraction` is carved from train.
    val: Optional[str] = None
    # Test file. None with a file train: no test evaluation. With synthetic data a
    # stratified `val_fraction` split is carved from the generated set instead.
    test: Optional[str] = None
    # Synthetic preset (xmlc.data.SYNTHETIC_PRESETS) used when `train` is None.
    synthetic: Annotated[str, OneOf(_synthetic_presets, "xmlc.data.SYNTHETIC_PRESETS")] = "default"
    # Fraction of train held out for validation when `val` is None; with synthetic data the same
    # fraction is held out for test first, so training keeps (1 - val_fraction) ** 2 of it.
    val_fraction: Fraction = 0.1
    # Row normalisation of the features: l2 | l1 | none.
    normalize: Literal["l2", "l1", "none"] = "l2"
    # Global batch size (split evenly across processes under torchrun).
    batch_size: Annotated[int, Range(ge=1, le=2**24)] = 256
    # --- your own data (xmlc.data.tables; README "Your own data") ---
    # File format of train/val/test: auto (from the extension, else the first line; the run
    # says what it decided) | xmc | libmultilabel ([id<TAB>]labels<TAB>text) | table (.csv/.tsv)
    # | jsonl | npz (.npy dense or .npz scipy CSR features + a labels file per split).
    format: Literal["auto", "xmc", "libmultilabel", "table", "jsonl", "npz"] = "auto"
    # Text column(s) of a table/jsonl: a name, a 0-based index (header-less files), or a
    # list of them joined with a space (title + body).
    text_column: Union[str, int, list[Union[str, int]]] = "text"
    # Labels column (name or 0-based index); its cell holds labels separated by label_sep
    # (JSONL may hold a list).
    labels_column: Union[str, int] = "labels"
    # Separator of the labels in a cell / labels-file line (" ": any whitespace).
    label_sep: str = ","
    # First row of a table is a header: auto (when it holds the named columns) | true | false.
    header: Union[Literal["auto"], bool] = "auto"
    # Labels files (one line per row) for .npy/.npz feature matrices.
    train_labels: Optional[str] = None
    val_labels: Optional[str] = None
    test_labels: Optional[str] = None
    # Label names file, line i = name of label id i (integer ids in the data become names;
    # the label columns follow this file's order). None: names as they appear in the data.
    label_names: Optional[str] = None
    # Skip (and count) malformed rows instead of stopping before training.
    skip_bad_rows: bool = False


@dataclass
class ModelConfig:
    # Encoder name in xmlc.models.MODELS: linear | mlp | wide_deep (add your own to the registry), or
    # auto: mlp when the members' own [D x 1,024] input tables hold at most 2^24 weights, else
    # wide_deep (xmlc.recipe.model_family); the other auto keys then take that family's values.
    name: Annotated[str, OneOf(_models, "xmlc.models.MODELS, or auto")] = "mlp"
    # Hidden layer sizes of the MLP; the first layer is an EmbeddingBag over the features.
    # auto: one layer sized from D, L and the ensemble by xmlc.models.auto_hidden ([1024] where
    # model.name: auto picks the mlp).
    hidden: Union[Literal["auto"], Annotated[list[PositiveInt], NonEmpty()]] = field(default_factory=lambda: [512])
    # Dropout after each hidden layer.
    dropout: Rate = 0.2
    # Dropout on the input features (drops non-zero entries of the sparse rows); auto: the model
    # family's (xmlc.recipe.PROFILES: mlp 0.3, wide_deep 0.1).
    input_dropout: Union[Literal["auto"], Rate] = 0.0
    # Normalisation after each hidden linear layer: layer | batch | none.
    norm: Literal["layer", "batch", "none"] = "layer"
    # Output bias at start: zero, or prior = log(p / (1 - p)) of each label's train frequency;
    # auto: the model family's (mlp zero, wide_deep prior).
    output_bias: Literal["zero", "prior", "auto"] = "zero"
    # Members of a deep ensemble (>1: M encoders, each with its own loss, scores averaged).
    ensemble: PositiveInt = 1


@dataclass
class LossConfig:
    # Loss in xmlc.losses.LOSSES: bce | focal | asymmetric.
    name: Annotated[str, OneOf(_losses, "xmlc.losses.LOSSES")] = "bce"
    # Focal loss focusing parameter (Lin et al. 2017); auto: the model family's
    # (xmlc.recipe.PROFILES: mlp 1.0, wide_deep 0.5).
    gamma: Union[Literal["auto"], NonNegative] = 2.0
    # Focal loss positive-class weight alpha; None: no alpha weighting.
    alpha: Optional[Annotated[float, Range(ge=0, le=1)]] = None
    # Asymmetric loss focusing on negatives (Ridnik et al. 2021; positives unfocused, negative
    # probabilities shifted by 0.05 as published).
    gamma_neg: NonNegative = 4.0
    # Online hard example mining: the share of the loss entries kept, the largest (1.0 = off).
    ohem: Annotated[float, Range(gt=0, le=1)] = 1.0
    # Positive-class weight per label from the training split: none | neg_pos = (N - pos) / pos |
    # sqrt_neg_pos = its square root (a softer weighting).
    pos_weight: Literal["none", "neg_pos", "sqrt_neg_pos"] = "none"
    # Per-label loss weight: none | class_balanced (Cui et al. 2019) | propensity (1/p_l, Jain et al. 2016).
    label_weight: Literal["none", "class_balanced", "propensity"] = "none"


@dataclass
class OptimConfig:
    # AdamW learning rate (peak, after warmup).
    lr: Positive = 3e-3
    # AdamW decoupled weight decay, applied to weight matrices only (not biases or norms).
    weight_decay: NonNegative = 0.01
    # Linear warmup length as a fraction of all training steps.
    warmup: Annotated[float, Range(ge=0, le=1)] = 0.05
    # Learning-rate schedule after warmup: cosine (to 0 at the last step) | constant.
    schedule: Literal["cosine", "constant"] = "cosine"
    # Clip the global gradient norm to this value; None: no clipping (the norm is still logged).
    grad_clip: Optional[Positive] = 1.0


@dataclass
class TrainConfig:
    # Number of passes over the training split (the schedule spans all of them).
    # auto: about a fixed number of optimizer steps in a range of passes, by model family
    # (xmlc.recipe.PROFILES: mlp 3,000 steps in 3-30 passes, wide_deep 1,000 in 3-10).
    epochs: Union[Literal["auto"], PositiveInt] = 10
    # Stop after this many optimizer steps in total, saving last.pt as on an interrupt;
    # the schedule still spans `epochs`, so `--resume` continues the same run. None: no limit.
    max_steps: Optional[PositiveInt] = None
    # Seed for initialisation, data order, dropout and splits.
    seed: Annotated[int, Range(ge=0, lt=2**32)] = 0
    # auto (cuda if available) | cpu | cuda.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # bf16 autocast for the training steps on CUDA and on CPUs with native bf16 (AVX512-BF16 or
    # AMX; elsewhere on CPU: float32). The loss, the optimizer and CPU scoring stay float32.
    amp: bool = True
    # Validation metric that selects best.pt and drives early stopping (higher is better).
    early_stopping_metric: str = "auprc_macro"
    # Stop after this many epochs without improvement; 0: never stop early.
    patience: NonNegativeInt = 3
    # An epoch within this share of the best (0.02: 2% below it) is near the best: it resets the
    # patience count (a plateau is not past the peak) and the latest such epoch is the one that
    # ships (on a plateau it has trained longer at a lower learning rate). 0: the best epoch ships
    # and every epoch without a new best counts toward patience (the classic rules).
    margin: NonNegative = 0.0
    # What the validation rows do once the epoch is selected (xmlc/train/final.py):
    # none (select and calibrate only) | refit (train a fresh model on train + validation for the
    # selected number of epochs and ship it) | finetune (continue the selected model on train +
    # validation for 2 passes at half the learning rates, a warm restart of the schedule; after
    # refit or finetune the first model's thresholds move to the shipped one by each label's
    # predicted count on training rows) | crossfit (an ensemble's alternative: one training on train + validation in which member m
    # leaves out its own 1/M of the validation rows, which it scores out-of-fold; needs
    # model.ensemble >= 2) | auto (the model family's: crossfit for an mlp ensemble, whose members
    # share no weights; none for wide_deep, whose heads share the table).
    final: Literal["none", "refit", "finetune", "crossfit", "auto"] = "none"
    # Log train loss, lr, grad norm, throughput to TensorBoard every this many steps.
    log_every: PositiveInt = 20


@dataclass
class EvalConfig:
    # k for P@k, nDCG@k and PSP@k.
    ks: list[PositiveInt] = field(default_factory=lambda: [1, 3, 5])
    # Per-label thresholds fitted on validation at the end: f1_count (the best micro F1 with each
    # frequency bucket's predicted count 0.97-1.12x its validation count, the total at most 1.08x,
    # each label's 0.5-2x) | f1 | rate | prior | none (0.5 everywhere).
    calibration: Literal["f1_count", "f1", "rate", "prior", "none"] = "f1_count"
    # Labels with fewer validation positives than this get the global (micro-F1) threshold
    # (f1_count: one threshold per group of labels of about the same frequency).
    min_positives: NonNegativeInt = 5
    # Beside the run, after training (timed apart from it): none | linear (a one-vs-rest logistic
    # regression on the same features and splits, thresholds and metrics; xmlc/baseline.py), written
    # under "baseline" in metrics.json. `python -m xmlc.baseline` fits it on its own.
    baseline: Literal["none", "linear"] = "none"


@dataclass
class OutputConfig:
    # Run directory: config.yaml, last.pt, best.pt, metrics.json, TensorBoard events.
    dir: Annotated[str, NonEmpty()] = "runs/default"
    # A new run in a directory that holds a run (last.pt, best.pt, metrics.json) replaces it
    # only when true; else it stops (exit 2). --resume continues the run there.
    overwrite: bool = False
    # Write TensorBoard event files.
    tensorboard: bool = True
    # Diagnostic figures (xmlc.eval.figures): in TensorBoard per epoch and at the end, and as
    # RUN_DIR/figures/*.png at the end (python -m xmlc.report RUN_DIR embeds them); an epoch's
    # validation figures are skipped while drawing them would take over 5% of the run's time
    # (the first and last epochs always draw). false: none.
    figures: bool = True
    # Write last.pt (and best.pt, the best weights so far) after the first epoch, the last one,
    # and any epoch that ends this many seconds or more after the previous write; a stop by
    # signal or train.max_steps writes them too. A crash loses at most this much training
    # (plus the epoch in flight). 0: after every epoch.
    save_every_s: NonNegative = 60.0


@dataclass
class FeaturesConfig:
    # Text to features (xmlc.data.features), fitted on the training split only; scikit-learn's
    # TfidfVectorizer, or HashingVectorizer + idf for vocabularies that do not fit; lowercased
    # words of two or more characters, tf -> 1 + log(tf) (sublinear), idf, then data.normalize.
    # tfidf (a vocabulary of the training texts) | hashing (max_features columns, no vocabulary).
    method: Literal["tfidf", "hashing"] = "tfidf"
    # Tokens: word | char | char_wb (character n-grams inside word boundaries).
    analyzer: Literal["word", "char", "char_wb"] = "word"
    # [min_n, max_n] n-gram lengths ([1, 2]: words and word pairs).
    ngram_range: Annotated[list[PositiveInt], NonEmpty()] = field(default_factory=lambda: [1, 2])
    # Keep terms in at least min_df documents (int: a count; float: a fraction).
    min_df: Union[PositiveInt, Annotated[float, Range(ge=0, le=1)]] = 2
    # The number of columns: tfidf keeps the max_features most frequent terms (None: all);
    # hashing hashes into max_features columns (None: 2^18 = 262,144).
    max_features: Optional[PositiveInt] = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)


# ---------------------------------------------------------------------------------------
# Strict conversion between plain dicts (YAML) and the dataclass tree.

_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"list[{_type_name(inner)}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widened to float).

    Floats must be finite; ``Annotated[type, check, ...]`` runs each ``check(value, key)``
    after the type check."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *checks = typing.get_args(tp)
        value = _coerce(value, base, key)
        for check in checks:
            check(value, key)
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str)
                                                     and value.strip().lower() in ("none", "null"))):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except _RangeError:
                raise
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"config key '{key}' must be one of {', '.join(map(repr, choices))}; got {value!r}")
        return value
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    return _coerce_scalar(value, tp, key)


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the plain type ``tp`` (bool, int, float or str)."""
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept plain numeric spellings.
        elif isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            number = float(value)
        if number is not None:
            if not math.isfinite(number):
                raise _RangeError(f"config key '{key}' must be a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only the annotations used above exist
        raise TypeError(f"unsupported config annotation {tp!r} for '{key}'")
    raise ConfigError(f"config key '{key}' expects {_type_name(tp)}, got {value!r}")


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


_FIXED_TFIDF = ("fixed: lowercased words of two or more characters, sublinear tf, no max_df cut "
                "(xmlc.data.features.TextFeaturizer.fit takes them for other settings)")
_FIGURES = "validation figures are drawn per epoch within 5% of the run time; output.figures=false turns them off"
_OHEM = "OHEM keeps the largest loss.ohem share of the entries (xmlc.losses.ohem has the other modes)"
#: Keys that earlier versions had, and what became of them (named when a file or override uses one).
REMOVED_KEYS = {
    "data.eval_batch_size": "scoring takes xmlc.data.EVAL_BATCH_SIZE rows at a time (evaluate: --batch-size)",
    "data.num_workers": "batches are built in the training process",
    "model.activation": "the hidden layers use relu",
    "loss.gamma_pos": "the asymmetric loss leaves positives unfocused, as published",
    "loss.clip": "the asymmetric loss shifts negatives by 0.05, as published",
    "loss.ohem_keep_ratio": "renamed loss.ohem",
    "loss.ohem_mode": _OHEM, "loss.ohem_min_kept": _OHEM, "loss.ohem_keep_positives": _OHEM,
    "loss.pos_weight_power": "loss.pos_weight=sqrt_neg_pos is the square root",
    "loss.pos_weight_max": "loss.pos_weight=sqrt_neg_pos is the softer weighting",
    "optim.sparse": "sparse updates are on by themselves for input tables of 20,000+ rows",
    "eval.pr_curve_samples": "the TensorBoard PR curve takes about 100,000 entries",
    "output.figures_every": _FIGURES, "output.figures_max_share": _FIGURES,
    "features.max_df": _FIXED_TFIDF, "features.sublinear_tf": _FIXED_TFIDF,
    "features.lowercase": _FIXED_TFIDF, "features.token_pattern": _FIXED_TFIDF,
    "train.refit": "use train.final=refit", "train.crossfit": "use train.final=crossfit",
    "train.patience_margin": "use train.margin", "train.select_margin": "use train.margin",
    "train.progress": "the progress bar shows when the output is a terminal",
    "data.test_fraction": "synthetic data holds out data.val_fraction for test too",
    "features.hashing_features": "features.max_features is the number of hashed columns",
}


def _unknown_key(key: str, valid: typing.Iterable[str]) -> ConfigError:
    if key in REMOVED_KEYS:
        return ConfigError(f"config key '{key}' was removed: {REMOVED_KEYS[key]}")
    return ConfigError(f"unknown config key '{key}'; valid keys here: {', '.join(valid)}")


def from_dict(cls: type, data: dict | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) nested dict, strictly.

    Missing keys take their defaults; unknown keys and wrong types raise
    :class:`ConfigError` naming the dotted key.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, "
                          f"got {data!r}")
    fields = _fields(cls)
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise _unknown_key(key, fields)
        tp = fields[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, prefix=f"{key}.")
        else:
            kwargs[name] = _coerce(value, tp, key)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """The config tree as a plain nested dict (YAML/JSON/checkpoint friendly)."""
    return dataclasses.asdict(cfg)


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"override {item!r}: the value {raw!r} is not valid YAML ({problem}); "
                          f"quote it to pass it as a string: {key}=\"'{raw}'\"") from None
    return key, value


def apply_overrides(cfg: Config, overrides: typing.Sequence[str]) -> Config:
    """Apply ``section.key=value`` overrides (values parsed with ``yaml.safe_load``) in place."""
    for item in overrides:
        key, value = _parse_override(item)
        parts = key.split(".")
        node, prefix = cfg, ""
        for depth, part in enumerate(parts):
            fields = _fields(type(node))
            if part not in fields:
                raise _unknown_key(prefix + part, fields)
            tp = fields[part]
            last = depth == len(parts) - 1
            if dataclasses.is_dataclass(tp):
                if last:  # a whole section given as a mapping: section={key: value}
                    if not isinstance(value, dict):
                        raise ConfigError(f"config key '{prefix}{part}' is a section; give "
                                          f"{prefix}{part}.<key>=value (valid keys: "
                                          f"{', '.join(_fields(tp))}), got {value!r}")
                    merged = dataclasses.asdict(getattr(node, part)) | value
                    setattr(node, part, from_dict(tp, merged, prefix=f"{prefix}{part}."))
                else:
                    node, prefix = getattr(node, part), f"{prefix}{part}."
            else:
                if not last:
                    raise ConfigError(f"config key '{prefix}{part}' is a value, not a section "
                                      f"(in override {item!r})")
                setattr(node, part, _coerce(value, tp, prefix + part))
    return cfg


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then dotted ``overrides``."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {raw!r}")
    try:
        cfg = from_dict(Config, raw)
    except ConfigError as exc:
        where = f" in {path}" if path is not None else ""
        raise ConfigError(f"{exc}{where}") from None
    return apply_overrides(cfg, overrides)


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text (the form written to ``<output.dir>/config.yaml``)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
