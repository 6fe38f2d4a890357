"""Tests for xmlc.data.load: whole splits from the config (XMC files, raw text, feature matrices),
the featuriser defaults, and the errors that name the config key."""

import numpy as np
import pytest

from conftest import same, write_xmc_splits
from xmlc.config import DataConfig, FeaturesConfig
from xmlc.data.features import featurizer_settings
from xmlc.data.load import default_features, load_splits, load_text_splits
from xmlc.errors import DataFileError, InputError


def write(path, text: str):
    path.write_bytes(text.encode("utf-8"))
    return path


def test_load_text_splits_ids_names_and_unseen(tmp_path):
    train = write(tmp_path / "train.tsv", "".join(f"doc {i} word{i % 3}\t{i % 3},{(i + 1) % 3}\tid{i}\n" for i in range(40)))
    test = write(tmp_path / "test.tsv", "word1 here\t1\tx\nword2 there\t2\ty\n")
    names = write(tmp_path / "names.txt", "zero\none\ntwo\nthree\n")
    cfg = DataConfig(train=str(train), test=str(test), text_column=0, labels_column=1, label_names=str(names))
    out = load_text_splits(cfg, FeaturesConfig(min_df=1), seed=0)
    assert out.label_names == ["zero", "one", "two", "three"]   # the names file fixes the order: id i = column i
    assert out.test.labels.toarray().tolist() == [[0, 1, 0, 0], [0, 0, 1, 0]]
    assert len(out.train) + len(out.val) == 40 and out.train.labels.shape[1] == 4
    assert any("read as table (extension .tsv)" in n for n in out.notes)
    # without names: names are the strings in the data, first-appearance order; unseen test labels counted
    test2 = write(tmp_path / "test2.tsv", "word1\t1,7\tx\nword2\t7\ty\n")
    cfg = DataConfig(train=str(train), test=str(test2), text_column=0, labels_column=1)
    out = load_text_splits(cfg, FeaturesConfig(min_df=1), seed=0)
    assert out.label_names == ["0", "1", "2"]
    assert any("1 label name(s) not in the training labels, 2 occurrence(s)" in n and "'7' (2)" in n for n in out.notes)
    assert out.test.labels.toarray().tolist() == [[0, 1, 0], [0, 0, 0]]
    bad_names = write(tmp_path / "short.txt", "zero\none\n")
    cfg = DataConfig(train=str(train), text_column=0, labels_column=1, label_names=str(bad_names))
    with pytest.raises(InputError, match=r"train\.tsv\): line 2: label '2' is neither a label id in \[0, 2\)"):
        load_text_splits(cfg, FeaturesConfig(min_df=1))


def test_load_dense_features_reject_wrong_d(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "tr.npy", rng.random((30, 6)).astype(np.float32))
    np.save(tmp_path / "te.npy", rng.random((4, 5)).astype(np.float32))
    write(tmp_path / "tr.txt", "".join("a b\n" if i % 2 else "b\n" for i in range(30)))
    write(tmp_path / "te.txt", "a\nb\na\nb\n")
    cfg = DataConfig(train=str(tmp_path / "tr.npy"), train_labels=str(tmp_path / "tr.txt"),
                     test=str(tmp_path / "te.npy"), test_labels=str(tmp_path / "te.txt"))
    with pytest.raises(InputError, match=r"data.test: features have D=5 columns but the model has D=6"):
        load_text_splits(cfg, FeaturesConfig())
    cfg.test = None
    out = load_text_splits(cfg, FeaturesConfig())
    assert isinstance(out.train.features, np.ndarray) and out.featurizer is None
    np.testing.assert_allclose(np.linalg.norm(out.train.features, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(InputError, match="give its labels file as data.train_labels"):
        load_text_splits(DataConfig(train=str(tmp_path / "tr.npy")), FeaturesConfig())


def test_default_features_are_the_config_defaults():
    assert featurizer_settings(default_features()) == featurizer_settings(FeaturesConfig())


def test_load_splits_without_a_features_section_uses_the_defaults(tmp_path):
    rows = "".join(f"doc{i} word{i % 5} word{i % 7} common\t{i % 3},{i % 4 + 3}\n" for i in range(60))
    cfg = DataConfig(train=str(write(tmp_path / "train.tsv", rows)), text_column=0, labels_column=1)
    said = []
    default = load_splits(cfg, seed=1, say=said.append)
    given = load_splits(cfg, seed=1, features=FeaturesConfig())
    for a, b in zip(default[:2], given[:2]):
        assert same(a.features, b.features) and same(a.labels, b.labels) and a.label_names == b.label_names
    assert default[0].featurizer["vocabulary"] == given[0].featurizer["vocabulary"]
    assert any(line.startswith("features: ") and "fitted on" in line for line in said)
    assert len(default[0]) + len(default[1]) == 60 and default[2] is None


def test_load_splits_xmc_files_with_label_names(tmp_path):
    paths = write_xmc_splits(tmp_path, (120, 40, 40), num_features=30, num_labels=12, seed=1)
    names = write(tmp_path / "names.txt", "".join(f"n{j}\n" for j in range(12)))
    cfg = DataConfig(train=str(paths["train"]), val=str(paths["val"]), test=str(paths["test"]), label_names=str(names))
    said = []
    train, val, test = load_splits(cfg, say=said.append)
    assert (len(train), len(val), len(test)) == (120, 40, 40)
    assert train.label_names == val.label_names == test.label_names == [f"n{j}" for j in range(12)]
    assert said == [f"data.train: {paths['train']} read as xmc (first line holds only numbers, ',' and ':')"]
    np.testing.assert_allclose(np.sqrt(train.features.multiply(train.features).sum(axis=1)).A1[train.features.getnnz(axis=1) > 0], 1.0, rtol=1e-6)
    cfg.label_names = str(write(tmp_path / "short.txt", "a\nb\n"))
    with pytest.raises(DataFileError, match="names 2 labels but .* has L=12"):
        load_splits(cfg)
    cfg.val = str(tmp_path / "missing.txt")
    with pytest.raises(DataFileError, match="data.val: file not found"):
        load_splits(cfg)
