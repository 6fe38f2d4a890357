"""xmlc.eval.calibrate against a brute-force scikit-learn loop and a known pos_weight shift."""

import io

import numpy as np
import pytest
import torch
import scipy.sparse as sp
from sklearn.metrics import precision_recall_curve

from xmlc.eval.calibrate import apply_thresholds, fit_thresholds, prior_thresholds
from xmlc.eval.metrics import f1_score, positive_rate_ratio


def data(n=500, l=30, seed=0, levels=None):
    rng = np.random.default_rng(seed)
    p = np.minimum(0.3 * (np.arange(l) + 1.0) ** -0.6, 0.5)
    t = (rng.random((n, l)) < p).astype(np.float32)
    z = -2.0 + 2.5 * t + 1.5 * rng.standard_normal((n, l))
    s = 1 / (1 + np.exp(-z))
    if levels:
        s = np.round(s * levels) / levels  # ties
    return s.astype(np.float32), t


def brute_best_fbeta(s, t, beta=1.0):
    best = []
    for j in range(t.shape[1]):
        p, r, _ = precision_recall_curve(t[:, j], s[:, j])
        den = beta**2 * p + r
        best.append(np.max(np.where(den > 0, (1 + beta**2) * p * r / np.where(den > 0, den, 1), 0)))
    return np.array(best)


@pytest.mark.parametrize("levels", [None, 25])
def test_f1_thresholds_reach_best_f1_of_sklearn_loop(levels):
    s, t = data(levels=levels)
    th = fit_thresholds(torch.from_numpy(s), t, method="f1", min_positives=1)
    assert th.dtype == torch.float32 and th.shape == (30,)
    got = f1_score(s, t, th, average="none").numpy()
    assert np.allclose(got, brute_best_fbeta(s, t), atol=1e-6)


def test_fbeta_thresholds_reach_best_fbeta():
    s, t = data(seed=1)
    beta = 2.0
    th = fit_thresholds(s, sp.csr_matrix(t), method="fbeta", beta=beta, min_positives=1).numpy()
    pred = s >= th
    tp = (pred & (t > 0)).sum(0)
    got = (1 + beta**2) * tp / (beta**2 * t.sum(0) + pred.sum(0))
    assert np.allclose(got, brute_best_fbeta(s, t, beta), atol=1e-6)


def test_f1_ties_pick_the_higher_threshold_and_edge_labels():
    # label 0: F1 2/3 at 0.9 (1 of 1 predicted) and at 0.6 (2 of 4): the higher score wins;
    # label 1: all positive (threshold at the lowest score, 0.0); label 2: no positive
    # (falls back to the global threshold); label 3: one positive at exactly 1.0
    s = np.array([[0.9, 1.0, 0.5, 1.0], [0.8, 0.0, 0.5, 0.2], [0.7, 0.5, 0.1, 0.2], [0.6, 1.0, 0.3, 0.0]],
                 dtype=np.float32)
    t = np.array([[1, 1, 0, 1], [0, 1, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]], dtype=np.float32)
    th = fit_thresholds(s, t, min_positives=1).numpy()
    assert th[0] == np.float32(0.9) and th[1] == 0.0 and th[3] == 1.0
    micro = [f1_score(s, t, c) for c in np.unique(s[t > 0])]
    assert f1_score(s, t, th[2]) == pytest.approx(max(micro), abs=1e-9)
    has = [0, 1, 3]
    assert np.allclose(f1_score(s, t, th, average="none").numpy()[has],
                       brute_best_fbeta(s[:, has], t[:, has]), atol=1e-6)


def test_rate_thresholds_match_counts():
    s, t = data(seed=2)
    th = fit_thresholds(s, t, method="rate", min_positives=1)
    pred = apply_thresholds(torch.from_numpy(s), th).numpy()
    assert np.array_equal(pred.sum(0), t.sum(0))  # continuous scores: no ties at the threshold
    assert positive_rate_ratio(s, t, th) == pytest.approx(1.0)


def test_few_positives_fall_back_to_global_threshold():
    s, t = data(seed=3)
    t[:, 5] = 0
    t[:3, 6], t[3:, 6] = 1, 0
    counts = t.sum(0)
    few = counts < 10
    th = fit_thresholds(s, t, min_positives=10).numpy()
    own = fit_thresholds(s, t, min_positives=0).numpy()
    glob = th[few][0]
    assert np.all(th[few] == glob) and np.array_equal(th[~few], own[~few])
    # the global threshold is the micro-F1-optimal one among all positives' scores
    cand = np.unique(s[t > 0])
    micro = [f1_score(s, t, c) for c in cand]
    assert f1_score(s, t, glob) == pytest.approx(max(micro), abs=1e-9)
    shrunk = fit_thresholds(s, t, min_positives=10, fallback="shrink").numpy()
    n6 = counts[6]
    assert shrunk[6] == pytest.approx((n6 * own[6] + 10 * glob) / (n6 + 10), rel=1e-6)
    assert shrunk[5] == glob


def test_prior_correction_brings_positive_rate_ratio_near_one():
    # a known logistic model: y ~ Bernoulli(sigmoid(z)); a model trained with BCE pos_weight w
    # converges to the logit z + ln w, so its scores are sigmoid(z + ln w)
    rng = np.random.default_rng(0)
    n, l = 20000, 20
    z = torch.from_numpy(np.linspace(-20, -16, l)[None, :] + 8 * rng.standard_normal((n, l))).float()
    y = torch.rand(n, l, generator=torch.Generator().manual_seed(0)) < torch.sigmoid(z)
    w = (n - y.sum(0)) / y.sum(0)
    calibrated, shifted = torch.sigmoid(z), torch.sigmoid(z + torch.log(w))
    th = fit_thresholds(shifted, y, method="prior", pos_weight=w)
    assert torch.allclose(th, prior_thresholds(w)) and torch.allclose(th, w / (1 + w))
    before = positive_rate_ratio(shifted, y, 0.5)
    after = positive_rate_ratio(shifted, y, th)
    assert before > 2.0  # measured 2.9: over-predicting
    assert 0.8 < after < 1.2  # measured 0.87
    # same decisions as the calibrated model at 0.5 (subtracting ln w from the logit)
    assert after == pytest.approx(positive_rate_ratio(calibrated, y, 0.5), abs=0.01)


def test_apply_thresholds_is_pure_and_thresholds_round_trip_through_a_checkpoint():
    s, t = data()
    st = torch.from_numpy(s)
    copy = st.clone()
    th = fit_thresholds(st, t)
    pred = apply_thresholds(st, th)
    assert pred.dtype == torch.bool and pred.shape == st.shape and torch.equal(st, copy)
    assert torch.equal(apply_thresholds(st, 0.5), st >= 0.5)
    buf = io.BytesIO()
    torch.save({"thresholds": th}, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf)["thresholds"], th)


def test_bad_arguments_are_named():
    s, t = data()
    with pytest.raises(ValueError, match="method"):
        fit_thresholds(s, t, method="youden")
    with pytest.raises(ValueError, match="pos_weight"):
        fit_thresholds(s, t, method="prior")
    with pytest.raises(ValueError, match="fallback"):
        fit_thresholds(s, t, fallback="zero")
    with pytest.raises(ValueError, match="beta"):
        fit_thresholds(s, t, method="fbeta", beta=0)
    with pytest.raises(ValueError, match="thresholds"):
        apply_thresholds(torch.from_numpy(s), torch.zeros(3))
    with pytest.raises(ValueError, match="pos_weight"):
        prior_thresholds(torch.tensor([1.0, -1.0]))


def _thresholds_both_engines(s, t, device, **kw):
    from xmlc.eval.calibrate import _fit
    from xmlc.eval.inputs import eval_inputs
    args = (kw["method"], kw.get("b2", 1.0), kw["min_positives"], kw["fallback"])
    host = _fit(eval_inputs(torch.from_numpy(s), t), *args)
    dev = _fit(eval_inputs(torch.from_numpy(s).to(device), sp.csr_matrix(t), engine="torch"), *args)
    return host, dev


@pytest.mark.parametrize("fallback", ["global", "shrink"])
@pytest.mark.parametrize("method, b2", [("f1", 1.0), ("fbeta", 4.0), ("rate", 1.0)])
@pytest.mark.parametrize("levels", [None, 25])
def test_torch_engine_fits_the_same_thresholds(method, b2, fallback, levels):
    """Exactly the same float32 thresholds (ties between candidates go to the higher score on
    both engines), including the global fallback for labels with few positives."""
    s, t = data(levels=levels)
    t[:, 5] = 0
    host, dev = _thresholds_both_engines(s, t, "cpu", method=method, b2=b2, min_positives=8, fallback=fallback)
    assert torch.equal(host, dev)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["f1", "rate"])
def test_thresholds_of_cuda_scores_equal_the_host_engine(method):
    s, t = data(levels=25)
    host, dev = _thresholds_both_engines(s, t, "cuda", method=method, min_positives=8, fallback="global")
    assert torch.equal(host, dev)
    assert torch.equal(fit_thresholds(torch.from_numpy(s).cuda(), t, method=method, min_positives=8), host)
