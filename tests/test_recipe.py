"""xmlc.recipe: the ``auto`` values resolved from the data's shape, alone and through a run of
configs/text.yaml."""

import dataclasses
import json
from pathlib import Path

import pytest

from xmlc.config import ConfigError, load_config, to_dict
from xmlc.recipe import (DEEP_HIDDEN, OWN_TABLES_MAX_WEIGHTS, PROFILES, auto_epochs, model_family, resolve_auto,
                         resolve_final)
from xmlc.run import RunArtifact
from xmlc.train import loop as xtrain
from conftest import write_xmc_splits

TEXT = Path(__file__).resolve().parents[1] / "configs" / "text.yaml"


def text(*overrides):
    return load_config(TEXT, list(overrides))


def test_the_family_changes_where_the_members_own_tables_pass_the_bound():
    edge = OWN_TABLES_MAX_WEIGHTS // (5 * DEEP_HIDDEN)   # 3,276 features at 5 members
    assert model_family(edge, 5) == "mlp" and model_family(edge + 1, 5) == "wide_deep"
    assert model_family(5 * edge, 1) == "mlp"           # one member may have 5x the features


def test_few_features_resolve_to_the_deep_ensemble_profile():
    cfg = resolve_auto(text(), num_features=1_836, num_rows=4_782)
    m, t = cfg.model, cfg.train
    assert (m.name, m.hidden, m.input_dropout, m.output_bias) == ("mlp", [DEEP_HIDDEN], 0.3, "zero")
    assert (t.final, t.epochs) == ("crossfit", 30)      # 3,000 steps of 128 rows: 80 passes, clipped to 30
    assert (m.dropout, m.ensemble, cfg.loss.name) == (0.5, 5, "focal")   # the file's own values stay
    assert cfg.loss.gamma == 1.0


def test_many_features_resolve_to_wide_deep():
    cfg = resolve_auto(text(), num_features=47_236, num_rows=20_000)
    m, t = cfg.model, cfg.train
    assert (m.name, m.hidden, m.input_dropout, m.output_bias) == ("wide_deep", "auto", 0.1, "prior")
    assert (t.final, t.epochs) == ("none", auto_epochs(20_000, 128)) and t.epochs == 6
    assert cfg.loss.gamma == 0.5 and text().loss.gamma == "auto"


def test_a_value_that_is_not_auto_wins():
    cfg = resolve_auto(text("model.input_dropout=0.2", "model.output_bias=prior", "train.final=refit",
                            "train.epochs=4", "model.hidden=[64]", "loss.gamma=2"),
                       num_features=10**6, num_rows=1_000)
    m, t = cfg.model, cfg.train
    assert cfg.loss.gamma == 2.0 and m.name == "wide_deep"
    assert (m.hidden, m.input_dropout, m.output_bias, t.final, t.epochs) == ([64], 0.2, "prior", "refit", 4)
    named = resolve_auto(text("model.name=wide_deep"), num_features=100, num_rows=1_000)
    assert (named.model.name, named.model.input_dropout, named.train.final) == ("wide_deep", 0.1, "none")


def test_crossfit_needs_members_so_auto_falls_back_to_none_for_one_model():
    assert resolve_final(text("model.ensemble=1"), 100) == "none"
    assert resolve_final(text(), 100) == "crossfit" and resolve_final(text(), 10**6) == "none"


def test_auto_epochs_follow_the_family():
    mlp, wide = PROFILES["mlp"], PROFILES["wide_deep"]
    assert auto_epochs(12_000, 128, mlp.steps, mlp.epochs) == 30
    assert auto_epochs(10**6, 128, mlp.steps, mlp.epochs) == mlp.epochs[0]
    assert auto_epochs(12_000, 128, wide.steps, wide.epochs) == wide.epochs[1]


def test_auto_is_a_value_of_these_keys_only():
    assert dataclasses.asdict(text().model)["input_dropout"] == "auto"
    with pytest.raises(ConfigError, match="model.dropout"):
        load_config(TEXT, ["model.dropout=auto"])
    with pytest.raises(ConfigError, match="model.name.*or auto"):
        load_config(TEXT, ["model.name=deep"])


def _run(tmp_path, files, name, *extra):
    out = tmp_path / name
    args = ["--config", str(TEXT), f"data.train={files['train']}", f"data.val={files['val']}",
            f"data.test={files['test']}", "data.batch_size=64", "train.epochs=2", "eval.min_positives=1",
            "output.tensorboard=false", "output.figures=false", f"output.dir={out}", *extra]
    assert xtrain.main(args) == 0
    return out, RunArtifact.load(out, in_run_dir="best.pt"), json.loads((out / "metrics.json").read_text())


def test_text_recipe_on_few_features_trains_the_crossfit_mlp_and_saves_what_it_resolved(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    files = write_xmc_splits(tmp_path / "data", (240, 64, 64), num_features=40, seed=0)
    out, artifact, metrics = _run(tmp_path, files, "few", "model.hidden=[16]")
    saved = load_config(out / "config.yaml")
    assert (saved.model.name, saved.model.input_dropout, saved.model.output_bias, saved.train.final) == (
        "mlp", 0.3, "zero", "crossfit")
    assert "auto" not in to_dict(saved)["model"].values()   # no model key is left to resolve again
    assert saved.loss.gamma == 1.0
    model = artifact.build_model()
    assert model.head.weight.shape == (5, 16, 12) and model.input.weight.shape[0] == 40   # 5 members' own tables
    assert "crossfit: 304 training rows" in capsys.readouterr().out                      # val rows trained on


def test_text_recipe_on_many_features_trains_wide_deep(tmp_path):
    (tmp_path / "data").mkdir()
    files = write_xmc_splits(tmp_path / "data", (240, 64, 64), num_features=4_000, seed=0)
    out, artifact, _ = _run(tmp_path, files, "many")
    saved = load_config(out / "config.yaml")
    assert (saved.model.name, saved.model.input_dropout, saved.model.output_bias, saved.train.final) == (
        "wide_deep", 0.1, "prior", "none")
    assert saved.loss.gamma == 0.5
    assert artifact.build_model().input.weight.shape[0] == artifact.num_features
