"""Whole splits from the ``data`` config section.

:func:`load_splits` is the one entry point the trainer calls for every input: XMC files, a
synthetic preset, and the user's own raw text, tables and feature matrices (featurised by a
tf-idf featuriser fitted on the training rows only). :func:`read_for_model` reads one file as a
trained model's input (evaluate, predict). Both return :class:`xmlc.data.container.XMCData`.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from xmlc.data.container import XMCData, check_labelled, normalize_rows
from xmlc.data.features import TextFeaturizer
from xmlc.data.split import stratified_split
from xmlc.data.synthetic import SYNTHETIC_PRESETS, synthetic_preset
from xmlc.data.labels import LabelVocab, ids_to_names, read_label_names
from xmlc.data.tables import RawSplit, describe, detect_format, read_split
from xmlc.data.xmc import read_xmc
from xmlc.errors import ConfigError, DataFileError, InputError

__all__ = ["load_splits", "check_splits", "read_data", "TextSplits", "load_text_splits", "read_for_model",
           "default_features"]

_FILE_KEYS = ("train", "val", "test", "train_labels", "val_labels", "test_labels", "label_names")


def default_features() -> SimpleNamespace:
    """The featuriser settings :func:`load_splits` uses when given no ``features`` section: the
    defaults of that config section (``tests/test_load.py`` pins them equal), as the plain
    attributes :meth:`xmlc.data.features.TextFeaturizer.fit` reads."""
    return SimpleNamespace(method="tfidf", analyzer="word", ngram_range=[1, 2], min_df=2,
                           max_features=None)


# --------------------------------------------------------------------------------------
# The trainer's entry point
# --------------------------------------------------------------------------------------


def load_splits(dcfg, *, seed: int = 0, features=None, say=None, run_labels: list[str] | None = None,
                run_featurizer: dict | None = None):
    """Train, validation and test :class:`XMCData` (test may be None), features normalised.

    The one entry point for every input: XMC files, a synthetic preset, and the user's own
    raw text, tables and feature matrices (``data.format``; :func:`load_text_splits` fits the
    ``features`` featuriser on the training rows and sets ``label_names`` and ``featurizer`` on
    every split). Every named file is checked before any is read, so a typo fails at once,
    naming the key and the path. Without ``data.train`` the synthetic preset
    ``data.synthetic`` is generated and split (stratified) into train / test; without
    ``data.val`` a stratified validation split is carved from train.

    Args:
        dcfg: the ``data`` config section.
        seed: the run's seed (splits).
        features: the ``features`` config section (raw text only; None: :func:`default_features`).
        say: called with one line per decision and count worth telling the user (the format
            chosen by ``auto``, rows without labels, labels only in val/test); None: silent.
        run_labels, run_featurizer: a resumed run's label names and featuriser state (its
            checkpoint's): the data is mapped onto them by name, never re-derived from the
            files (whose rows may come in another order, or hold other words).
    """
    for key in _FILE_KEYS:
        path = getattr(dcfg, key)
        if path is not None and not Path(path).is_file():
            raise DataFileError(f"data.{key}: file not found: {path}")
    names = None
    if dcfg.train is None:
        train, test = _synthetic_train_test(dcfg, seed)
    else:
        with _as_data_file_error():
            fmt, why = detect_format(dcfg.train, dcfg.format)
            if fmt != "xmc":
                return _raw_splits(dcfg, features, seed, say, run_labels, run_featurizer)
            names = read_label_names(dcfg.label_names) if dcfg.label_names is not None else None
        if run_labels is not None and names != run_labels:
            raise DataFileError(f"data.label_names: {dcfg.label_names} does not name the labels of the run "
                                f"being resumed (its checkpoint's {len(run_labels):,} names, in their order)")
        if say is not None and dcfg.format == "auto":
            say(f"data.train: {dcfg.train} read as xmc ({why})")
        # checked at once: a file without labels would otherwise fail as L=0 in val/test
        train, test = check_labelled(read_data(dcfg.train, dcfg, key="data.train"), f"data.train ({dcfg.train})"), None
    dims = {"num_features": train.num_features, "num_labels": train.num_labels}
    if dcfg.test is not None:
        test = read_data(dcfg.test, dcfg, key="data.test", **dims)
    if dcfg.val is not None:
        val = read_data(dcfg.val, dcfg, key="data.val", **dims)
    else:
        fit, held = stratified_split(train.labels, dcfg.val_fraction, seed=seed + 1)
        train, val = train.subset(fit), train.subset(held)
    if names is not None:
        if len(names) != train.num_labels:
            raise DataFileError(f"data.label_names: {dcfg.label_names} names {len(names):,} labels but "
                                f"{dcfg.train} has L={train.num_labels:,}")
        for split in (train, val, test):
            if split is not None:
                split.label_names = names
    return check_splits(train, val, test, dcfg)


@contextlib.contextmanager
def _as_data_file_error():
    """A bad or unreadable user file (InputError, bad gzip, OSError) becomes a :class:`DataFileError`."""
    try:
        yield
    except (ValueError, OSError, EOFError) as exc:
        raise DataFileError(str(exc)) from exc


def _synthetic_train_test(dcfg, seed: int) -> tuple[XMCData, XMCData | None]:
    """The preset ``data.synthetic``, its test split carved out (stratified) unless ``data.test``."""
    if dcfg.synthetic not in SYNTHETIC_PRESETS:
        raise ConfigError(f"config key 'data.synthetic' must be one of "
                          f"{', '.join(SYNTHETIC_PRESETS)}; got {dcfg.synthetic!r}")
    train, test = synthetic_preset(dcfg.synthetic, seed=seed), None
    if dcfg.test is None:
        rest, held = stratified_split(train.labels, dcfg.val_fraction, seed=seed)
        train, test = train.subset(rest), train.subset(held)
    train.features = normalize_rows(train.features, dcfg.normalize)
    if test is not None:
        test.features = normalize_rows(test.features, dcfg.normalize)
    return train, test


def _raw_splits(dcfg, features, seed: int, say, run_labels=None, run_featurizer=None):
    """:func:`load_text_splits`, its notes told, label names and featuriser state set on each split."""
    out = load_text_splits(dcfg, features if features is not None else default_features(), seed=seed,
                           run_labels=run_labels, run_featurizer=run_featurizer)
    for note in out.notes:
        if say is not None:
            say(note)
    state = None if out.featurizer is None else out.featurizer.state_dict()
    for split in (out.train, out.val, out.test):
        if split is not None:
            split.label_names, split.featurizer = out.label_names, state
    return check_splits(out.train, out.val, out.test, dcfg)


def check_splits(train, val, test, dcfg):
    """(train, val, test) after :func:`check_labelled` on each, named by its config key and file
    (or as the split carved from ``data.train``); called before anything is trained."""
    source = f"data.train ({dcfg.train})" if dcfg.train is not None else f"data.synthetic={dcfg.synthetic!r}"
    carved = []   # (split, what it takes): the splits carved from the source by data.val_fraction, in turn
    if dcfg.train is None and dcfg.test is None:
        carved.append(("test", "to test"))
    if dcfg.val is None:
        carved.append(("val", "of the rest to validation"))
    fraction = f"data.val_fraction={dcfg.val_fraction}"
    check_labelled(train, source if not carved else
                   f"the training split left of {source} "
                   f"({', then '.join(f'{fraction} {what}' for _, what in carved)}; lower data.val_fraction "
                   f"or give {' and '.join(f'data.{k}' for k, _ in carved)} files)")
    check_labelled(val, f"data.val ({dcfg.val})" if dcfg.val is not None else
                   f"the validation split carved from {source} (data.val_fraction={dcfg.val_fraction}; "
                   f"give a larger fraction or a data.val file)")
    if test is not None:
        check_labelled(test, f"data.test ({dcfg.test})" if dcfg.test is not None else
                       f"the test split carved from {source} ({fraction})")
    return train, val, test


def read_data(path, dcfg, *, key: str = "data", num_features=None, num_labels=None) -> XMCData:
    """Read one XMC file and normalise its rows as ``data.normalize`` says; errors name ``key`` and the file."""
    if not Path(path).is_file():
        raise DataFileError(f"{key}: file not found: {path}")
    try:
        data = read_xmc(path, num_features=num_features, num_labels=num_labels)
    except (ValueError, OSError, EOFError) as exc:
        raise DataFileError(f"{key}: cannot read {path}: {exc}") from exc
    data.features = normalize_rows(data.features, dcfg.normalize)
    return data


# --------------------------------------------------------------------------------------
# Raw text, tables and feature matrices: config -> featurised splits
# --------------------------------------------------------------------------------------


@dataclass
class TextSplits:
    """What :func:`load_text_splits` returns: the splits in the trainer's container, plus what
    a checkpoint needs to use the model on new raw input.

    Attributes:
        train, val, test: :class:`XMCData` (``test`` None without ``data.test``);
            ``features`` CSR, or a dense float32 ndarray for ``.npy`` input.
        label_names: column ``j`` of the label matrix is ``label_names[j]``.
        featurizer: the fitted :class:`xmlc.data.features.TextFeaturizer` (None for feature matrices).
        notes: lines for the user: the format decided, counts, labels that cannot be predicted.
    """

    train: XMCData
    val: XMCData
    test: XMCData | None
    label_names: list[str]
    featurizer: TextFeaturizer | None
    notes: list[str]


def split_paths(dcfg) -> dict[str, tuple[str, str | None]]:
    """``{"train": (path, labels path), ...}`` for the splits the config names."""
    return {split: (getattr(dcfg, split), getattr(dcfg, f"{split}_labels"))
            for split in ("train", "val", "test") if getattr(dcfg, split) is not None}


def read_labelled(path, dcfg, *, key: str, labels_path=None, label_names=None, notes=None) -> RawSplit:
    """:func:`read_split` with the format resolved (noted in ``notes``) and integer ids mapped
    to ``label_names``."""
    fmt, why = detect_format(path, dcfg.format)
    if fmt == "xmc":
        raise InputError(f"{key}: {os.fspath(path)} is in the XMC format ({why}); raw text and feature "
                         f"matrices cannot be mixed with it in one run")
    if notes is not None:
        notes.append(f"{key}: {os.fspath(path)} read as {fmt} ({why})")
    if fmt == "npz" and labels_path is None and key != "--data":
        raise InputError(f"{key}: {os.fspath(path)} is a feature matrix; give its labels file as "
                         f"{key}_labels (one line of labels per row)")
    raw = read_split(path, dcfg, key=key, labels_path=labels_path, fmt=fmt)
    if label_names is not None:
        raw.labels = ids_to_names(raw.labels, label_names, f"{key} ({os.fspath(labels_path or path)})",
                                  raw.line_of)
    if notes is not None:
        notes.append(describe(raw, key))
    return raw


def featurize(raw: RawSplit, featurizer, num_features: int, key: str):
    """Features of a raw split with a fitted featuriser (texts) or as given (matrices); the
    column count must be ``num_features``."""
    if raw.texts is not None:
        if featurizer is None:
            raise InputError(f"{key}: raw text, but the model was trained on a feature matrix "
                             f"({num_features:,} columns); give features, not text")
        return featurizer.transform(raw.texts)
    if featurizer is not None:
        raise InputError(f"{key}: a feature matrix, but the model was trained on raw text; give text")
    if raw.features.shape[1] != num_features:
        raise InputError(f"{key}: features have D={raw.features.shape[1]:,} columns but the model has "
                         f"D={num_features:,}")
    return raw.features


def unseen_note(unseen: Counter, key: str) -> str | None:
    """A line about labels of a val/test split that training never saw (they cannot be predicted)."""
    if not unseen:
        return None
    top = ", ".join(f"{name!r} ({n})" for name, n in unseen.most_common(5))
    return (f"{key}: {len(unseen):,} label name(s) not in the training labels, {sum(unseen.values()):,} "
            f"occurrence(s), left out of the label matrix (they cannot be predicted): {top}"
            f"{', ...' if len(unseen) > 5 else ''}")


def load_text_splits(dcfg, fcfg, *, seed: int = 0, run_labels: list[str] | None = None,
                     run_featurizer: dict | None = None) -> TextSplits:
    """Train / val / test from the user's raw files, featurised, as the trainer's containers.

    The label vocabulary comes from the training file (or ``data.label_names``); the
    featuriser is fitted on the training rows only (after the validation rows are carved out
    when ``data.val`` is None: a stratified split of ``data.val_fraction``, seed ``seed + 1``);
    rows are normalised by ``data.normalize``. A resumed run passes its checkpoint's
    ``run_labels`` and ``run_featurizer``: both are kept as they are, and a training label not
    among ``run_labels`` is an error.

    Args:
        dcfg: the ``data`` config section.
        fcfg: the ``features`` config section.
        seed: the run's seed.
    """
    notes: list[str] = []
    names = read_label_names(dcfg.label_names) if dcfg.label_names is not None else None
    raws = _read_raw_splits(dcfg, names, notes)
    vocab = LabelVocab.build(raws["train"].labels, names if run_labels is None else run_labels)
    if len(vocab) == 0:
        raise InputError(f"data.train: {dcfg.train} has no labels in any row")
    train_raw = raws["train"]
    Y_train, unseen = vocab.encode(train_raw.labels)
    if unseen:
        name, rows = unseen.most_common(1)[0]
        raise InputError(f"data.train: {dcfg.train}: label {name!r} ({rows:,} rows; {len(unseen):,} such labels) "
                         f"is not one of the {len(vocab):,} labels of the run being resumed; a resumed run "
                         f"keeps its label set: start a new run for new labels")
    if "val" not in raws:
        fit, held = stratified_split(Y_train, dcfg.val_fraction, seed=seed + 1)
        raws["val"] = train_raw.subset(held)
        train_raw = raws["train"] = train_raw.subset(fit)
        Y_train = Y_train[fit]
    if run_featurizer is not None:   # resumed: the run's vocabulary and idf, not refitted
        featurizer = TextFeaturizer.from_state(run_featurizer)
        X_train = featurize(train_raw, featurizer, featurizer.num_features, "data.train")
    else:
        featurizer, X_train = _fit_features(train_raw, fcfg, notes)
    D, L = X_train.shape[1], len(vocab)
    out = {"train": XMCData(normalize_rows(X_train, dcfg.normalize), Y_train, D, L)}
    for split in ("val", "test"):
        if split not in raws:
            out[split] = None
            continue
        key = f"data.{split}"
        X = featurize(raws[split], featurizer, D, key)
        Y, unseen = vocab.encode(raws[split].labels)
        note = unseen_note(unseen, key)
        if note:
            notes.append(note)
        out[split] = XMCData(normalize_rows(X, dcfg.normalize), Y, D, L)
    return TextSplits(out["train"], out["val"], out["test"], vocab.names, featurizer, notes)


def _read_raw_splits(dcfg, names: list[str] | None, notes: list[str]) -> dict[str, RawSplit]:
    """The raw splits the config names, ``{"train": RawSplit, ...}``: all text or all feature matrices."""
    raws = {split: read_labelled(path, dcfg, key=f"data.{split}", labels_path=labels, label_names=names,
                                 notes=notes)
            for split, (path, labels) in split_paths(dcfg).items()}
    kinds = {split: raw.texts is not None for split, raw in raws.items()}
    if len(set(kinds.values())) > 1:
        raise InputError("data.train / data.val / data.test mix raw text and feature matrices: "
                         + ", ".join(f"data.{k}: {'text' if v else 'features'}" for k, v in kinds.items()))
    return raws


def _fit_features(train_raw: RawSplit, fcfg, notes: list[str]):
    """``(featuriser, X_train)``: a featuriser fitted on the training texts and their features,
    or ``(None, the user's matrix)``."""
    if train_raw.texts is None:
        return None, train_raw.features
    featurizer, X_train = TextFeaturizer.fit(train_raw.texts, fcfg)
    notes.append(f"features: {featurizer.num_features:,} tf-idf columns fitted on {len(train_raw):,} "
                 f"training rows ({featurizer.settings['method']}, {featurizer.settings['analyzer']} "
                 f"n-grams {tuple(featurizer.settings['ngram_range'])})")
    return featurizer, X_train


def read_for_model(path, dcfg, *, key: str, num_features: int, label_names: list[str] | None,
                   featurizer=None, labels_path=None, with_labels: bool = True, notes=None):
    """One file as the trained model's input: :class:`XMCData` with the model's
    ``D`` and ``L`` (evaluate, predict).

    Raw text goes through the checkpoint's ``featurizer``; feature matrices must have ``D =
    num_features`` columns; labels are encoded with the checkpoint's ``label_names`` (names
    training never saw are counted in ``notes`` and left out); integer ids map to names when
    the run was trained with ``data.label_names``. XMC files are read as in training.

    Args:
        path: the file. dcfg: the ``data`` section (the checkpoint's, with any overrides).
        key: names the input in messages (``--data``).
        num_features: ``D`` of the model. label_names: the model's label names, or None
            (XMC-trained: label ``j`` is ``j``).
        featurizer: a :class:`xmlc.data.features.TextFeaturizer` for raw text, or None.
        labels_path: labels file of a feature matrix.
        with_labels: read the labels (False: every row unlabelled; prediction).
        notes: a list that collects lines for the user.
    """
    L = len(label_names) if label_names is not None else None
    fmt, why = detect_format(path, dcfg.format)
    if fmt == "xmc":
        if featurizer is not None:
            raise InputError(f"{key}: {os.fspath(path)} is in the XMC format ({why}) but the model was "
                             f"trained on raw text; give text (a table, JSON lines, or text lines)")
        return read_data(path, dcfg, key=key, num_features=num_features, num_labels=L)
    if notes is not None:
        notes.append(f"{key}: {os.fspath(path)} read as {fmt} ({why})")
    if fmt == "npz" and with_labels and labels_path is None:
        raise InputError(f"{key}: {os.fspath(path)} is a feature matrix; give its labels file (--labels)")
    raw = read_split(path, dcfg, key=key, labels_path=labels_path, fmt=fmt, with_labels=with_labels)
    if len(raw) == 0:
        raise InputError(f"{key}: {os.fspath(path)} has no rows ({describe(raw, key).split(': ', 1)[1]}"
                         f"{'; a header only' if fmt == 'table' else ''})")
    X = featurize(raw, featurizer, num_features, key)
    if label_names is None:
        raise InputError(f"{key}: the model was trained on XMC files and has no label names; give XMC input")
    if with_labels and dcfg.label_names is not None:
        raw.labels = ids_to_names(raw.labels, label_names, f"{key} ({os.fspath(labels_path or path)})", raw.line_of)
    Y, unseen = LabelVocab(label_names).encode(raw.labels)
    note = unseen_note(unseen, key)
    if note and notes is not None:
        notes.append(note)
    return XMCData(normalize_rows(X, dcfg.normalize), Y, num_features, len(label_names), label_names)

