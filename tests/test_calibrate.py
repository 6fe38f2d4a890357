"""xmlc.eval.calibrate against a brute-force scikit-learn loop and a known pos_weight shift."""

import io
import itertools

import numpy as np
import pytest
import torch
import scipy.sparse as sp
from sklearn.metrics import precision_recall_curve

from xmlc.eval.calibrate import COUNT_BAND, apply_thresholds, fit_thresholds, prior_thresholds, transfer_thresholds
from xmlc.eval.metrics import f1_score, positive_rate_ratio
from xmlc.stats import frequency_buckets


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


def test_f1_count_on_a_known_optimum():
    # one label, 10 rows, positives ranked 1st and 5th: best F1 at top-1 (2/3); the bucket band
    # [0.97, 1.12] x 2 (the label is its own bucket) allows only top-2 (F1 1/2), so the threshold is
    # the 2nd score; so does a per-label band of [0.95, 1.3] x 2 alone
    s = np.array([[0.95], [0.9], [0.8], [0.7], [0.6], [0.5], [0.4], [0.3], [0.2], [0.1]], np.float32)
    t = np.zeros((10, 1), np.float32)
    t[[0, 4], 0] = 1
    assert fit_thresholds(s, t, method="f1", min_positives=1).item() == pytest.approx(0.95)
    assert fit_thresholds(s, t, method="f1_count", min_positives=1).item() == pytest.approx(0.9)
    assert fit_thresholds(s, t, method="f1_count", min_positives=1, band=(0.95, 1.3),
                          bucket_band=None).item() == pytest.approx(0.9)
    assert fit_thresholds(s, t, method="f1_count", min_positives=1, bucket_band=None).item() == pytest.approx(0.95)
    # three labels: every combination of in-band cuts, the best micro F1 found by brute force
    s3, t3 = data(n=60, l=3, seed=8)
    band = (0.8, 1.5)
    n = t3.sum(0)
    options = []
    for j in range(3):
        cuts = np.unique(s3[:, j])
        options.append([c for c in cuts if n[j] * band[0] - 1e-9 <= (s3[:, j] >= c).sum() <= n[j] * band[1] + 1e-9])
    best = max(f1_score(s3, t3, np.array(combo)) for combo in itertools.product(*options))
    th = fit_thresholds(s3, t3, method="f1_count", band=band, bucket_band=None, total_max=10.0,
                        min_positives=1).numpy()
    assert f1_score(s3, t3, th) == pytest.approx(best, abs=1e-9)
    assert all(th[j] in options[j] for j in range(3))


def in_band(predicted, expected, band):
    """predicted in [low c, high c] in whole counts, or the nearest count to c where none is inside."""
    lo, hi = np.ceil(expected * band[0] - 1e-9), np.floor(expected * band[1] + 1e-9)
    return ((lo <= predicted) & (predicted <= hi)) | ((lo > hi) & (predicted == np.floor(expected + 0.5)))


def test_f1_count_band_holds_on_validation_by_construction():
    s, t = data(n=2000, l=40, seed=5)
    t[:6, 39], t[6:, 39] = 1, 0                    # a label with 6 positives: pooled with its group
    expected = t.sum(0) * np.linspace(0.8, 1.2, 40)   # any expected counts, e.g. from the training split
    for band in ((1.0, 1.0), (0.95, 1.3), (0.5, 2.0)):
        th = fit_thresholds(s, t, method="f1_count", band=band, min_positives=20, expected=expected).numpy()
        predicted = (s >= th).sum(0)
        own, few = t.sum(0) >= 20, t.sum(0) < 20
        assert np.all(in_band(predicted[own], expected[own], band)), band
        assert np.unique(th[few]).size == 1           # one group here (6 positives: log2 group 2)
        assert in_band(predicted[few].sum(), expected[few].sum(), band)
    # labels of different frequency groups share a threshold only within their group
    groups = np.arange(40) % 2
    th = fit_thresholds(s, t, method="f1_count", min_positives=10**6, groups=groups, buckets=np.zeros(40, int),
                        bucket_band=None).numpy()
    assert np.unique(th[groups == 0]).size == 1 and np.unique(th[groups == 1]).size == 1
    for g in (0, 1):
        k, c = (s[:, groups == g] >= th[groups == g]).sum(), t[:, groups == g].sum()
        assert in_band(k, c, COUNT_BAND)


def test_f1_count_bucket_band_holds_on_validation_by_construction():
    s, t = data(n=2000, l=40, seed=5)
    buckets = frequency_buckets(t.sum(0))
    assert np.bincount(buckets).tolist() == [6, 13, 21]
    for bucket_band in ((1.0, 1.0), (0.95, 1.08), (0.9, 1.12)):
        th = fit_thresholds(s, t, method="f1_count", band=(0.5, 2.0), bucket_band=bucket_band, total_max=10.0,
                            min_positives=20, buckets=buckets).numpy()
        for b in range(3):
            k, c = (s[:, buckets == b] >= th[buckets == b]).sum(), t[:, buckets == b].sum()
            assert in_band(k, c, bucket_band), (bucket_band, b, k, c)
    # pooled labels (under min_positives) share a threshold only within their bucket
    th = fit_thresholds(s, t, method="f1_count", min_positives=10**6, groups=np.zeros(40, int), buckets=buckets)
    assert [np.unique(th[buckets == b]).size for b in range(3)] == [1, 1, 1]


def test_f1_count_bucket_band_against_brute_force():
    # 4 labels, 2 buckets of 2: every combination of in-band cuts, the best micro F1 with each
    # bucket's total in its band. A multiplier alone reaches only hull vertices and may jump over a
    # bucket's band; the fill repairs that, so the bounds always hold, and the greedy fill is
    # the exact optimum on most cases and close on the rest
    band, bucket_band, buckets = (0.5, 2.0), (0.9, 1.1), np.array([0, 0, 1, 1])
    exact = 0
    for seed in range(10):
        s, t = data(n=50, l=4, seed=seed)
        n = t.sum(0)
        cuts = [[c for c in np.unique(s[:, j]) if in_band((s[:, j] >= c).sum(), n[j], band)] for j in range(4)]
        k = [np.array([(s[:, j] >= c).sum() for c in cuts[j]]) for j in range(4)]   # per label: count, hits
        tp = [np.array([t[s[:, j] >= c, j].sum() for c in cuts[j]]) for j in range(4)]
        grid = np.meshgrid(*[np.arange(len(c)) for c in cuts], indexing="ij")   # every combination
        kk, hit = [np.stack([a[j][grid[j]] for j in range(4)]) for a in (k, tp)]
        ok = np.all([in_band(kk[buckets == b].sum(0), n[buckets == b].sum(), bucket_band) for b in (0, 1)], axis=0)
        best = (2 * hit.sum(0) / (kk.sum(0) + n.sum()))[ok].max()
        th = fit_thresholds(s, t, method="f1_count", band=band, bucket_band=bucket_band, buckets=buckets,
                            total_max=10.0, min_positives=1).numpy()
        for b in (0, 1):
            assert in_band((s[:, buckets == b] >= th[buckets == b]).sum(), n[buckets == b].sum(), bucket_band)
        assert f1_score(s, t, th) >= 0.99 * best
        exact += f1_score(s, t, th) == pytest.approx(best, abs=1e-12)
    assert exact >= 8


def test_f1_count_keeps_f1_and_matches_counts_where_f1_over_predicts():
    # weakly ranked labels: F1 thresholds over-predict on fresh data from the same model; the
    # bands hold the count and cost little F1 (the goals: micro >= 0.99x, macro >= 0.98x)
    fit, fresh = data(n=4000, l=30, seed=6), data(n=4000, l=30, seed=7)
    f1 = fit_thresholds(*fit, method="f1", min_positives=20)
    count = fit_thresholds(*fit, method="f1_count", min_positives=20)
    assert positive_rate_ratio(*fresh, f1) > 1.1                    # measured 1.15
    assert positive_rate_ratio(*fit, count) <= 1.1                  # the total's bound, on validation
    assert 0.95 < positive_rate_ratio(*fresh, count) < 1.1          # measured 1.04
    assert f1_score(*fresh, count) >= 0.99 * f1_score(*fresh, f1)                         # 1.001x
    assert f1_score(*fresh, count, average="macro") >= 0.98 * f1_score(*fresh, f1, average="macro")   # 0.990x


def test_f1_count_bad_arguments_are_named():
    s, y = np.random.default_rng(0).random((4, 3)), np.eye(4, 3)
    assert fit_thresholds(s, y, method="f1_count", min_positives=0, expected=[1.2, 0.2, 3.2]).shape == (3,)
    with pytest.raises(ValueError, match="expected"):
        fit_thresholds(s, y, method="f1_count", expected=[1.0, -1.0, 0.0])
    with pytest.raises(ValueError, match="band"):
        fit_thresholds(s, y, method="f1_count", band=(1.1, 1.5))
    with pytest.raises(ValueError, match="total_max"):
        fit_thresholds(s, y, method="f1_count", total_max=0.5)
    with pytest.raises(ValueError, match="groups"):
        fit_thresholds(s, y, method="f1_count", groups=[0, 1])
    with pytest.raises(ValueError, match="buckets"):
        fit_thresholds(s, y, method="f1_count", buckets=[0.5, 1.0, 2.0])
    with pytest.raises(ValueError, match="bucket_band"):
        fit_thresholds(s, y, method="f1_count", bucket_band=(0.9, 0.95))


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


def test_transfer_thresholds_keeps_each_labels_count_on_the_rows():
    rng = np.random.default_rng(3)
    before = torch.from_numpy(rng.random((500, 6)).astype(np.float32))
    after = torch.sigmoid(3 * before + 0.5)            # another model, scores in the same order, higher
    thresholds = torch.tensor([0.2, 0.5, 0.9, 0.99, 2.0, 0.0])   # 2.0: never predicted before
    moved = transfer_thresholds(thresholds, before, after)
    assert torch.equal((after >= moved).sum(0)[:4], (before >= thresholds).sum(0)[:4])
    assert moved[4] == 2.0 and moved[5] == after[:, 5].min()   # kept; all rows -> the smallest score
    # the same decisions on every row where the order is the same
    assert torch.equal(after >= moved, before >= thresholds)
    with pytest.raises(ValueError, match="before and after"):
        transfer_thresholds(thresholds, before, after[:, :5])
