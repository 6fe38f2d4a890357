"""xmlc._json: undefined metrics are written as null, never as NaN, in every JSON output."""

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xmlc import data as xdata, evaluate as xevaluate, report

from xmlc.train import loop as xtrain
from xmlc._json import dumps, finite_or_null, loads_with_nan


def strict(text: str):
    """Parse like a strict JSON reader: NaN / Infinity are errors."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))


def test_non_finite_values_become_null_at_any_depth():
    value = {"a": float("nan"), "b": [1.5, np.float32("inf"), {"c": torch.tensor(-math.inf)}],
             "d": np.float64(0.25), "e": torch.tensor(3), "f": None, "g": "nan"}
    assert strict(dumps(value)) == {"a": None, "b": [1.5, None, {"c": None}], "d": 0.25, "e": 3, "f": None,
                                    "g": "nan"}
    assert finite_or_null((np.int64(2), 1e308 * 10)) == [2, None]
    back = loads_with_nan(dumps(value))
    assert math.isnan(back["a"]) and back["b"][1] is None   # only object values become NaN
    with pytest.raises(TypeError):   # anything json cannot write still fails loudly
        dumps({"x": object()})


def test_run_with_an_empty_tail_bucket_writes_null(tmp_path, capsys):
    """Test rows that hold only the most frequent label: every tail label has no positive there,
    so the tail's macro AUPRC is undefined on test; metrics.json and evaluate --out say null."""
    full = xdata.synthetic(300, 30, 10, mean_labels=2.0, seed=1)
    counts = np.asarray(full.labels[:240].sum(axis=0)).ravel()
    head = int(counts.argmax())
    only_head = sp.csr_matrix((np.ones(60), (np.arange(60), np.full(60, head))), shape=(60, 10))
    paths = {name: tmp_path / f"{name}.txt" for name in ("train", "val", "test")}
    xdata.write_xmc(paths["train"], full.features[:240], full.labels[:240])
    xdata.write_xmc(paths["val"], full.features[240:], full.labels[240:])
    xdata.write_xmc(paths["test"], full.features[240:], only_head)
    out = tmp_path / "run"
    assert xtrain.main([f"data.{k}={v}" for k, v in paths.items()] + [
        "model.hidden=[8]", "data.batch_size=80", "train.epochs=1", 
        "eval.min_positives=1", "output.tensorboard=false", "output.figures=false", f"output.dir={out}"]) == 0
    text = (out / "metrics.json").read_text()
    result = strict(text)
    assert result["test"]["auprc_macro_tail"] is None and result["test_calibrated"]["auprc_macro_tail"] is None
    assert isinstance(result["test"]["auprc_macro_head"], float)   # the defined ones stay numbers
    assert "NaN" not in text

    out_json = tmp_path / "eval.json"
    assert xevaluate.main(["--checkpoint", str(out), "--data", str(paths["test"]), "--out", str(out_json)]) == 0
    assert strict(out_json.read_text())["calibrated"]["auprc_macro_tail"] is None

    assert report.main([str(out)]) == 0   # the page shows the undefined cell as a dash
    page = (out / "report.html").read_text()
    assert "<td>auprc_macro_tail</td>" in page and "undefined for this split" in page
    capsys.readouterr()
