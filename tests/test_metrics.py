"""xmlc.eval.metrics, xmlc.eval.summary and xmlc.eval.streaming against scikit-learn and brute-force
loops, on small generated data (the AP kernel itself: tests/test_kernels_ap.py)."""

import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import average_precision_score
from sklearn.metrics import f1_score as sk_f1

from xmlc.eval.metrics import (
    average_precision,
    binned_average_precision,
    f1_score,
    ndcg_at_k,
    positive_rate_ratio,
    positive_rate_ratio_by_bucket,
    precision_at_k,
    psp_at_k,
)
from xmlc.eval.summary import evaluate_all, metrics_report, threshold_metrics


def tied_data(n=300, l=40, levels=20, rate=0.1, seed=0, empty=(3,)):
    """Scores on a coarse grid (many ties), including exact zeros; some labels without positives."""
    rng = np.random.default_rng(seed)
    s = (rng.integers(0, levels, (n, l)) / levels).astype(np.float32)
    t = (rng.random((n, l)) < rate).astype(np.float32)
    t[:, list(empty)] = 0
    return s, t


def model_data(n=2000, l=60, seed=0):
    """Power-law label frequencies and a weak model's continuous scores."""
    rng = np.random.default_rng(seed)
    p = np.minimum(0.3 * (np.arange(l) + 1.0) ** -0.7, 0.5)
    t = (rng.random((n, l)) < p).astype(np.float32)
    z = -3.0 + 3.0 * t + 1.5 * rng.standard_normal((n, l))
    return (1 / (1 + np.exp(-z))).astype(np.float32), t


def sk_per_label(s, t):
    return np.array([average_precision_score(t[:, j], s[:, j]) if t[:, j].any() else np.nan
                     for j in range(t.shape[1])])


@pytest.mark.parametrize("kind", ["torch", "numpy", "csr"])
def test_ap_matches_sklearn_with_ties(kind):
    s, t = tied_data()
    targets = {"torch": torch.from_numpy(t), "numpy": t, "csr": sp.csr_matrix(t)}[kind]
    scores = torch.from_numpy(s) if kind == "torch" else s
    ref = sk_per_label(s, t)
    none = average_precision(scores, targets, average="none").numpy()
    assert np.isnan(none[3]) and np.allclose(none[~np.isnan(ref)], ref[~np.isnan(ref)], atol=1e-6)
    assert float(average_precision(scores, targets)) == pytest.approx(np.nanmean(ref), abs=1e-6)
    assert float(average_precision(scores, targets, average="micro")) == pytest.approx(
        average_precision_score(t.ravel(), s.ravel()), abs=1e-6)


def test_ap_matches_sklearn_continuous():
    s, t = model_data()
    assert np.allclose(average_precision(s, t, average="none").numpy(), sk_per_label(s, t), atol=1e-6)
    assert float(average_precision(s, t, average="micro")) == pytest.approx(
        average_precision_score(t.ravel(), s.ravel()), abs=1e-6)


def test_ap_negative_zero_and_negative_scores_tie_correctly():
    s = np.array([[-0.0, 0.0], [0.0, -1.5], [0.3, -0.0], [-2.0, 0.0]], dtype=np.float32)
    t = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)
    ref = sk_per_label(s, t)
    assert np.allclose(average_precision(s, t, average="none").numpy(), ref, atol=1e-6)
    assert float(average_precision(s, t, average="micro")) == pytest.approx(
        average_precision_score(t.ravel(), s.ravel()), abs=1e-6)


def test_empty_label_policy():
    s, t = tied_data(empty=(0, 5))
    ref = sk_per_label(s, t)
    zero = average_precision(s, t, average="none", empty="zero").numpy()
    assert zero[0] == 0 and zero[5] == 0
    assert float(average_precision(s, t, empty="zero")) == pytest.approx(np.nan_to_num(ref).mean(), abs=1e-6)
    assert float(average_precision(s, t, empty="ignore")) == pytest.approx(np.nanmean(ref), abs=1e-6)
    assert math.isnan(float(average_precision(s, np.zeros_like(t))))
    assert evaluate_all(s, t)["num_labels_no_positive"] == 2


def test_bad_arguments_are_named():
    s, t = tied_data()
    with pytest.raises(ValueError, match="average"):
        average_precision(s, t, average="weighted")
    with pytest.raises(ValueError, match="empty"):
        average_precision(s, t, empty="skip")
    with pytest.raises(ValueError, match="0/1"):
        average_precision(s, t * 2)
    with pytest.raises(ValueError, match="shape"):
        average_precision(s, t[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.full_like(s, np.nan), t)
    with pytest.raises(ValueError, match="k must"):
        precision_at_k(s, t, 0)


def test_binned_equals_exact_ap_of_binned_scores():
    s, t = model_data()
    for bins in (10, 100):
        q = np.minimum(np.floor(s * bins), bins - 1).astype(np.float32)
        got = binned_average_precision(torch.from_numpy(s), t, num_bins=bins, average="none").numpy()
        assert np.allclose(got, sk_per_label(q, t), atol=1e-6)
        assert float(binned_average_precision(s, t, num_bins=bins, average="micro")) == pytest.approx(
            average_precision_score(t.ravel(), q.ravel()), abs=1e-6)


def test_binned_distance_from_exact_at_1000_bins():
    s, t = model_data(n=4000, seed=1)
    exact = average_precision(s, t, average="none").numpy()
    binned = binned_average_precision(s, t, num_bins=1000, average="none").numpy()
    # measured here: max 4.0e-3 per label, 4.8e-4 macro, 4.9e-4 micro
    assert np.abs(binned - exact).max() < 1e-2
    assert abs(float(binned_average_precision(s, t)) - float(average_precision(s, t))) < 1e-3
    assert abs(float(binned_average_precision(s, t, average="micro"))
               - float(average_precision(s, t, average="micro"))) < 1e-3


def test_metric_classes_match_functional_and_merge_like_ddp():
    pytest.importorskip("torchmetrics")
    from xmlc.eval.streaming import BinnedAveragePrecision, MultilabelAUPRC
    s, t = model_data(n=600)
    st, tt = torch.from_numpy(s), torch.from_numpy(t)
    for avg in ("macro", "micro", "none"):
        exact = MultilabelAUPRC(num_labels=60, average=avg)
        binned = BinnedAveragePrecision(num_labels=60, num_bins=200, average=avg)
        for r0 in range(0, 600, 128):
            exact.update(st[r0:r0 + 128], tt[r0:r0 + 128])
            binned.update(st[r0:r0 + 128], tt[r0:r0 + 128])
        assert torch.allclose(exact.compute(), torch.as_tensor(average_precision(st, tt, average=avg)), equal_nan=True)
        assert torch.allclose(binned.compute(), torch.as_tensor(binned_average_precision(st, tt, num_bins=200,
                                                                                         average=avg)), equal_nan=True)
    assert binned.pos_hist.shape == (60, 200)
    # two "processes", then the states reduced with their dist_reduce_fx (sum / cat)
    a, b = BinnedAveragePrecision(num_labels=60, num_bins=200), BinnedAveragePrecision(num_labels=60, num_bins=200)
    a.update(st[:300], tt[:300])
    b.update(st[300:], tt[300:])
    a.merge_state(b)
    assert a.compute().item() == pytest.approx(binned_average_precision(st, tt, num_bins=200), abs=1e-6)
    a, b = MultilabelAUPRC(num_labels=60), MultilabelAUPRC(num_labels=60)
    a.update(st[:300], tt[:300])
    b.update(st[300:], tt[300:])
    a.merge_state(b)
    assert a.compute().item() == pytest.approx(average_precision(st, tt), abs=1e-6)


def test_streaming_without_torchmetrics_says_how_to_install_it():
    code = ("import sys; sys.modules['torchmetrics'] = None\n"  # as if it were not installed
            "import xmlc.eval, xmlc.eval.metrics, xmlc.eval.summary, xmlc.eval.calibrate, xmlc.eval.figures\n"
            "try:\n    import xmlc.eval.streaming\nexcept ImportError as err:\n    print(err)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pip install 'xmlc-trainer[streaming]'" in proc.stdout


def brute_ranking(s, t, k, prop=None):
    t = t.astype(np.float64)
    p = nd = num = den = 0.0
    for i in range(s.shape[0]):
        top = np.argsort(-s[i], kind="stable")[:k]
        rel = t[i, top]
        p += rel.sum() / k
        dcg = sum(r / np.log2(j + 2) for j, r in enumerate(rel))
        ideal = sum(1 / np.log2(j + 2) for j in range(min(k, int(t[i].sum()))))
        nd += dcg / ideal if ideal > 0 else 0.0
        if prop is not None:
            num += (rel / prop[top]).sum()
            den += np.sort(t[i] / prop)[::-1][:k].sum()
    n = s.shape[0]
    return p / n, nd / n, (num / den if prop is not None else None)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_ranking_metrics_match_brute_force(k):
    s, t = model_data(n=300)  # continuous scores: no ties inside the top k
    prop = np.random.default_rng(0).uniform(0.2, 1.0, s.shape[1])
    p, nd, psp = brute_ranking(s, t, k, prop)
    csr = sp.csr_matrix(t)
    assert precision_at_k(s, csr, k) == pytest.approx(p, abs=1e-9)
    assert ndcg_at_k(torch.from_numpy(s), t, k) == pytest.approx(nd, abs=1e-9)
    assert psp_at_k(s, csr, k, torch.from_numpy(prop)) == pytest.approx(psp, abs=1e-9)


def test_f1_matches_sklearn_scalar_and_per_label_thresholds():
    s, t = model_data(n=500)
    t[:, 7] = 0
    thr = np.random.default_rng(0).uniform(0.2, 0.8, s.shape[1]).astype(np.float32)
    for th in (0.5, thr, torch.from_numpy(thr)):
        pred = (s >= np.asarray(th)).astype(int)
        assert f1_score(s, t, th) == pytest.approx(sk_f1(t, pred, average="micro"), abs=1e-9)
        assert f1_score(s, t, th, average="macro", empty="zero") == pytest.approx(
            sk_f1(t, pred, average="macro", zero_division=0), abs=1e-9)
        has = t.any(0)
        assert f1_score(s, sp.csr_matrix(t), th, average="macro") == pytest.approx(
            sk_f1(t[:, has], pred[:, has], average="macro", zero_division=0), abs=1e-9)
        none = f1_score(s, t, th, average="none").numpy()
        assert np.isnan(none[7])
        assert np.allclose(none[has], sk_f1(t[:, has], pred[:, has], average=None, zero_division=0), atol=1e-6)


def test_positive_rate_ratio_overall_and_per_bucket():
    s, t = model_data(n=500)
    buckets = np.arange(s.shape[1]) % 3
    pred = s >= 0.3
    out = positive_rate_ratio_by_bucket(s, t, 0.3, buckets=buckets)
    assert out["all"] == pytest.approx(pred.sum() / t.sum())
    for i, name in enumerate(("head", "torso", "tail")):
        assert out[name] == pytest.approx(pred[:, buckets == i].sum() / t[:, buckets == i].sum())
    assert positive_rate_ratio(s, t, 0.3) == out["all"]


def test_evaluate_all_names_and_values():
    s, t = model_data(n=400)
    t[:, 2] = 0
    buckets = np.arange(s.shape[1]) % 3
    prop = np.full(s.shape[1], 0.5)
    out = evaluate_all(torch.from_numpy(s), sp.csr_matrix(t), buckets=buckets, propensities=prop, prefix="val/")
    expected = {"auprc_micro", "auprc_macro", "f1_micro", "f1_macro", "positive_rate_ratio", "expected_positive_ratio",
                "num_labels_no_positive"}
    expected |= {f"{m}@{k}" for m in ("p", "ndcg", "psp") for k in (1, 3, 5)}
    expected |= {f"{m}_{b}" for m in ("auprc_macro", "positive_rate_ratio", "expected_positive_ratio")
                 for b in ("head", "torso", "tail")}
    assert set(out) == {"val/" + k for k in expected}
    assert out["val/expected_positive_ratio"] == pytest.approx(s.sum() / t.sum(), rel=1e-6)
    assert out["val/expected_positive_ratio_torso"] == pytest.approx(s[:, buckets == 1].sum() / t[:, buckets == 1].sum(),
                                                                     rel=1e-6)
    assert out["val/auprc_macro"] == pytest.approx(float(average_precision(s, t)), abs=1e-6)
    assert out["val/auprc_micro"] == pytest.approx(float(average_precision(s, t, average="micro")), abs=1e-6)
    assert out["val/p@3"] == pytest.approx(precision_at_k(s, t, 3))
    assert out["val/f1_macro"] == pytest.approx(f1_score(s, t, average="macro"))
    per = average_precision(s, t, average="none").numpy()
    assert out["val/auprc_macro_tail"] == pytest.approx(np.nanmean(per[buckets == 2]), abs=1e-6)
    assert out["val/num_labels_no_positive"] == 1
    plain = evaluate_all(s, t)
    assert "psp@1" not in plain and "auprc_macro_head" not in plain
    assert all(isinstance(v, (int, float)) for v in plain.values())


def test_metrics_report_at_half_and_at_named_thresholds():
    s, t = model_data(n=400)
    buckets = np.arange(s.shape[1]) % 3
    thr = np.random.default_rng(0).uniform(0.2, 0.8, s.shape[1]).astype(np.float32)
    report = metrics_report(s, sp.csr_matrix(t), {"fitted": thr}, ks=(1, 3), buckets=buckets)
    assert report["at_0.5"] == evaluate_all(s, t, ks=(1, 3), buckets=buckets)
    assert report["fitted"] == evaluate_all(s, t, thresholds=thr, ks=(1, 3), buckets=buckets)
    decided = threshold_metrics(s, t, thr, buckets)
    assert decided == {k: v for k, v in report["fitted"].items() if k in decided}
    assert decided["f1_micro"] == f1_score(s, t, thr)


# ---------------------------------------------------------------------------------------
# The torch engine: the metrics computed with torch ops where the scores are


def _report_both_engines(s, t, device="cpu"):
    """evaluate_all's steps on the host engine and on the torch engine (scores on ``device``)."""
    from xmlc.eval.inputs import eval_inputs
    from xmlc.eval.summary import _evaluate_all
    l = s.shape[1]
    buckets, prop = np.arange(l) % 3, np.linspace(0.2, 1.0, l)
    thr = np.random.default_rng(1).uniform(0.2, 0.8, l).astype(np.float32)
    scores = torch.from_numpy(s)
    host = _evaluate_all(eval_inputs(scores, t), thr, [1, 3, 5], buckets, prop, "ignore")
    inputs = eval_inputs(scores.to(device), sp.csr_matrix(t), engine="torch")
    assert inputs.on_device and inputs.scores.device.type == torch.device(device).type
    return host, _evaluate_all(inputs, thr, [1, 3, 5], buckets, prop, "ignore")


@pytest.mark.parametrize("data", [tied_data, model_data])
def test_torch_engine_equals_numpy_engine_and_sklearn(data):
    """Every entry of evaluate_all (AUPRC micro/macro/buckets, P@k, nDCG, PSP, F1, rate ratios)
    equal on both engines, and the AUPRC equal to scikit-learn's."""
    s, t = data()
    host, dev = _report_both_engines(s, t)
    assert set(host) == set(dev)
    for name in host:
        assert dev[name] == pytest.approx(host[name], abs=1e-12, nan_ok=True), name
    ref = sk_per_label(s, t)   # the per-label APs are reported as float32, as on the host
    assert dev["auprc_macro"] == pytest.approx(np.nanmean(ref), abs=1e-6)
    assert dev["auprc_micro"] == pytest.approx(average_precision_score(t.ravel(), s.ravel()), abs=1e-6)


def test_auto_engine_follows_the_scores_device():
    from xmlc.eval.inputs import eval_inputs
    s, t = tied_data(n=20, l=4)
    assert not eval_inputs(torch.from_numpy(s), t).on_device       # CPU tensors: numpy engine
    assert not eval_inputs(s, t, engine="torch").on_device         # numpy arrays stay numpy
    with pytest.raises(ValueError, match="engine"):
        eval_inputs(s, t, engine="gpu")
    with pytest.raises(ValueError, match="NaN"):
        eval_inputs(torch.full((2, 2), float("nan")), np.zeros((2, 2)), engine="torch")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_of_cuda_scores_equal_the_host_engine():
    """Continuous scores (no ties, so top-k order is unique): every metric equal within float64
    rounding; the public functions pick the torch engine for CUDA tensors by themselves."""
    s, t = model_data()
    host, dev = _report_both_engines(s, t, "cuda")
    for name in host:
        assert dev[name] == pytest.approx(host[name], abs=1e-12, nan_ok=True), name
    assert average_precision(torch.from_numpy(s).cuda(), t) == pytest.approx(host["auprc_macro"], abs=1e-12)
