"""The run file on disk: one plain dict, written atomically, read with ``weights_only=True``.

The typed view of it is :class:`xmlc.run.RunArtifact`. A checkpoint holds everything needed to
continue a run or to use the model without the config file or the training data::

    {
      "format": 1,
      "model": state_dict, "optimizer": state_dict, "scheduler": state_dict,   # best.pt: no optimizer,
                                                                               # scheduler or rng
      "step": int, "epoch": int,                 # optimizer steps done; epoch in progress (0-based)
      "progress": {"step", "epoch", "batch_in_epoch", "best_value", "best_epoch", "bad_epochs",
                   "history": [per-epoch validation metrics], "selected_epoch"},   # batch_in_epoch: the data-order state
      "rng": {"torch": ByteTensor, "cuda": [...], "numpy": {...}, "python": [...]},
      "config": dict,                            # the resolved config tree (xmlc.config.to_dict)
      "num_features": int, "num_labels": int,
      "label_stats": {"counts": LongTensor (L,), "num_examples": int, "pos_weight": Tensor (L,) | None},
      "thresholds": Tensor (L,) | None,          # calibrated probability thresholds (best.pt, end of run)
      "label_names": list[str] | None,           # column j of the output is label_names[j]
      "featurizer": {"settings": dict, "vocabulary": str (terms joined by NUL) | None, "idf": Tensor (D,)} | None,
                                                 # raw-text runs: xmlc.data.features.TextFeaturizer.state_dict()
      "best": {"metric": str, "value": float, "epoch": int, "selected_epoch": int},   # selected: the weights of best.pt
    }

Only tensors and plain Python containers are stored, so :func:`load_checkpoint` reads it
with ``torch.load(weights_only=True)``. The file is the zip archive ``torch.save`` writes, each
record with the CRC-32 of its bytes; every load verifies them first, so a file corrupted on disk
or in transfer is refused, naming it, instead of loading altered weights.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xmlc.errors import CheckpointError, CheckpointSaveError, ConfigError


__all__ = ["save_checkpoint", "load_checkpoint", "verify_checksums", "checkpoint_path", "rng_state", "set_rng_state",
           "load_weights", "remove_partial_writes", "check_run_dir", "CheckpointError",
           "CheckpointSaveError"]

FORMAT = 1


def _partial_writes(directory: Path, name: str = "*") -> list[Path]:
    return sorted(directory.glob(f".{name}.*.tmp"))


def remove_partial_writes(directory: str | Path) -> list[Path]:
    """Delete the temp files that writes interrupted by a crash or ``kill -9`` left in a run
    directory (``.last.pt.<random>.tmp``: as large as a checkpoint); returns their paths.
    Only one process may be writing checkpoints into ``directory`` when this is called."""
    directory = Path(directory)
    stale = _partial_writes(directory, "*.pt") if directory.is_dir() else []
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def save_checkpoint(obj: dict, path: str | Path) -> Path:
    """Write ``obj`` to ``path`` atomically: temp file in the same directory, fsync, rename.

    A reader (or a crash) sees either the previous file or the new one, never a torn write;
    temp files of earlier interrupted writes to ``path`` are removed first.

    Raises:
        CheckpointSaveError: the file system refused the write (the previous file is kept).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in _partial_writes(path.parent, path.name):
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _save_error(path, exc) from exc
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _save_error(path, exc) from exc
        if isinstance(exc, RuntimeError) and "write" in str(exc):   # torch's zip writer on a full disk
            raise _save_error(path, OSError(str(exc).strip().splitlines()[-1][:200])) from exc
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    return path


def _save_error(path: Path, exc: OSError) -> CheckpointSaveError:
    kept = "the previous one is kept" if path.is_file() else "there is no previous one"
    reason = exc.strerror or str(exc)
    return CheckpointSaveError(f"could not save checkpoint {path} ({reason}); {kept}")


def check_run_dir(path: str | Path, key: str = "output.dir") -> Path:
    """``path`` if a run can write there: an existing writable directory, or a name whose
    nearest existing parent is a writable directory (nothing is created yet; an empty
    directory made and removed at once in that parent proves it, since permission bits do
    not tell of /proc, read-only mounts or root). Otherwise a :class:`ConfigError` naming
    ``key``, raised before any data is read."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.is_symlink():   # a dangling link: mkdir would fail on it
            raise ConfigError(f"config key '{key}': {probe} is a broken symbolic link")
        probe = probe.parent
    if not probe.is_dir():
        where = "" if probe == path else f" (so {path} cannot be created)"
        raise ConfigError(f"config key '{key}': {probe} is a file, not a directory{where}")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == path else f" (so {path} cannot be created there)"
        raise ConfigError(f"config key '{key}': directory {probe} is not writable{where}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".xmlc-probe-", dir=probe))
    except OSError as exc:
        what = f"{path} cannot be created" if probe != path else f"cannot write in {path}"
        raise ConfigError(f"config key '{key}': {what}: making a directory in {probe} fails "
                          f"({exc.strerror or exc})") from None
    return path


def checkpoint_path(path: str | Path, in_run_dir: str = "last.pt") -> Path:
    """``path`` itself if it is a file, ``path / in_run_dir`` if it is a run directory."""
    path = Path(path)
    return path / in_run_dir if path.is_dir() else path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *, mmap: bool = False) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors land on ``map_location``);
    a run directory means its ``last.pt``.

    ``mmap``: the tensors map the file (private, copy-on-write pages) instead of being read into
    memory; a page is read when used. For one-off inference on a large model (``predict``: one
    string touches a few rows of the input tables). The checksums are verified first either way.
    Not for long-lived processes on Windows, where a mapped file cannot be replaced by the run
    that writes it."""
    path = checkpoint_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):   # torch.save writes a zip archive; a truncated one has no directory
        raise CheckpointError(f"checkpoint {path} could not be read: not a file written by torch.save "
                              f"(truncated, or another kind of file)")
    verify_checksums(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} could not be read (corrupted, or not plain data): "
                              f"{_load_failure(exc)}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an xmlc checkpoint (format {FORMAT})")
    return ckpt


def verify_checksums(path: Path) -> None:
    """Check every record of the zip archive ``torch.save`` wrote against its CRC-32 (torch itself
    reads the bytes unchecked); a mismatch is a :class:`CheckpointError` naming the file.

    The records are read in two halves by size on two threads, each with its own handle (zlib's
    CRC and the reads release the GIL): a 650 MB best.pt in about half the time of one pass.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            records = sorted(archive.infolist(), key=lambda info: -info.file_size)
        halves: list[list[str]] = [[], []]
        sizes = [0, 0]
        for info in records:   # largest first, each to the lighter half
            side = sizes.index(min(sizes))
            halves[side].append(info.filename)
            sizes[side] += info.file_size
        with ThreadPoolExecutor(2) as pool:
            bad = [name for found in pool.map(lambda names: _first_bad_record(path, names), halves)
                   for name in found]
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} could not be read: a damaged archive ({exc})") from None
    if bad:
        raise CheckpointError(f"checkpoint {path} is corrupted: the bytes of its record {bad[0]!r} do not match "
                              f"their checksum (CRC-32); copy it again, or use another checkpoint")


def _first_bad_record(path: Path, names: list[str]) -> list[str]:
    """``[name]`` of the first of ``names`` whose bytes fail their CRC-32 (as ``ZipFile.testzip``)."""
    with zipfile.ZipFile(path) as archive:
        for name in names:
            try:
                with archive.open(name) as record:
                    while record.read(1 << 22):
                        pass
            except zipfile.BadZipFile:
                return [name]
    return []


def _load_failure(exc: Exception) -> str:
    """One line for why ``torch.load(weights_only=True)`` failed. Torch's own message runs to
    paragraphs and advises turning ``weights_only`` off, which could run code: not repeated."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds a pickled {found.group(1)} object, not plain data (refused: loading it could run code)"
    if "weights only load failed" in text.lower() or "weights_only" in text:
        return "it holds pickled objects, not plain data (refused: loading them could run code)"
    return (text.strip().splitlines() or [type(exc).__name__])[0][:200]


def rng_state() -> dict:
    """The torch (CPU and CUDA), numpy and Python RNG states, in checkpointable form."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": _to_lists(random.getstate()),
    }


def set_rng_state(state: dict) -> None:
    """Restore the states captured by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def load_weights(model: nn.Module, weights: dict, *, source: str = "the checkpoint", assign: bool = False) -> None:
    """``model.load_state_dict(weights, assign=assign)`` (``assign``: the model's parameters become
    the given tensors, no copy), or a :class:`CheckpointError` that names the keys and
    shapes that differ (in ``source``) before anything is loaded: a checkpoint of an older
    layout (xmlc before the one-pass ensembles, commit f2fb691, stored each member apart and
    ``nn.Linear`` heads) or of another model."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    given = {name: tuple(t.shape) for name, t in weights.items() if torch.is_tensor(t)}
    missing, unexpected = sorted(expected.keys() - given.keys()), sorted(given.keys() - expected.keys())
    shapes = [f"{name} {given[name]} (expected {expected[name]})" for name in sorted(expected.keys() & given.keys())
              if given[name] != expected[name]]
    if missing or unexpected or shapes:
        def some(names):
            return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        parts = [f"{what} {some(names)}" for what, names in
                 (("missing", missing), ("unexpected", unexpected), ("shapes", shapes)) if names]
        raise CheckpointError(f"the weights in {source} do not fit the model its config builds ({'; '.join(parts)}): "
                              f"written by another model or an older xmlc; retrain it with this version")
    model.load_state_dict(weights, assign=assign)
