"""xmlc.eval.metrics against scikit-learn and brute-force loops, on small generated data."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import average_precision_score
from sklearn.metrics import f1_score as sk_f1

from xmlc.eval.streaming import BinnedAveragePrecision, MultilabelAUPRC
from xmlc.eval.metrics import (
    average_precision,
    binned_average_precision,
    evaluate_all,
    f1_score,
    ndcg_at_k,
    positive_rate_ratio,
    positive_rate_ratio_by_bucket,
    precision_at_k,
    psp_at_k,
)


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


def test_ap_matches_sklearn_continuous_and_chunked(monkeypatch):
    import xmlc.eval.metrics as m
    s, t = model_data()
    monkeypatch.setattr(m, "_POOLED_BLOCK_ENTRIES", s.shape[1] * 7)  # 7 rows per micro block
    monkeypatch.setattr(m, "_LABEL_BLOCK", 7)  # 7 labels per block of the per-label counts
    ref = sk_per_label(s, t)
    assert np.allclose(average_precision(s, t, average="none").numpy(), ref, atol=1e-6)
    monkeypatch.setattr(m, "_CELLS_PER_KEY", 0.05)  # crowded cells: forces the exact fix-up path
    got = m.tie_counts(m.eval_inputs(s, t), pooled=True)
    assert np.mean(got.pos_ge / got.all_ge) == pytest.approx(average_precision_score(t.ravel(), s.ravel()), abs=1e-6)


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("cells_per_key", [1, 4, 64])
def test_per_label_counts_exact_on_every_lookup_path(monkeypatch, cells_per_key, signed, pooled):
    """Ties inside and across lookup cells, crowded cells (binary search), small label/row blocks.

    Data: a coarse score grid with exact 0 and 1 (shifted by -0.5, with -0.0, when signed), one
    label with no positive and one with only positives; cells_per_key=1 crowds most cells, 64
    leaves at most one positive key per cell.
    """
    import xmlc.eval.metrics as m
    s, t = tied_data(n=257, l=23, levels=7, rate=0.3, seed=3, empty=(5,))
    s[:, 0] = np.round(s[:, 0])  # only 0 and 1
    s[::3, 1] = 1.0
    t[:, 7] = 1  # all positive
    s[:, 9] = np.random.default_rng(1).random(257).astype(np.float32)  # continuous, no ties
    if signed:  # negative scores and -0.0 take the general order-key path
        s -= np.float32(0.5)
        s[::2][s[::2] == 0] = -0.0
    monkeypatch.setattr(m, "_LABEL_BLOCK", 5)  # partial last block (23 = 4 x 5 + 3)
    monkeypatch.setattr(m, "_BLOCK_ENTRIES", 5 * 17)  # 17 rows per block: 257 = 15 x 17 + 2
    monkeypatch.setattr(m, "_CELLS_PER_KEY", cells_per_key)
    monkeypatch.setattr(m, "_POOLED_BLOCK_ENTRIES", 23 * 17)  # 17 rows per block when pooled
    lab, ps, pos_ge, all_ge = m.tie_counts(m.eval_inputs(s, t), pooled=pooled)
    # brute force: per positive, #positives and #entries of its label (pooled: of all labels)
    # with score >= its score
    assert np.array_equal(lab, np.sort(lab)) and lab.size == int(t.sum())
    groups = [(0, s.ravel(), t.ravel())] if pooled else [(j, s[:, j], t[:, j]) for j in range(s.shape[1])]
    for j, sj, tj in groups:
        k = lab == j
        assert np.all(np.diff(ps[k]) >= 0)
        ref_pos = [(sj[tj == 1] >= v).sum() for v in ps[k]]
        ref_all = [(sj >= v).sum() for v in ps[k]]
        assert np.array_equal(pos_ge[k], ref_pos) and np.array_equal(all_ge[k], ref_all)
    ref = sk_per_label(s, t)
    got = average_precision(s, t, average="none").numpy()
    assert np.isnan(got[5]) and got[7] == 1.0
    assert np.allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], atol=1e-6)


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
    expected = {"auprc_micro", "auprc_macro", "f1_micro", "f1_macro", "positive_rate_ratio", "num_labels_no_positive"}
    expected |= {f"{m}@{k}" for m in ("p", "ndcg", "psp") for k in (1, 3, 5)}
    expected |= {f"{m}_{b}" for m in ("auprc_macro", "positive_rate_ratio") for b in ("head", "torso", "tail")}
    assert set(out) == {"val/" + k for k in expected}
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
