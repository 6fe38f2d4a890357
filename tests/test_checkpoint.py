"""xmlc.checkpoint: atomic writes, RNG round trip, refused files (the typed run: tests/test_run.py)."""

import errno
import os
import random
import re
import tempfile
import zipfile

import numpy as np
import pytest
import torch

from xmlc.checkpoint import (CheckpointError, CheckpointSaveError, load_checkpoint, remove_partial_writes, rng_state,
                             save_checkpoint, set_rng_state)


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"format": 1, "step": 1}, path)
    with pytest.raises(Exception):
        save_checkpoint({"format": 1, "step": 2, "bad": lambda: None}, path)   # not picklable
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_rng_round_trip():
    state = rng_state()
    a = (torch.rand(3), np.random.rand(2), random.random())
    set_rng_state(state)
    b = (torch.rand(3), np.random.rand(2), random.random())
    torch.testing.assert_close(a[0], b[0])
    assert np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an xmlc checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path):
    path = save_checkpoint({"format": 1, "weights": torch.zeros(1000)}, tmp_path / "last.pt")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"checkpoint .*last\.pt could not be read"):
        load_checkpoint(tmp_path)
    assert issubclass(CheckpointError, ValueError)


def test_partial_writes_of_an_interrupted_save_are_removed(tmp_path):
    save_checkpoint({"format": 1, "step": 1}, tmp_path / "last.pt")
    stale = [tmp_path / ".last.pt.abc123.tmp", tmp_path / ".best.pt.x_9.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    keep = [tmp_path / "notes.tmp", tmp_path / ".last.pt.json"]
    for p in keep:
        p.write_text("mine")
    save_checkpoint({"format": 1, "step": 2}, tmp_path / "last.pt")      # a save cleans its own name's
    assert not stale[0].exists() and stale[1].exists()
    assert remove_partial_writes(tmp_path) == [stale[1]]                 # a start cleans them all
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", *(p.name for p in keep)])
    assert remove_partial_writes(tmp_path / "missing") == []


def test_unwritable_directory_is_a_save_error_that_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint({"format": 1, "step": 1}, tmp_path / "run" / "last.pt")

    def refuse(*args, **kwargs):   # what a read-only directory does (chmod does not stop root)
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(CheckpointSaveError, match=r"could not save checkpoint .*last\.pt "
                                                  r"\(Permission denied\); the previous one is kept"):
        save_checkpoint({"format": 1, "step": 2}, path)
    with pytest.raises(CheckpointSaveError, match=r"best\.pt .*; there is no previous one"):
        save_checkpoint({"format": 1, "step": 2}, path.parent / "best.pt")
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


def test_full_disk_is_a_save_error(tmp_path, monkeypatch):
    def full(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")
    save_checkpoint({"format": 1, "step": 1}, tmp_path / "last.pt")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointSaveError, match=r"\(No space left on device\); the previous one is kept"):
        save_checkpoint({"format": 1, "step": 2}, tmp_path / "last.pt")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["step"] == 1 and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_corrupted_tensor_record_is_found_in_either_half_of_the_parallel_check(tmp_path, which):
    """The checksums are checked on two threads, the records split by size: a flipped byte in any
    tensor's record (the largest, the smallest, one between) is refused, naming that record."""
    tensors = {"big": torch.zeros(50_000), "mid": torch.zeros(20_000), "small": torch.zeros(5_000)}
    path = save_checkpoint({"format": 1, **tensors}, tmp_path / "best.pt")
    with zipfile.ZipFile(path) as archive:
        records = sorted((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: -i.file_size)
        target = records[which]
    raw = bytearray(path.read_bytes())
    start = target.header_offset + 30 + len(target.filename.encode()) + len(target.extra)   # the record's bytes
    raw[start + target.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=rf"is corrupted: the bytes of its record '{re.escape(target.filename)}'"):
        load_checkpoint(path)


def test_corrupted_checkpoint_names_the_file_in_one_line(tmp_path):
    path = save_checkpoint({"format": 1, "weights": torch.zeros(1000)}, tmp_path / "best.pt")
    raw = bytearray(path.read_bytes())
    at = raw.find(b"data.pkl") + 40   # inside the pickle; the zip directory stays intact
    raw[at:at + 20] = b"\xff" * 20
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"best\.pt is corrupted: the bytes of its record '\w+/data\.pkl' "
                                              r"do not match their checksum") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
