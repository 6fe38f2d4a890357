"""Tests for xmlc.stats: every input type, streaming vs whole, weights against the formulas."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xmlc.data import make_loader, synthetic, write_xmc
from xmlc.stats import (
    BUCKET_NAMES,
    class_balanced_weights,
    label_and_example_counts,
    frequency_buckets,
    label_counts,
    label_report,
    pos_weight,
    pos_weight_from_counts,
    propensity,
)


@pytest.fixture(scope="module")
def data():
    return synthetic(500, 60, 80, 4.0, seed=0, max_freq=0.3)


@pytest.fixture(scope="module")
def reference(data):
    dense = data.labels.toarray()
    return dense.sum(0).astype(np.int64), dense


def as_lists(Y):
    return [Y.indices[a:b].tolist() for a, b in zip(Y.indptr[:-1], Y.indptr[1:])]


def input_variants(data, dense):
    Y = data.labels
    L = data.num_labels
    chunks = [Y[i : i + 64] for i in range(0, Y.shape[0], 64)]
    return {
        "csr": Y,
        "csc": Y.tocsc(),
        "coo": Y.tocoo(),
        "csr_array": sp.csr_array(Y),
        "lil": Y.tolil(),
        "numpy_float": dense,
        "numpy_bool": dense.astype(bool),
        "numpy_int": dense.astype(np.int64),
        "torch_dense": torch.from_numpy(dense),
        "torch_bool": torch.from_numpy(dense).bool(),
        "torch_sparse_coo": torch.from_numpy(dense).to_sparse(),
        "torch_sparse_csr": torch.from_numpy(dense).to_sparse_csr(),
        "label_lists": as_lists(Y),
        "label_arrays": [np.asarray(x, dtype=np.int64) for x in as_lists(Y)],
        "xmc_data": data,
        "loader_batches": make_loader(data, 64, shuffle=True, seed=0),
        "xy_tuples": [(None, torch.from_numpy(c.toarray())) for c in chunks],
        "csr_chunks_generator": (c for c in chunks),
        "numpy_chunks": [c.toarray() for c in chunks],
        "dict_batches": [{"targets": torch.from_numpy(c.toarray())} for c in chunks],
    }


def test_every_input_type_gives_the_same_counts(data, reference):
    expected, dense = reference
    for name, labels in input_variants(data, dense).items():
        counts, n = label_and_example_counts(labels, num_labels=data.num_labels)
        assert counts.dtype == np.int64, name
        np.testing.assert_array_equal(counts, expected, err_msg=name)
        assert n == len(data), name


def test_label_counts_without_num_labels(data, reference):
    expected, dense = reference
    np.testing.assert_array_equal(label_counts(data.labels), expected)
    np.testing.assert_array_equal(label_counts(torch.from_numpy(dense)), expected)
    lists = [[0, 2], [2], []]
    np.testing.assert_array_equal(label_counts(lists), [1, 0, 2])
    np.testing.assert_array_equal(label_counts(lists, num_labels=5), [1, 0, 2, 0, 0])


def test_streaming_equals_whole_for_weights(data):
    whole = pos_weight(data.labels)
    streamed = pos_weight(make_loader(data, 37, shuffle=False))
    torch.testing.assert_close(whole, streamed, rtol=0, atol=0)


def test_duplicates_and_explicit_zeros():
    coo = sp.coo_matrix((np.ones(3), ([0, 1, 1], [0, 1, 2])), shape=(2, 3))
    np.testing.assert_array_equal(label_counts(coo), [1, 1, 1])
    csr = sp.csr_matrix((np.array([1.0, 0.0, 1.0]), np.array([0, 1, 2]), np.array([0, 2, 3])), shape=(2, 3))
    np.testing.assert_array_equal(label_counts(csr), [1, 0, 1])
    np.testing.assert_array_equal(label_counts(csr.tocsc()), [1, 0, 1])
    np.testing.assert_array_equal(label_counts([[1, 1, 0]]), [1, 1])  # a repeated label counts once


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="0/1"):
        label_counts(sp.csr_matrix(np.array([[2.0, 0.0]])))
    with pytest.raises(ValueError, match="0/1"):
        label_counts(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="num_labels=4"):
        label_counts(sp.eye(3, format="csr"), num_labels=4)
    with pytest.raises(ValueError, match="num_labels=2"):
        label_counts([[0, 2]], num_labels=2)
    with pytest.raises(ValueError, match="negative"):
        label_counts([[0, -1]])
    with pytest.raises(ValueError, match="2-D"):
        label_counts(np.ones(3))
    with pytest.raises(TypeError, match="unsupported"):
        label_counts(3.0)
    with pytest.raises(TypeError, match="labels"):
        label_counts([("x", "y")])


def test_pos_weight_is_neg_over_pos(data, reference):
    expected, _ = reference
    n = len(data)
    w = pos_weight(data.labels, zero_positive="error")
    assert w.dtype == torch.float32 and w.shape == (data.num_labels,)
    ref = (n - expected) / expected
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-6)
    np.testing.assert_allclose(pos_weight(data.labels, power=0.5).numpy(), np.sqrt(ref), rtol=1e-6)
    np.testing.assert_allclose(pos_weight(data.labels, max_value=10.0).numpy(), np.minimum(ref, 10.0), rtol=1e-6)
    # Matches what torch users compute by hand on the dense matrix.
    dense = torch.from_numpy(data.labels.toarray())
    torch.testing.assert_close(w, (dense.shape[0] - dense.sum(0)) / dense.sum(0))


@pytest.mark.parametrize("policy,fill", [("max", 9.0), ("one", 1.0), ("zero", 0.0)])
def test_zero_positive_policies(policy, fill):
    counts = np.array([1, 5, 0, 10])
    w = pos_weight_from_counts(counts, 10, zero_positive=policy)
    np.testing.assert_allclose(w.numpy(), [9.0, 1.0, fill, 0.0])
    assert torch.isfinite(w).all()


def test_zero_positive_error_and_edge_cases():
    with pytest.raises(ValueError, match=r"1 label\(s\) have no positive examples \(first: \[2\]\)"):
        pos_weight_from_counts([1, 5, 0], 10, zero_positive="error")
    with pytest.raises(ValueError, match="zero_positive"):
        pos_weight_from_counts([1], 10, zero_positive="inf")
    np.testing.assert_array_equal(pos_weight_from_counts([0, 0], 10).numpy(), [1.0, 1.0])  # no finite weight
    np.testing.assert_allclose(pos_weight_from_counts([0, 2], 10, max_value=3.0).numpy(), [3.0, 3.0])
    with pytest.raises(ValueError, match="power"):
        pos_weight_from_counts([1], 10, power=-1)
    with pytest.raises(ValueError, match="max_value"):
        pos_weight_from_counts([1], 10, max_value=0)
    with pytest.raises(ValueError, match="num_examples"):
        pos_weight_from_counts([11], 10)
    with pytest.raises(ValueError, match="counts"):
        pos_weight_from_counts([-1], 10)


def test_class_balanced_weights_formula():
    counts = np.array([1, 10, 100, 1000])
    beta = 0.99
    raw = (1 - beta) / (1 - beta ** counts.astype(np.float64))
    w = class_balanced_weights(counts, beta=beta)
    assert w.dtype == torch.float32
    np.testing.assert_allclose(w.numpy(), raw / raw.mean(), rtol=1e-6)
    assert math.isclose(float(w.mean()), 1.0, rel_tol=1e-6)
    np.testing.assert_array_equal(class_balanced_weights(counts, beta=0.0).numpy(), np.ones(4))
    w0 = class_balanced_weights([0, 1, 4], beta=0.5)
    raw = np.array([1.0, 0.5 / 0.5, 0.5 / (1 - 0.5**4)])
    raw[0] = raw[1:].max()
    np.testing.assert_allclose(w0.numpy(), raw / raw.mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="beta"):
        class_balanced_weights(counts, beta=1.0)


def test_propensity_formula():
    counts = np.array([0, 1, 10, 1000])
    n, A, B = 5000, 0.55, 1.5
    C = (math.log(n) - 1) * (B + 1) ** A
    ref = 1 / (1 + C * np.exp(-A * np.log(counts + B)))
    p = propensity(counts, n)
    np.testing.assert_allclose(p.numpy(), ref, rtol=1e-6)
    assert p.dtype == torch.float32 and torch.all(torch.diff(p) > 0)
    np.testing.assert_allclose(propensity(counts, n, A=0.6, B=2.6).numpy()[1], 1 / (1 + (math.log(n) - 1) * 3.6**0.6 * 3.6**-0.6), rtol=1e-6)


def test_frequency_buckets_equal_mass_rule():
    counts = np.array([100, 50, 50, 20, 10, 10, 5, 5, 1, 0, 0])
    buckets = frequency_buckets(counts)
    assert buckets.dtype == np.int64 and set(buckets.tolist()) <= {0, 1, 2}
    assert BUCKET_NAMES == ("head", "torso", "tail")
    for c in np.unique(counts):  # ties share a bucket
        assert np.unique(buckets[counts == c]).size == 1
    assert buckets[0] == 0 and buckets[-1] == 2 and buckets[-2] == 2
    assert np.all(np.diff(buckets[np.argsort(-counts, kind="stable")]) >= 0)  # monotone in count
    rng = np.random.default_rng(0)
    big = np.floor(1000 * rng.pareto(1.2, 5000)).astype(np.int64)
    b = frequency_buckets(big)
    share = np.array([big[b == k].sum() for k in range(3)]) / big.sum()
    assert np.all(np.abs(share - 1 / 3) < 0.1), share
    np.testing.assert_array_equal(frequency_buckets(counts, boundaries=(50, 5)), [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    np.testing.assert_array_equal(frequency_buckets([0, 0]), [2, 2])


def test_label_report(data):
    report = label_report(data)
    assert report["num_examples"] == len(data) and report["num_labels"] == data.num_labels
    assert report["num_features"] == data.num_features
    assert report["label_nnz"] == data.labels.nnz
    assert sum(b["labels"] for b in report["buckets"].values()) == data.num_labels
    assert report["pos_weight"]["min"] <= report["pos_weight"]["max"]
    json.dumps(report)
    assert label_report([[0], [1, 2], []])["labels_zero_positive"] == 0


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "xmlc.stats", *args], capture_output=True, text=True, timeout=120)


def test_cli_text_json_and_errors(tmp_path, data):
    path = tmp_path / "d.txt.gz"
    write_xmc(path, data.features, data.labels)
    out = run_cli(str(path))
    assert out.returncode == 0, out.stderr
    for needle in ("examples N", "labels per example", "head labels", "tail labels", "pos_weight", "imbalance ratio", "labels with 0 positives"):
        assert needle in out.stdout
    out = run_cli(str(path), "--json")
    report = json.loads(out.stdout)
    assert report["num_examples"] == len(data) and report["label_nnz"] == data.labels.nnz
    out = run_cli("synthetic:default", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["num_labels"] == 500
    bad = tmp_path / "bad.txt"
    bad.write_text("0 1:x\n")
    out = run_cli(str(bad))
    assert out.returncode == 2 and "line 1" in out.stderr
