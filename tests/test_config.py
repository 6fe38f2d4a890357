"""xmlc.config: strict typed loading from YAML and dotted overrides."""

import re
from pathlib import Path

import pytest
import yaml

from xmlc.config import (Config, ConfigError, _fields, apply_overrides, dump_config, from_dict, load_config,
                         to_dict)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_without_file():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.data.train is None and cfg.data.synthetic == "default"
    assert cfg.model.name == "mlp" and cfg.optim.schedule == "cosine"


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.01\nmodel:\n  hidden: [64, 32]\ntrain:\n  epochs: 3\n")
    cfg = load_config(path, ["train.epochs=5", "loss.name=focal", "loss.alpha=0.25"])
    assert cfg.optim.lr == 0.01 and cfg.model.hidden == [64, 32]
    assert cfg.train.epochs == 5 and cfg.loss.name == "focal" and cfg.loss.alpha == 0.25
    assert cfg.optim.weight_decay == Config().optim.weight_decay   # untouched default


def test_override_values_are_yaml():
    cfg = load_config(None, ["optim.lr=3e-4", "eval.ks=[1, 10]", "optim.grad_clip=null",
                             "loss.alpha=none", "train.amp=false", "data.train=a/b.txt",
                             "train.max_steps=7"])
    assert cfg.optim.lr == pytest.approx(3e-4)      # "3e-4" is a YAML string; accepted for floats
    assert cfg.eval.ks == [1, 10]
    assert cfg.optim.grad_clip is None and cfg.loss.alpha is None
    assert cfg.train.amp is False and cfg.data.train == "a/b.txt" and cfg.train.max_steps == 7


def test_int_accepted_for_float_but_not_float_for_int():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"'train\.epochs' expects 'auto' \| int, got 1\.5"):
        load_config(None, ["train.epochs=1.5"])


@pytest.mark.parametrize("override, pattern", [
    ("optim.lrr=1", r"unknown config key 'optim\.lrr'; valid keys here: lr, weight_decay, warmup"),
    ("optimizer.lr=1", r"unknown config key 'optimizer'; valid keys here: data, model, loss, optim"),
    ("optim.lr=fast", r"'optim\.lr' expects float, got 'fast'"),
    ("train.amp=1", r"'train\.amp' expects bool, got 1"),
    ("model.norm=group", r"'model\.norm' must be one of 'layer', 'batch', 'none'; got 'group'"),
    ("model.hidden=[64, x]", r"'model\.hidden' expects 'auto' \| list\[int\], got \[64, 'x'\]"),
    ("model.hidden=64", r"'model\.hidden' expects 'auto' \| list\[int\], got 64"),
    ("optim=1", r"'optim' is a section"),
    ("optim.lr.x=1", r"'optim\.lr' is a value, not a section"),
    ("epochs", r"must look like section\.key=value"),
    ("train.refit=true", r"config key 'train\.refit' was removed: use train\.final=refit"),
    ("data.label_sep=,", r"the value ',' is not valid YAML \(.*\); quote it to pass it as a string: "
                         r"data\.label_sep=\"','\""),
    ("loss.ohem_keep_ratio=0.1", r"config key 'loss\.ohem_keep_ratio' was removed: renamed loss\.ohem"),
])
def test_bad_overrides_name_the_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


@pytest.mark.parametrize("text, pattern", [
    ("optim:\n  learning_rate: 0.1\n", r"unknown config key 'optim\.learning_rate'; valid keys here: lr"),
    ("trainer:\n  epochs: 1\n", r"unknown config key 'trainer'"),
    ("train:\n  epochs: ten\n", r"'train\.epochs' expects 'auto' \| int, got 'ten'"),
    ("model:\n  activation: gelu\n", r"'model\.activation' was removed: the hidden layers use relu.*bad\.yaml"),
    ("loss:\n  pos_weight: sqrt\n", r"'loss\.pos_weight' must be one of 'none', 'neg_pos'"),
    ("data: 3\n", r"section 'data' must be a mapping"),
    ("- 1\n- 2\n", r"must hold a mapping"),
])
def test_bad_yaml_names_the_key_and_file(tmp_path, text, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_dump_round_trip(tmp_path):
    cfg = load_config(None, ["model.hidden=[128, 64]", "loss.pos_weight=neg_pos", "optim.grad_clip=null"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert from_dict(Config, to_dict(cfg)) == cfg


def test_whole_section_override_is_strict():
    cfg = apply_overrides(Config(), ["optim={lr: 0.5, schedule: constant}"])
    assert cfg.optim.lr == 0.5 and cfg.optim.schedule == "constant"
    with pytest.raises(ConfigError, match="optim.bogus"):
        apply_overrides(Config(), ["optim={bogus: 1}"])


@pytest.mark.parametrize("name", ["default.yaml", "seed.yaml", "text.yaml"])
def test_shipped_configs_load(name):
    from xmlc.train import check_config
    raw = yaml.safe_load((CONFIGS / name).read_text())
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, Config) and raw   # every key in the file is valid
    check_config(cfg, world_size=1)          # and the keys agree with each other


# --- allowed values: every key's range is checked when the tree is built ---------------

# (key, a value outside its range, the range the message must state)
OUT_OF_RANGE = [
    ("data.batch_size", "0", r"in \[1, 16777216\]"), ("data.batch_size", "-1", r"in \[1, 16777216\]"),
    ("data.batch_size", "100000000000000000000", r"in \[1, 16777216\]"),
    ("data.val_fraction", "0", r"in \(0, 1\)"), ("data.val_fraction", "1", r"in \(0, 1\)"),
    ("data.synthetic", "huge", r"one of 'default', 'seed' \(the names in xmlc\.data\.SYNTHETIC_PRESETS\)"),
    ("model.name", "cnn", r"one of 'linear', 'mlp', 'wide_deep', 'auto' \(the names in xmlc\.models\.MODELS, or auto\)"),
    ("model.hidden[0]", "[0]", r">= 1"), ("model.hidden[1]", "[8, -2]", r">= 1"),
    ("model.hidden", "[]", r"non-empty list"),
    ("model.dropout", "1", r"in \[0, 1\)"), ("model.dropout", "-0.1", r"in \[0, 1\)"),
    ("model.input_dropout", "1.0", r"in \[0, 1\)"), ("model.ensemble", "0", r">= 1"),
    ("loss.name", "hinge", r"one of 'bce', 'focal', 'asymmetric' \(the names in xmlc\.losses\.LOSSES\)"),
    ("loss.gamma", "-1", r">= 0"), ("loss.alpha", "1.5", r"in \[0, 1\]"),
    ("loss.gamma_neg", "-4", r">= 0"),
    ("loss.ohem", "0", r"in \(0, 1\]"), ("loss.ohem", "1.01", r"in \(0, 1\]"),
    ("optim.lr", "0", r"> 0"), ("optim.lr", "-3e-4", r"> 0"), ("optim.weight_decay", "-0.01", r">= 0"),
    ("optim.warmup", "1.5", r"in \[0, 1\]"), ("optim.grad_clip", "0", r"> 0"),
    ("train.epochs", "0", r">= 1"), ("train.max_steps", "0", r">= 1"),
    ("train.seed", "-1", r"in \[0, 4294967296\)"), ("train.patience", "-1", r">= 0"),
    ("train.margin", "-0.1", r">= 0"),
    ("train.log_every", "0", r">= 1"),
    ("eval.ks[0]", "[0]", r">= 1"), ("eval.ks[0]", "[0, 1]", r">= 1"), ("eval.ks[2]", "[1, 3, -5]", r">= 1"),
    ("eval.min_positives", "-1", r">= 0"),
    ("output.dir", "''", r"non-empty string"), ("output.save_every_s", "-1", r">= 0"),
    ("features.ngram_range", "[]", r"non-empty list"), ("features.ngram_range[0]", "[0, 1]", r">= 1"),
    ("features.ngram_range[1]", "[1, 0]", r">= 1"),
    ("features.min_df", "0", r">= 1"), ("features.min_df", "1.5", r"in \[0, 1\]"),
    ("features.max_features", "0", r">= 1"),
]


@pytest.mark.parametrize("key, value, allowed", OUT_OF_RANGE)
def test_out_of_range_values_name_the_key_and_the_range(key, value, allowed):
    setting = f"{key.split('[')[0]}={value}"
    pattern = rf"config key '{re.escape(key)}' must be (a )?{allowed}.*got"
    with pytest.raises(ConfigError, match=pattern):            # on the command line
        load_config(None, [setting])
    section, name = key.split("[")[0].split(".")
    with pytest.raises(ConfigError, match=pattern):            # in a YAML tree (file, checkpoint)
        from_dict(Config, {section: {name: yaml.safe_load(value)}})


def test_every_ranged_key_is_covered():
    """Each key whose annotation carries a check appears in OUT_OF_RANGE (no key forgotten)."""
    checked = {f"{section}.{name}" for section, tp in _fields(Config).items()
               for name, hint in _fields(tp).items() if "Annotated" in repr(hint)}
    assert checked == {key.split("[")[0] for key, _, _ in OUT_OF_RANGE}


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e400"])
def test_non_finite_floats_are_rejected(value):
    with pytest.raises(ConfigError, match=r"config key 'optim\.lr' must be a finite number"):
        load_config(None, [f"optim.lr={value}"])
    with pytest.raises(ConfigError, match=r"config key 'optim\.grad_clip' must be a finite number"):
        load_config(None, [f"optim.grad_clip={value}"])


def test_edges_of_the_ranges_are_accepted():
    cfg = load_config(None, ["data.batch_size=1", "model.dropout=0", "loss.ohem=1",
                             "loss.alpha=0", "loss.gamma_neg=0", "optim.warmup=1", "optim.lr=1e-12",
                             "train.patience=0", "train.seed=4294967295", "eval.ks=[]",
                             "loss.alpha=null", "optim.grad_clip=none", "train.max_steps=1"])
    assert cfg.data.batch_size == 1 and cfg.optim.warmup == 1.0 and cfg.eval.ks == []
    assert cfg.loss.alpha is None and cfg.optim.grad_clip is None


def test_registered_names_are_read_when_checked(monkeypatch):
    from xmlc import models
    monkeypatch.setitem(models.MODELS, "mine", models.build_linear)
    assert load_config(None, ["model.name=mine"]).model.name == "mine"
