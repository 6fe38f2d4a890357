"""xmlc.checkpoint: atomic writes, RNG round trip, model rebuilt from the dict alone."""

import random

import numpy as np
import pytest
import torch

from xmlc.checkpoint import (load_checkpoint, model_from_checkpoint, rng_state, save_checkpoint,
                             set_rng_state)
from xmlc.config import Config, to_dict
from xmlc.models import build_model


def _ckpt(model, cfg):
    return {"format": 1, "model": model.state_dict(), "config": to_dict(cfg), "num_features": 30,
            "num_labels": 4, "rng": rng_state(), "thresholds": torch.full((4,), 0.3)}


def test_save_load_and_rebuild(tmp_path):
    cfg = Config()
    cfg.model.hidden = [8]
    model = build_model(cfg.model, 30, 4)
    path = save_checkpoint(_ckpt(model, cfg), tmp_path / "run" / "last.pt")
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]      # no temp file left behind
    ckpt = load_checkpoint(tmp_path / "run")                            # a run directory means last.pt
    rebuilt, cfg2 = model_from_checkpoint(ckpt)
    assert cfg2 == cfg and not rebuilt.training
    x = (torch.tensor([1, 5, 7]), torch.tensor([0, 2]), torch.ones(3))
    model.eval()
    torch.testing.assert_close(rebuilt(*x), model(*x))


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
