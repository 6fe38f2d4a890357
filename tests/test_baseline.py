"""xmlc.baseline: the linear baseline against a hand-written scikit-learn pipeline, its command (a
file of its own, merged into a run's metrics.json), ``eval.baseline: linear`` in a run, the report."""

import csv
import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score

from xmlc import baseline as xbaseline, report as xreport
from xmlc.config import load_config
from xmlc.data import load_splits
from xmlc.train import loop as xtrain
from conftest import write_xmc_splits

LABELS = [f"topic{j}" for j in range(5)]


def write_table(path, rng, rows: int) -> None:
    """A tab-separated table (header ``text<TAB>labels``): each row has one or two topics, one word
    of each of its topics, two words of any topic and eight shared words."""
    topic_words = [[f"t{j}w{i}" for i in range(6)] for j in range(len(LABELS))]
    shared = [f"common{i}" for i in range(40)]
    with open(path, "w", newline="") as f:
        out = csv.writer(f, delimiter="\t")
        out.writerow(["text", "labels"])
        for r in range(rows):
            labels = sorted({r % len(LABELS), *rng.choice(len(LABELS), rng.integers(0, 2), replace=False)})
            words = [rng.choice(topic_words[j]) for j in labels] + list(rng.choice(shared, 8))
            words += list(rng.choice([w for ws in topic_words for w in ws], 2))   # stray topic words: not separable
            rng.shuffle(words)
            out.writerow([" ".join(words), ",".join(LABELS[j] for j in labels)])


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root, rng = tmp_path_factory.mktemp("table"), np.random.default_rng(0)
    for name, rows in (("train", 300), ("val", 100), ("test", 120)):
        write_table(root / f"{name}.tsv", rng, rows)
    return root


def read_table(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))[1:]
    Y = np.array([[name in labels.split(",") for name in LABELS] for _, labels in rows], dtype=int)
    return [text for text, _ in rows], Y


def f1_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """The F1-optimal threshold among the positives' scores (ties: the higher score)."""
    best, best_f1 = np.inf, -1.0
    for t in np.unique(scores[y == 1]):
        tp, predicted = int(((scores >= t) & (y == 1)).sum()), int((scores >= t).sum())
        f1 = 2 * tp / (y.sum() + predicted)
        if f1 >= best_f1:
            best, best_f1 = t, f1
    return best


def reference(root) -> dict:
    """tf-idf (xmlc's default settings) + one LogisticRegression per label, F1 thresholds per label
    on validation, test metrics from scikit-learn."""
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (read_table(root / f"{s}.tsv") for s in ("train", "val", "test"))
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, dtype=np.float32)
    X_train, X_val, X_test = vec.fit_transform(train_x), vec.transform(val_x), vec.transform(test_x)
    val_s, test_s = np.zeros(val_y.shape), np.zeros(test_y.shape)
    for j in range(len(LABELS)):
        clf = LogisticRegression(solver="liblinear", C=1.0, random_state=0).fit(X_train, train_y[:, j])
        val_s[:, j], test_s[:, j] = clf.predict_proba(X_val)[:, 1], clf.predict_proba(X_test)[:, 1]
    thresholds = np.array([f1_threshold(val_s[:, j], val_y[:, j]) for j in range(len(LABELS))])
    predicted = test_s >= thresholds
    return {"auprc_macro": average_precision_score(test_y, test_s, average="macro"),
            "auprc_micro": average_precision_score(test_y, test_s, average="micro"),
            "f1_macro": f1_score(test_y, predicted, average="macro"),
            "f1_micro": f1_score(test_y, predicted, average="micro"),
            "p@1": float(test_y[np.arange(len(test_y)), test_s.argmax(1)].mean())}


def table_overrides(root, out):
    return [f"data.train={root / 'train.tsv'}", f"data.val={root / 'val.tsv'}", f"data.test={root / 'test.tsv'}",
            "eval.min_positives=1", f"output.dir={out}"]


def test_equals_a_hand_written_sklearn_pipeline(table, tmp_path):
    # the per-label F1 thresholds the reference fits by hand
    cfg = load_config(None, [*table_overrides(table, tmp_path), "eval.calibration=f1"])
    train, val, test = load_splits(cfg.data, seed=cfg.train.seed, features=cfg.features)
    for split in (val, test):   # every label has a positive: the macro averages cover the same labels
        assert (np.bincount(split.labels.indices, minlength=len(LABELS)) > 0).all()
    result = xbaseline.run_baseline(train, val, test, cfg.eval, seed=cfg.train.seed)
    ours, theirs = result.metrics["test_calibrated"], reference(table)
    assert 0.3 < theirs["f1_macro"] < 0.9 and theirs["p@1"] < 0.9   # neither trivial nor perfect
    for metric, value in theirs.items():
        assert ours[metric] == pytest.approx(value, abs=1e-6), metric
    assert result.final == "none" and result.fit_rows == len(train) and result.num_constant_labels == 0
    assert result.num_few_positives == 0 and xbaseline.run_baseline(
        train, val, None, dataclasses.replace(cfg.eval, min_positives=10**6)).num_few_positives == len(LABELS)
    assert result.fit_time_s > 0 and result.peak_rss_mb > 0 and result.coef_mb == train.num_features * 5 * 4 / 2**20


def test_refit_fits_train_and_validation(table, tmp_path):
    cfg = load_config(None, table_overrides(table, tmp_path))
    train, val, test = load_splits(cfg.data, seed=0, features=cfg.features)
    plain = xbaseline.run_baseline(train, val, test, cfg.eval)
    refit = xbaseline.run_baseline(train, val, test, cfg.eval, refit=True)
    assert (refit.final, refit.fit_rows) == ("refit", len(train) + len(val))
    assert refit.metrics["val_calibrated"] == plain.metrics["val_calibrated"]   # thresholds from the first fit
    np.testing.assert_array_equal(refit.thresholds, plain.thresholds)
    assert refit.metrics["test"]["auprc_macro"] != plain.metrics["test"]["auprc_macro"]


def test_fit_linear_constant_labels_and_coefficients():
    rng = np.random.default_rng(1)
    X = sp.csr_matrix(rng.random((40, 6)) * (rng.random((40, 6)) < 0.5), dtype=np.float32)
    y = (X[:, 0].toarray().ravel() > 0.2).astype(int)
    Y = sp.csr_matrix(np.column_stack([y, np.zeros(40), np.ones(40)]), dtype=np.float32)
    model = xbaseline.fit_linear(X, Y, seed=0)
    clf = LogisticRegression(solver="liblinear", C=1.0, random_state=0).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(model.coef[:, 0], clf.coef_[0], rtol=1e-6)
    assert model.coef.dtype == np.float32 and model.coef.shape == (6, 3)
    scores = model.scores(X)
    np.testing.assert_allclose(scores[:, 0], clf.predict_proba(X)[:, 1], rtol=1e-5)
    assert model.num_constant == 2 and (scores[:, 1] == 0).all() and (scores[:, 2] == 1).all()
    assert not model.coef[:, 1:].any()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_xmc_splits(tmp_path_factory.mktemp("data"), (240, 64, 64), num_features=40, seed=0)


def tiny(files, out, *extra):
    return [f"data.train={files['train']}", f"data.val={files['val']}", f"data.test={files['test']}",
            "model.hidden=[16]", "data.batch_size=64", "train.epochs=2", "eval.min_positives=1",
            "output.tensorboard=false", "output.figures=false", f"output.dir={out}", *extra]


@pytest.fixture(scope="module")
def run_with_baseline(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert xtrain.main(tiny(files, out, "eval.baseline=linear")) == 0
    return out


def test_trainer_records_the_baseline(run_with_baseline, capsys):
    results = json.loads((run_with_baseline / "metrics.json").read_text())
    base = results["baseline"]
    assert {"val", "val_calibrated", "test", "test_calibrated"} <= set(base)
    assert set(base["test_calibrated"]) == set(results["test_calibrated"])
    assert base["fit_rows"] == results["num_train"] and base["final"] == "none"
    assert base["fit_time_s"] > 0 and base["peak_rss_mb"] > 0
    assert base["run_train_time_s"] == pytest.approx(results["train_time_s"])
    assert results["train_time_s"] == pytest.approx(results["epoch_time_s"] * 2)


def test_command_merges_into_the_runs_metrics(run_with_baseline, capsys):
    path = run_with_baseline / "metrics.json"
    before = json.loads(path.read_text())
    assert xbaseline.main(["--config", str(run_with_baseline / "config.yaml")]) == 0
    printed = capsys.readouterr()
    after = json.loads(path.read_text())
    assert {k: v for k, v in after.items() if k != "baseline"} == {k: v for k, v in before.items() if k != "baseline"}
    for split in ("val", "val_calibrated", "test", "test_calibrated"):   # the same splits and features as in the run
        assert after["baseline"][split] == before["baseline"][split]
    assert "| test (calibrated) | ours | linear | ours - linear |" in printed.out
    assert "note:" not in printed.err and not list(run_with_baseline.glob(".metrics-*"))
    page = xreport.build_report(run_with_baseline)
    assert "linear test_calibrated" in page and "ours - linear (test_calibrated)" in page
    assert "linear baseline: fit time (s)" in page


def test_command_alone_writes_its_own_run_directory(files, tmp_path, capsys):
    out = tmp_path / "alone"
    assert xbaseline.main(tiny(files, out)) == 0
    results = json.loads((out / "metrics.json").read_text())
    assert list(results) == ["baseline"] and "run_train_time_s" not in results["baseline"]
    assert "| test | linear @0.5 | linear calibrated |" in capsys.readouterr().out
    assert "linear test_calibrated" in xreport.build_report(out)   # config.yaml written for the report


def test_command_says_where_the_run_saw_other_data(run_with_baseline, files, capsys):
    config = run_with_baseline / "config.yaml"
    notes = xbaseline.config_notes(config, load_config(config, [f"data.test={files['val']}"]))
    assert len(notes) == 1 and "data.test" in notes[0]
    assert xbaseline.config_notes(config, load_config(config)) == []


@pytest.mark.parametrize("override, named", [("eval.basline=linear", "'eval.basline'"),
                                             ("eval.baseline=svm", "'eval.baseline'")])
def test_bad_config_key_names_the_key(override, named, tmp_path, capsys):
    assert xbaseline.main([override, f"output.dir={tmp_path}"]) == 2
    assert named in capsys.readouterr().err
    assert xtrain.main([override, f"output.dir={tmp_path}"]) == 2
    assert named in capsys.readouterr().err and not (tmp_path / "metrics.json").exists()


def test_unreadable_metrics_json_is_left_alone(files, tmp_path, capsys):
    (tmp_path / "metrics.json").write_text('{"test": {"p@1": 0.5},')
    assert xbaseline.main(tiny(files, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "metrics.json: not valid JSON (line 1" in err and "not overwritten" in err
    assert (tmp_path / "metrics.json").read_text() == '{"test": {"p@1": 0.5},'


def test_run_train_time():
    assert xbaseline.run_train_time({"train_time_s": 10.0, "refit": {"time_s": 4.0}}) == 14.0
    assert xbaseline.run_train_time({"epoch_time_s": 2.0, "epochs": 3}) == 6.0
    assert xbaseline.run_train_time({"baseline": {}}) is None


def test_run_train_time_counts_the_final_phase():
    """The run's side of the time ratio: its epochs plus a refit's or fine-tune's training."""
    assert xbaseline.run_train_time({"train_time_s": 4.0}) == 4.0
    assert xbaseline.run_train_time({"train_time_s": 4.0, "refit": {"time_s": 3.0}}) == 7.0
    assert xbaseline.run_train_time({"epoch_time_s": 2.0, "epochs": 3, "finetune": {"time_s": 1.5}}) == 7.5
    assert xbaseline.run_train_time({"finetune": {"time_s": 1.5}}) is None
