"""Every config key reaches the trainer: a few tiny runs through ``xmlc.train`` with a config whose
sections record which of their keys the run reads (writing the config out does not count), and
together they read every key. A key no run reads is dead: cut it or wire it."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from xmlc.config import Config, load_config
from xmlc.train import loop as xtrain
from xmlc.train.stops import StepLimit
from conftest import write_xmc_splits

READ: set[str] = set()
_QUIET = [False]   # True while the config is being serialised (to_dict, dump, checkpoint)


def _recording(section: str, obj):
    """A copy of the section ``obj`` whose attribute reads of its fields land in ``READ``."""
    cls, names = type(obj), {f.name for f in dataclasses.fields(obj)}

    def __getattribute__(self, name):
        if name in names and not _QUIET[0]:
            READ.add(f"{section}.{name}")
        return object.__getattribute__(self, name)

    recording = type(f"Recording{cls.__name__}", (cls,), {"__getattribute__": __getattribute__})
    out = recording.__new__(recording)
    for name in names:
        object.__setattr__(out, name, object.__getattribute__(obj, name))
    return out


def _run(cfg: Config) -> None:
    for f in dataclasses.fields(cfg):
        setattr(cfg, f.name, _recording(f.name, getattr(cfg, f.name)))
    try:
        xtrain.run(cfg)
    except StepLimit:   # train.max_steps: the run stops as asked, last.pt saved
        pass


def all_keys() -> set[str]:
    return {f"{s.name}.{k.name}" for s in dataclasses.fields(Config) for k in dataclasses.fields(s.default_factory)}


@pytest.fixture
def quiet_serialising(monkeypatch):
    asdict = dataclasses.asdict

    def quiet(obj, **kw):
        _QUIET[0] = True
        try:
            return asdict(obj, **kw)
        finally:
            _QUIET[0] = False

    monkeypatch.setattr(dataclasses, "asdict", quiet)


def _table(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["title", "body", "tags"])
        w.writerows(rows)


def test_every_config_key_is_read_by_a_training_run(tmp_path, quiet_serialising):
    common = ["model.hidden=[8]", "data.batch_size=64", "train.epochs=2", "eval.min_positives=1",
              "output.tensorboard=true", "output.figures=false", "train.device=cpu"]
    # 1. XMC files, an ensemble crossfit with every loss knob in play
    (tmp_path / "xmc").mkdir()
    files = write_xmc_splits(tmp_path / "xmc", (200, 60, 60), num_features=30, seed=0)
    _run(load_config(None, [f"data.train={files['train']}", f"data.val={files['val']}",
                            f"data.test={files['test']}", "model.ensemble=2", "train.final=crossfit",
                            "loss.name=focal", "loss.ohem=0.5", "loss.pos_weight=sqrt_neg_pos",
                            "loss.label_weight=propensity", "model.output_bias=prior",
                            f"output.dir={tmp_path / 'a'}", *common, "train.epochs=3"]))
    # 2. a raw-text table (features, columns, label names), the asymmetric loss, a refit
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
    rows = [(" ".join(rng.choice(words, 3)), " ".join(rng.choice(words, 5)),
             ";".join(sorted({str(t) for t in rng.choice(4, 2)}))) for _ in range(240)]
    _table(tmp_path / "train.csv", rows[:180])
    _table(tmp_path / "test.csv", rows[180:])
    (tmp_path / "names.txt").write_text("zero\none\ntwo\nthree\n")
    _run(load_config(None, [f"data.train={tmp_path / 'train.csv'}", f"data.test={tmp_path / 'test.csv'}",
                            "data.format=table", "data.text_column=[title, body]", "data.labels_column=tags",
                            "data.label_sep=';'", "data.header=true", f"data.label_names={tmp_path / 'names.txt'}",
                            "features.min_df=1", "loss.name=asymmetric", "train.final=refit",
                            f"output.dir={tmp_path / 'b'}", *common]))
    # 3. feature matrices with labels files, from the synthetic default's shape
    X = sp.random(300, 20, density=0.3, format="csr", random_state=0, dtype=np.float32)
    for name, part in (("train", slice(0, 200)), ("val", slice(200, 250)), ("test", slice(250, 300))):
        sp.save_npz(tmp_path / f"{name}.npz", X[part])
        (tmp_path / f"{name}.txt").write_text("".join(f"{i % 3} {(i + 1) % 3}\n" for i in range(300)[part]))
    _run(load_config(None, [*(f"data.{s}={tmp_path / f'{s}.npz'}" for s in ("train", "val", "test")),
                            *(f"data.{s}_labels={tmp_path / f'{s}.txt'}" for s in ("train", "val", "test")),
                            "train.max_steps=3", f"output.dir={tmp_path / 'c'}", *common]))
    # 4. the built-in synthetic default, one step
    _run(load_config(None, ["train.max_steps=1", f"output.dir={tmp_path / 'd'}", *common]))
    unread = all_keys() - READ
    assert not unread, f"config keys no training run reads: {sorted(unread)}"
