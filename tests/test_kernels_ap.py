"""xmlc.kernels.ap: the fast AP engine equals its plain reference, and the reference equals scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

import xmlc.kernels.ap as kap
from xmlc.eval.inputs import eval_inputs
from xmlc.eval.metrics import average_precision, binned_average_precision


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


def positives(t):
    rows, cols = np.nonzero(t)
    return rows.astype(np.int64), cols.astype(np.int64)


def sk_per_label(s, t):
    return np.array([average_precision_score(t[:, j], s[:, j]) if t[:, j].any() else np.nan
                     for j in range(t.shape[1])])


def assert_counts_equal(got, ref):
    for name, a, b in zip(kap.TieCounts._fields, got, ref):
        assert a.dtype == b.dtype and np.array_equal(a, b), name


def lookup_data(signed=True):
    """Ties, exact 0 and 1, an all-zero label (5), an all-positive label (7), a continuous label (9);
    with ``signed``, shifted by -0.5 into negative scores, with -0.0 and 0.0."""
    s, t = tied_data(n=257, l=23, levels=7, rate=0.3, seed=3, empty=(5,))
    s[:, 0] = np.round(s[:, 0])  # only 0 and 1
    s[::3, 1] = 1.0
    t[:, 7] = 1  # all positive
    s[:, 9] = np.random.default_rng(1).random(257).astype(np.float32)  # continuous, no ties
    if signed:  # negative scores and -0.0 take the general order-key path
        s -= np.float32(0.5)
        s[::2][s[::2] == 0] = -0.0
    return s, t


CASES = {"ties": tied_data, "signed": lookup_data, "continuous": lambda: model_data(n=600)}


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_equals_reference(case, pooled):
    s, t = CASES[case]()
    rows, cols = positives(t)
    assert_counts_equal(kap.tie_counts(s, rows, cols, pooled=pooled),
                        kap.tie_counts_reference(s, rows, cols, pooled=pooled))
    fast = kap.ap_per_label(s, rows, cols, pooled=pooled)
    ref = kap.ap_per_label_reference(s, rows, cols, pooled=pooled)
    assert fast.shape == ref.shape == ((1,) if pooled else (s.shape[1],))
    assert np.array_equal(np.isnan(fast), np.isnan(ref))
    assert np.allclose(fast, ref, rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_equals_sklearn(case):
    s, t = CASES[case]()
    rows, cols = positives(t)
    ref = kap.ap_per_label_reference(s, rows, cols)
    assert np.allclose(ref, sk_per_label(s, t), rtol=1e-12, atol=0, equal_nan=True)
    pooled = kap.ap_per_label_reference(s, rows, cols, pooled=True)
    assert pooled[0] == pytest.approx(average_precision_score(t.ravel(), s.ravel()), rel=1e-12)


def test_binary_clf_curve_counts_at_each_distinct_threshold():
    s, t = tied_data(n=500, l=3, levels=9, rate=0.3, empty=())
    s[::4, 1] = -0.0  # -0.0 and 0.0 are one threshold
    for j in range(3):
        fps, tps, thresholds = kap.binary_clf_curve(t[:, j], s[:, j])
        distinct = np.unique(s[:, j])[::-1]
        assert np.array_equal(thresholds, distinct)
        assert np.array_equal(tps, [(t[s[:, j] >= v, j] == 1).sum() for v in distinct])
        assert np.array_equal(fps, [(t[s[:, j] >= v, j] == 0).sum() for v in distinct])


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("cells_per_key", [1, 4, 64])
def test_counts_exact_on_every_lookup_path(monkeypatch, cells_per_key, signed, pooled):
    """Ties inside and across lookup cells, crowded cells (binary search), small label/row blocks.

    cells_per_key=1 crowds most cells, 64 leaves at most one positive key per cell.
    """
    s, t = lookup_data(signed)
    monkeypatch.setattr(kap, "_LABEL_BLOCK", 5)  # partial last block (23 = 4 x 5 + 3)
    monkeypatch.setattr(kap, "_BLOCK_ENTRIES", 5 * 17)  # 17 rows per block: 257 = 15 x 17 + 2
    monkeypatch.setattr(kap, "_CELLS_PER_KEY", cells_per_key)
    monkeypatch.setattr(kap, "_POOLED_BLOCK_ENTRIES", 23 * 17)  # 17 rows per block when pooled
    rows, cols = positives(t)
    lab, ps, pos_ge, all_ge = got = kap.tie_counts(s, rows, cols, pooled=pooled)
    assert_counts_equal(got, kap.tie_counts_reference(s, rows, cols, pooled=pooled))
    # and brute force: per positive, #positives and #entries of its label (pooled: of all labels)
    # with score >= its score
    assert np.array_equal(lab, np.sort(lab)) and lab.size == int(t.sum())
    groups = [(0, s.ravel(), t.ravel())] if pooled else [(j, s[:, j], t[:, j]) for j in range(s.shape[1])]
    for j, sj, tj in groups:
        k = lab == j
        assert np.all(np.diff(ps[k]) >= 0)
        assert np.array_equal(pos_ge[k], [(sj[tj == 1] >= v).sum() for v in ps[k]])
        assert np.array_equal(all_ge[k], [(sj >= v).sum() for v in ps[k]])
    ref = sk_per_label(s, t)
    got = average_precision(s, t, average="none").numpy()  # the metric on the same kernel paths
    assert np.isnan(got[5]) and got[7] == 1.0
    assert np.allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], atol=1e-6)


def test_continuous_and_chunked_equal_sklearn(monkeypatch):
    s, t = model_data()
    rows, cols = positives(t)
    monkeypatch.setattr(kap, "_POOLED_BLOCK_ENTRIES", s.shape[1] * 7)  # 7 rows per micro block
    monkeypatch.setattr(kap, "_LABEL_BLOCK", 7)  # 7 labels per block of the per-label counts
    assert np.allclose(kap.ap_per_label(s, rows, cols), sk_per_label(s, t), rtol=1e-12, atol=0)
    monkeypatch.setattr(kap, "_CELLS_PER_KEY", 0.05)  # crowded cells: forces the exact fix-up path
    got = kap.ap_per_label(s, rows, cols, pooled=True)[0]
    assert got == pytest.approx(average_precision_score(t.ravel(), s.ravel()), rel=1e-12)


@pytest.mark.parametrize("shape", [(0, 4), (5, 0), (0, 0), (6, 3)])
def test_empty_matrices_and_no_positive(shape):
    s = np.random.default_rng(0).random(shape, dtype=np.float32)
    rows = cols = np.zeros(0, np.int64)
    for pooled in (False, True):
        fast = kap.ap_per_label(s, rows, cols, pooled=pooled)
        ref = kap.ap_per_label_reference(s, rows, cols, pooled=pooled)
        assert fast.shape == ref.shape and np.isnan(fast).all() and np.isnan(ref).all()
        assert_counts_equal(kap.tie_counts(s, rows, cols, pooled=pooled),
                        kap.tie_counts_reference(s, rows, cols, pooled=pooled))


def test_kernel_takes_float32_only():
    s, t = tied_data(n=20, l=4)
    rows, cols = positives(t)
    with pytest.raises(TypeError, match="float32"):
        kap.tie_counts(s.astype(np.float64), rows, cols)
    with pytest.raises(TypeError, match="float32"):
        kap.ap_per_label(torch.from_numpy(s), rows, cols)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_are_rounded_to_float32(dtype):
    """The metrics accept any float dtype; the kernel sees it rounded to float32 and equals the reference there."""
    s, t = model_data(n=400)
    x = torch.from_numpy(s).to(dtype)
    inputs = eval_inputs(x, t)
    assert inputs.scores.dtype == np.float32
    s32 = x.float().numpy()
    rows, cols = positives(t)
    for average, pooled in (("none", False), ("micro", True)):
        ref = kap.ap_per_label_reference(s32, rows, cols, pooled=pooled)
        got = average_precision(x, t, average=average)
        assert np.allclose(np.asarray(got, dtype=np.float64).reshape(-1), ref, rtol=1e-6, equal_nan=True)
    if dtype == torch.float64:
        x = x.numpy()  # numpy float64 takes the same path
        assert np.array_equal(eval_inputs(x, t).scores, s32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_binned_counts_equal_reference(dtype):
    s, t = model_data(n=300)
    s[:5] = -0.25  # below the grid: the first bin
    s[5:10] = 1.0  # the top edge: the last bin
    x, y = torch.from_numpy(s).to(dtype), torch.from_numpy(t)
    for num_bins in (2, 10, 1000):
        for a, b in zip(kap.binned_counts(x, y, num_bins), kap.binned_counts_reference(x, y, num_bins)):
            assert a.dtype == b.dtype == torch.int64 and torch.equal(a, b)


def test_binned_ap_equals_reference_ap_of_binned_scores():
    s, t = model_data(n=800)
    rows, cols = positives(t)
    for bins in (10, 100):
        q = np.minimum(np.floor(s * bins), bins - 1).astype(np.float32)
        got = binned_average_precision(s, t, num_bins=bins, average="none").numpy()
        assert np.allclose(got, kap.ap_per_label_reference(q, rows, cols), atol=1e-6, equal_nan=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_binned_counts_on_the_gpu_equal_reference():
    s, t = model_data(n=300)
    x, y = torch.from_numpy(s).cuda(), torch.from_numpy(t).cuda()
    pos, all_ = kap.binned_counts(x, y, 100)
    assert pos.is_cuda
    ref_pos, ref_all = kap.binned_counts_reference(x, y, 100)
    assert torch.equal(pos.cpu(), ref_pos) and torch.equal(all_.cpu(), ref_all)


def test_positives_in_any_order():
    s, t = lookup_data()
    rows, cols = positives(t)
    shuffle = np.random.default_rng(0).permutation(rows.size)
    for pooled in (False, True):
        assert_counts_equal(kap.tie_counts(s, rows[shuffle], cols[shuffle], pooled=pooled),
                            kap.tie_counts(s, rows, cols, pooled=pooled))


# ---------------------------------------------------------------------------------------
# The torch engine (xmlc.kernels.ap_torch): the same counts on any device


def _torch_args(s, t, device="cpu"):
    rows, cols = positives(t)
    return (torch.from_numpy(s).to(device), torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device))


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_counts_equal_the_host_engine(monkeypatch, case, pooled):
    """Every count, label and score equal, in the same order; small row blocks as well as one."""
    import xmlc.kernels.ap_torch as kat
    s, t = CASES[case]()
    want = kap.tie_counts(s, *positives(t), pooled=pooled)
    for block in (1 << 20, 97):
        monkeypatch.setattr(kat, "_block_entries", lambda device, block=block: block)
        got = kat.tie_counts_torch(*_torch_args(s, t), pooled=pooled)
        assert_counts_equal(tuple(x.numpy() for x in got), want)


@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_ap_equals_sklearn(case):
    from xmlc.kernels.ap_torch import ap_per_label_torch
    s, t = CASES[case]()
    np.testing.assert_allclose(ap_per_label_torch(*_torch_args(s, t)).numpy(), sk_per_label(s, t), rtol=1e-12)
    micro = average_precision_score(t.ravel(), s.ravel())
    assert ap_per_label_torch(*_torch_args(s, t), pooled=True).item() == pytest.approx(micro, rel=1e-12)


def test_torch_kth_largest_and_topk():
    from xmlc.kernels.ap_torch import kth_largest_torch, topk_torch
    s, t = tied_data(n=50, l=9, levels=5)
    k = torch.tensor([0, 1, 2, 5, 50, 3, 0, 7, 1])
    got = kth_largest_torch(torch.from_numpy(s), k).numpy()
    want = [np.sort(s[:, j])[::-1][k[j] - 1] if k[j] else np.nan for j in range(9)]
    np.testing.assert_array_equal(got, want)
    idx, hit = topk_torch(*_torch_args(s, t), 3)
    np.testing.assert_array_equal(idx.numpy(), torch.topk(torch.from_numpy(s), 3, dim=1).indices.numpy())
    np.testing.assert_array_equal(hit.numpy(), np.take_along_axis(t, idx.numpy(), 1) > 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_counts_on_cuda_equal_the_host_engine(case, pooled):
    from xmlc.kernels.ap_torch import tie_counts_torch
    s, t = CASES[case]()
    got = tie_counts_torch(*_torch_args(s, t, "cuda"), pooled=pooled)
    assert got.pos_ge.is_cuda
    assert_counts_equal(tuple(x.cpu().numpy() for x in got), kap.tie_counts(s, *positives(t), pooled=pooled))
