"""xmlc.eval.figures, xmlc.report and `xmlc.stats --plot`: figures build from small arrays, the binning
matches a numpy reference, PNG and HTML files are written and readable, bad input is named."""

import base64
import doctest
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xmlc import data as xdata, report, stats
from xmlc.eval import figures
import importlib
stats_command = importlib.import_module("xmlc.stats.__main__")
from xmlc.train import monitor
from conftest import write_xmc_splits

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def arrays():
    """60 x 9 scores and labels; label 8 has no positive, label 7 is never predicted at 0.5."""
    rng = np.random.default_rng(0)
    n, l = 60, 9
    y = (rng.random((n, l)) < np.linspace(0.05, 0.6, l)).astype(np.float32)
    y[:, 8] = 0
    s = np.clip(0.6 * y + 0.5 * rng.random((n, l)), 0, 1).astype(np.float32)
    s[:, 7] = 0.2 * s[:, 7]
    s[0, 0], s[1, 1] = 0.0, 1.0   # the ends of the probability range
    counts = stats.label_counts(sp.csr_matrix(y))
    return {"scores": torch.from_numpy(s), "labels": sp.csr_matrix(y), "dense": y, "counts": counts,
            "buckets": stats.frequency_buckets(counts), "pos_weight": torch.linspace(0.5, 20, l)}


def _is_png(blob: bytes) -> bool:
    return blob[:8] == PNG_MAGIC and len(blob) > 1000


def test_docstring_examples():
    result = doctest.testmod(figures, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_predicted_counts_matches_numpy(arrays):
    s = arrays["scores"].numpy()
    t = np.linspace(0.1, 0.9, s.shape[1]).astype(np.float32)
    np.testing.assert_array_equal(figures.predicted_counts(arrays["scores"], t), (s >= t).sum(0))
    np.testing.assert_array_equal(figures.predicted_counts(s, 0.5), (s >= 0.5).sum(0))


def _reference_bins(p: np.ndarray, y: np.ndarray, num_bins: int):
    """Bins by comparing probabilities with the probability edges (searchsorted), in float64."""
    edges = 1 / (1 + np.exp(-np.linspace(-12, 12, num_bins + 1)))
    idx = np.clip(np.searchsorted(edges[1:-1], p.ravel(), side="right"), 0, num_bins - 1)
    return (np.bincount(idx, minlength=num_bins), np.bincount(idx, weights=y.ravel(), minlength=num_bins),
            np.bincount(idx, weights=p.ravel(), minlength=num_bins))


@pytest.mark.parametrize("corrected", [False, True])
def test_reliability_bins_match_reference(arrays, corrected):
    s, y = arrays["scores"].numpy().astype(np.float64), arrays["dense"]
    w = arrays["pos_weight"].numpy().astype(np.float64)
    p = s / (s + w * (1 - s)) if corrected else s
    bins = figures.reliability_bins(arrays["scores"], arrays["labels"], num_bins=12,
                                    pos_weight=arrays["pos_weight"] if corrected else None)
    count, positives, score_sum = _reference_bins(p, y, 12)
    np.testing.assert_array_equal(bins.count, count)
    np.testing.assert_array_equal(bins.positives, positives)
    np.testing.assert_allclose(bins.score_sum, score_sum, rtol=1e-5, atol=1e-6)
    assert bins.count.sum() == s.size and bins.positives.sum() == y.sum()
    filled = bins.count > 0
    np.testing.assert_allclose(bins.frequency[filled], positives[filled] / count[filled])
    assert np.isnan(bins.mean_score[~filled]).all()


def test_reliability_bins_subsample_every_kth_row(arrays):
    bins = figures.reliability_bins(arrays["scores"], arrays["labels"], max_cells=9 * 20)   # 60 rows -> stride 3
    y = arrays["dense"][::3]
    assert bins.count.sum() == y.size and bins.positives.sum() == y.sum()


def test_reliability_bins_reject_bad_input(arrays):
    with pytest.raises(ValueError, match="num_bins"):
        figures.reliability_bins(arrays["scores"], arrays["labels"], num_bins=1)
    with pytest.raises(ValueError, match="pos_weight"):
        figures.reliability_bins(arrays["scores"], arrays["labels"], pos_weight=torch.zeros(9))
    bad = arrays["scores"].clone()
    bad[3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        figures.reliability_bins(bad, arrays["labels"])


def test_each_figure_builds_and_renders(arrays):
    counts, b = arrays["counts"], arrays["buckets"]
    at_half = figures.predicted_counts(arrays["scores"], 0.5)
    assert at_half[7] == 0 and counts[8] == 0   # zeros on both log axes
    fig = figures.predicted_vs_true(counts, {"at 0.5": at_half, "calibrated": counts}, b)
    assert len(fig.axes) == 2
    assert "0" in [t.get_text() for t in fig.axes[0].get_xticklabels()]   # the explicit zero tick
    assert _is_png(figures.to_png(fig))
    bins = {"as trained": figures.reliability_bins(arrays["scores"], arrays["labels"]),
            "corrected": figures.reliability_bins(arrays["scores"], arrays["labels"], pos_weight=arrays["pos_weight"])}
    assert _is_png(figures.to_png(figures.reliability(bins)))
    ap = np.linspace(0.1, 0.9, 9)
    ap[8] = np.nan
    fig = figures.ap_by_frequency(counts, ap, b)
    assert any("1 labels without a positive" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert _is_png(figures.to_png(fig))
    fig = figures.long_tail(counts, 60, buckets=b, max_value=10.0)
    assert any("with 0 positives" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert _is_png(figures.to_png(fig))


def test_long_tail_of_one_label_marks_its_point():
    [line] = figures.long_tail(np.array([5]), 10).axes[0].lines
    assert line.get_marker() == "o" and list(line.get_ydata()) == [5]   # one point: no line, no area
    [line] = figures.long_tail(np.array([5, 3]), 10).axes[0].lines
    assert line.get_marker() in (None, "None", "")


def test_figures_reject_mismatched_shapes(arrays):
    with pytest.raises(ValueError, match="buckets"):
        figures.predicted_vs_true(arrays["counts"], {"a": arrays["counts"]}, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="ap"):
        figures.ap_by_frequency(arrays["counts"], np.zeros(4), arrays["buckets"])
    with pytest.raises(ValueError, match="buckets must be in"):
        figures.ap_by_frequency(arrays["counts"], np.zeros(9), np.full(9, 5))


def test_run_figures_and_save_png(arrays, tmp_path):
    figs = figures.run_figures(arrays["scores"], arrays["labels"], train_counts=arrays["counts"],
                               buckets=arrays["buckets"], thresholds=torch.full((9,), 0.4),
                               pos_weight=arrays["pos_weight"])
    assert tuple(figs) == figures.FIGURE_NAMES
    assert len(figs["reliability"].axes) == 4   # as trained + corrected, each with its count panel
    path = figures.save_png(figs["predicted_vs_true"], tmp_path / "sub" / "p.png")
    assert _is_png(path.read_bytes())


def test_stats_plot_cli(tmp_path, capsys):
    full = xdata.synthetic(200, 30, 12, mean_labels=2.0, seed=1)
    src = tmp_path / "d.txt"
    xdata.write_xmc(src, full.features, full.labels)
    out = tmp_path / "tail.png"
    assert stats_command.main([str(src), "--plot", str(out)]) == 0
    assert _is_png(out.read_bytes())
    assert f"wrote {out}" in capsys.readouterr().out


def _fake_run(root, *, metrics=True, png=True):
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text("data:\n  train: <b>x</b>\n")
    if metrics:
        (root / "metrics.json").write_text(json.dumps({
            "val": {"auprc_macro": 0.5, "positive_rate_ratio": 2.0},
            "val_calibrated": {"auprc_macro": 0.5, "positive_rate_ratio": 1.01},
            "epoch_time_s": 1.5, "num_labels": 9, "refit": {}}))
    if png:
        (root / "figures").mkdir(exist_ok=True)
        (root / "figures" / "predicted_vs_true.png").write_bytes(PNG_MAGIC + b"fake")
    return root


def test_report_is_self_contained(tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    assert report.main([str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "data:image/png;base64," + base64.b64encode(PNG_MAGIC + b"fake").decode() in page
    assert "positive_rate_ratio" in page and "1.0100" in page and "2.0000" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page   # the config is escaped, not interpreted
    assert "mean epoch time" in page
    assert str((run / "report.html").resolve()) in capsys.readouterr().out


def test_report_of_unfinished_run_and_custom_out(tmp_path):
    run = _fake_run(tmp_path / "run", metrics=False, png=False)
    out = report.write_report(run, tmp_path / "elsewhere" / "r.html")
    page = out.read_text()
    assert "has not finished" in page and "No figures" in page


def test_report_bad_run_dir_exits_2(tmp_path, capsys):
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert report.main([str(tmp_path / "plain")]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    run = _fake_run(tmp_path / "broken", png=False)
    (run / "metrics.json").write_text('{"val": {\n  "a": 1,,\n}')
    assert report.main([str(run)]) == 2
    err = capsys.readouterr().err
    assert "metrics.json" in err and "line 2" in err


# ---------------------------------------------------------------------------------------
# In a training run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_xmc_splits(tmp_path_factory.mktemp("data"), (200, 50, 50), num_features=40, seed=0)


def _train(files, out, *extra):
    from xmlc.train import loop as xtrain

    args = [f"data.train={files['train']}", f"data.val={files['val']}", f"data.test={files['test']}",
            "model.hidden=[16]", "data.batch_size=100", "train.epochs=2",
            "eval.min_positives=1",
            "loss.pos_weight=neg_pos", f"output.dir={out}", *extra]
    assert xtrain.main(args) == 0


def _image_tags(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"images": 0})
    acc.Reload()
    return {tag: [(e.step, e.width, e.height) for e in acc.Images(tag)] for tag in acc.Tags()["images"]}


def test_training_run_writes_figures_png_tensorboard_and_report(files, tmp_path, capsys):
    run = tmp_path / "run"
    label_names = tmp_path / "labels.txt"
    label_names.write_text("".join(f"tag_{j}\n" for j in range(12)))
    _train(files, run, "train.epochs=1", f"data.label_names={label_names}", "eval.calibration=f1_count")
    names = [*figures.FIGURE_NAMES, "long_tail"]
    for name in names:
        assert _is_png((run / "figures" / f"{name}.png").read_bytes()), name
    tags = _image_tags(run)
    for name in figures.FIGURE_NAMES:   # one image per validation epoch
        assert [step for step, _, _ in tags[f"figures/{name}"]] == [2]   # 200 rows / batch 100
    for name in names:
        [(_, width, height)] = tags[f"final/{name}"]
        assert width > 300 and height > 300
    capsys.readouterr()
    assert report.main([str(run)]) == 0
    page = (run / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(names)
    assert "test_calibrated" in page and "auprc_macro" in page and "Validation per epoch" in page
    # calibration: per-bucket and expected ratios in metrics.json, TensorBoard and the page; labels by name
    results = json.loads((run / "metrics.json").read_text())
    for key in ("positive_rate_ratio_head", "positive_rate_ratio_tail", "expected_positive_ratio"):
        assert key in results["test_calibrated"] and key in page
    listed = results["test_calibrated_labels"]["over"] + results["test_calibrated_labels"]["under"]
    assert listed and all(e["label"].startswith("tag_") and e["predicted"] != e["true"] for e in listed)
    assert "Labels that over-predict most" in page and f"<td>{listed[0]['label']}</td>" in page
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert "final/test_calibrated/positive_rate_ratio_head" in acc.Tags()["scalars"]


@pytest.mark.parametrize("share, steps", [(1.0, [2, 4, 6, 8]), (0.0, [2, 8])])
def test_figures_each_epoch_within_their_share_and_at_the_last(files, tmp_path, monkeypatch, share, steps):
    """share 1: no time limit; share 0: only the first epoch (no cost known yet) and the last."""
    monkeypatch.setattr(monitor, "FIGURES_MAX_SHARE", share)
    run = tmp_path / "run"
    _train(files, run, "train.epochs=4")   # 2 steps per epoch
    tags = _image_tags(run)
    for name in figures.FIGURE_NAMES:
        assert [step for step, _, _ in tags.get(f"figures/{name}", [])] == steps, name
        assert [step for step, _, _ in tags[f"final/{name}"]] == [8]   # the end always draws
    assert (run / "figures" / "reliability.png").is_file()


@pytest.mark.parametrize("epoch, last, every, spent, cost, elapsed, due", [
    (1, False, 1, 0.0, 0.0, 0.0, True),      # the first drawing: no cost known yet
    (2, False, 1, 0.6, 0.6, 10.0, False),    # 1.2 s of figures > 5% of 10 s
    (2, False, 1, 0.6, 0.6, 24.0, True),     # 1.2 s <= 5% of 24 s
    (3, False, 2, 0.0, 0.0, 99.0, False),    # not a multiple of every
    (3, True, 2, 9.0, 9.0, 1.0, True),       # the last epoch always draws
    (4, True, 0, 0.0, 0.0, 99.0, False),     # every=0: only the final figures
])
def test_figures_due_keeps_figures_within_their_share(epoch, last, every, spent, cost, elapsed, due):
    assert monitor.figures_due(epoch, last=last, every=every, max_share=0.05, spent=spent, cost=cost,
                               elapsed=elapsed) is due
    assert monitor.figures_due(epoch, last=last, every=every, max_share=1.0, spent=spent, cost=cost,
                               elapsed=elapsed) is (every > 0 and (last or epoch % every == 0))


def test_figures_false_writes_none(files, tmp_path):
    run = tmp_path / "run"
    (run / "figures").mkdir(parents=True)
    (run / "figures" / "reliability.png").write_bytes(PNG_MAGIC)   # left by an earlier run: removed
    _train(files, run, "output.figures=false")
    assert list((run / "figures").glob("*.png")) == []
    assert _image_tags(run) == {}
    assert (run / "metrics.json").is_file()
