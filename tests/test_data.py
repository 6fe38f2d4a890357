"""Tests for xmlc.data: reader/writer paths and errors, synthetic data, loader, split."""

import gzip
import os
import re

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xmlc.data import (
    SYNTHETIC_PRESETS,
    Batch,
    SparseDataset,
    XMCData,
    make_loader,
    normalize_rows,
    read_xmc,
    stratified_split,
    synthetic,
    synthetic_preset,
    write_xmc,
)

SHARED = "/work/shared/data"


def small_data(seed=0, n=300, d=50, l=40):
    return synthetic(n, d, l, 3.0, seed=seed, max_freq=0.3)


def write_text(tmp_path, text, name="f.txt"):
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(text.encode())
    else:
        path.write_bytes(text.encode())
    return path


def same(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return a.shape == b.shape and (a != b).nnz == 0 and a.dtype == b.dtype


# ---------------------------------------------------------------------------- reading


def test_read_header_format(tmp_path):
    path = write_text(tmp_path, "3 6 4\n0,2 1:0.5 5:2\n 3:1\n3 0:1.25 1:-1e-3\n")
    data = read_xmc(path)
    assert (len(data), data.num_features, data.num_labels) == (3, 6, 4)
    assert data.features.dtype == np.float32 and data.labels.dtype == np.float32
    np.testing.assert_array_equal(
        data.labels.toarray(), [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    )
    expected = np.zeros((3, 6), np.float32)
    expected[0, [1, 5]] = [0.5, 2]
    expected[1, 3] = 1
    expected[2, [0, 1]] = [1.25, -1e-3]
    np.testing.assert_array_equal(data.features.toarray(), expected)


def test_read_without_header_infers_sizes(tmp_path):
    path = write_text(tmp_path, "1,4 2:1 7:3\n0 0:1\n")
    data = read_xmc(path)
    assert (data.num_features, data.num_labels) == (8, 5)
    data = read_xmc(path, num_features=10, num_labels=6)
    assert data.features.shape == (2, 10) and data.labels.shape == (2, 6)


def test_read_gzip_tabs_crlf_trailing_empty_lines(tmp_path):
    path = write_text(tmp_path, "2 3 2\r\n1\t0:1 2:1\r\n 1:2\r\n\r\n\n\n", name="f.txt.gz")
    data = read_xmc(path)
    assert len(data) == 2
    np.testing.assert_array_equal(data.labels.toarray(), [[0, 1], [0, 0]])
    np.testing.assert_array_equal(data.features.toarray(), [[1, 0, 1], [0, 2, 0]])


def test_read_unsorted_indices_are_sorted(tmp_path):
    data = read_xmc(write_text(tmp_path, "3,0 4:1 1:2\n"))
    assert data.labels.indices.tolist() == [0, 3]
    assert data.features.indices.tolist() == [1, 4]
    assert data.features.data.tolist() == [2.0, 1.0]


def test_a_file_of_one_blank_example(tmp_path):   # found by tests/test_fuzz_readers.py (was an IndexError)
    data = read_xmc(write_text(tmp_path, " "))
    assert len(data) == 1 and data.labels.nnz == 0 and data.features.nnz == 0


def test_example_without_labels_or_features(tmp_path):
    data = read_xmc(write_text(tmp_path, "3 2 2\n0 1:1\n \n1\n"))
    assert data.labels.getnnz(axis=1).tolist() == [1, 0, 1]
    assert data.features.getnnz(axis=1).tolist() == [1, 0, 0]


BAD_INPUTS = [
    # (file text, line number in the message, text the message must contain)
    ("2 5 3\n0 1:1\n1 2:x\n", 3, "'x'"),
    ("2 5 3\n0 1:1\n1 2:\n", 3, "'2:'"),
    ("0 1:1\n1 2:1:3\n", 2, "'2:1:3'"),
    ("0 1:1 7\n", 1, "'7'"),
    ("0 1:nan\n", 1, "nan"),
    ("0 1:inf\n", 1, "inf"),
    ("0 1:-inf\n", 1, "inf"),
    ("0 1:1\n1 2:1e40\n", 2, "value 1e+40 is not finite as float32"),     # finite in float64 only
    ("0 1:-3.5e38\n", 1, "value -3.5e+38 is not finite as float32"),
    ("2 5 3\n0 1:1\n3 2:1\n", 3, "label index 3 is out of range [0, 3)"),
    ("2 5 3\n0 1:1\n1 5:1\n", 3, "feature index 5 is out of range [0, 5)"),
    ("0 1:1\n-1 2:1\n", 2, "label index -1.0 is not a non-negative integer"),
    ("0 1.5:1\n", 1, "feature index 1.5 is not a non-negative integer"),
    ("3 5 3\n0 1:1\n1 2:1\n", 4, "header says N=3"),
    ("1 5 3\n0 1:1\n1 2:1\n", 3, "header says N=1"),
    ("0 1:1\n1,1 2:1\n", 2, "duplicate label 1"),
    ("0 1:1\n1 2:1 2:5\n", 2, "duplicate feature index 2"),
    ("0 1:1\n1,,2 2:1\n", 2, "'1,,2'"),
    ("0 1:1\n\n1 2:1\n", 2, "empty line"),
    ("0 1:1,2\n", 1, "','"),
    ("0 1:0x1F\n", 1, "0x1F"),
    ("0 a:1\n", 1, "'a'"),
    ("0 1:1\n1 2:1\x013:1\n", 2, "control byte b'\\x01'"),            # found by tests/test_fuzz_readers.py
    ("0 1:1\n\x00\n", 2, "control byte b'\\x00'"),
]


@pytest.mark.parametrize("text,line,needle", BAD_INPUTS)
def test_bad_input_names_file_line_and_token(tmp_path, text, line, needle):
    path = write_text(tmp_path, text)
    with pytest.raises(ValueError) as err:
        read_xmc(path)
    message = str(err.value)
    assert str(path) in message
    assert f"line {line}:" in message, message
    assert needle in message, message


def test_error_line_numbers_deep_in_a_large_file(tmp_path):
    data = small_data(n=2000)
    path = tmp_path / "big.txt"
    write_xmc(path, data.features, data.labels)
    lines = path.read_bytes().split(b"\n")
    lines[1500] = lines[1500] + b" 3:zz"  # file line 1501 (the header is line 1)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=r"line 1501: .*'zz'"):
        read_xmc(path)


def test_num_labels_argument_conflicting_with_header(tmp_path):
    path = write_text(tmp_path, "1 5 3\n0 1:1\n")
    with pytest.raises(ValueError, match="num_labels"):
        read_xmc(path, num_labels=4)
    path = write_text(tmp_path, "5 1:1\n", name="g.txt")
    with pytest.raises(ValueError, match=r"line 1: label index 5 is out of range \[0, 3\)"):
        read_xmc(path, num_labels=3)


def test_empty_file(tmp_path):
    data = read_xmc(write_text(tmp_path, "0 4 3\n"))   # a header with N=0: zero examples, known sizes
    assert len(data) == 0 and data.labels.shape == (0, 3) and data.features.shape == (0, 4)
    for i, text in enumerate(["", "\n", "\r\n\n"]):    # nothing at all: an error naming the file
        path = write_text(tmp_path, text, name=f"empty{i}.txt")
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: the file is empty"):
            read_xmc(path)
    path = tmp_path / "empty.txt.gz"
    with gzip.open(path, "wb"):
        pass
    with pytest.raises(ValueError, match=r"empty\.txt\.gz: the file is empty"):
        read_xmc(path)


def test_largest_float32_values_are_kept(tmp_path):
    top = float(np.finfo(np.float32).max)
    data = read_xmc(write_text(tmp_path, f"0 0:{top!r} 1:-{top!r} 2:1e-50\n"))
    assert data.features.toarray().tolist() == [[np.float32(top), -np.float32(top), 0.0]]


# ---------------------------------------------------------------------------- writing


@pytest.mark.parametrize("name,header", [("a.txt", True), ("b.txt", False), ("c.txt.gz", True)])
def test_round_trip_identical(tmp_path, name, header):
    data = small_data()
    features = data.features.copy()
    features.data = np.random.default_rng(0).standard_normal(features.nnz).astype(np.float32)
    features.data[::7] = 3.0  # integers are written without ".0"
    labels = data.labels.tolil()
    labels[5, :] = 0  # an example without labels
    labels = labels.tocsr()
    labels.eliminate_zeros()
    features = features.tolil()
    features[7, :] = 0
    features = features.tocsr()
    features.eliminate_zeros()
    write_xmc(tmp_path / name, features, labels, header=header)
    back = read_xmc(tmp_path / name, num_features=data.num_features, num_labels=data.num_labels)
    assert same(back.features, sp.csr_matrix(features, dtype=np.float32))
    assert same(back.labels, sp.csr_matrix(labels, dtype=np.float32))


def test_round_trip_hard_float32_values(tmp_path):
    values = np.random.default_rng(1).standard_normal(20000).astype(np.float32) * np.float32(1e-6)
    values = np.concatenate([values, np.float32([1e-38, 3.4e38, -0.0, 1 / 3, 123456789.0])])
    values[values == 0] = 1.0  # explicit zeros are not stored in CSR
    n = values.size
    features = sp.csr_matrix((values, np.zeros(n, np.int64), np.arange(n + 1)), shape=(n, 1))
    labels = sp.csr_matrix((n, 1), dtype=np.float32)
    write_xmc(tmp_path / "v.txt", features, labels)
    back = read_xmc(tmp_path / "v.txt")
    np.testing.assert_array_equal(back.features.data, features.data)


def test_writer_format_matches_repository_convention(tmp_path):
    features = sp.csr_matrix(np.array([[0, 1.0, 0.5], [2, 0, 0], [0, 0, 0]], np.float32))
    labels = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], np.float32))
    write_xmc(tmp_path / "w.txt", features, labels)
    assert (tmp_path / "w.txt").read_text() == "3 3 3\n0,2 1:1 2:0.5\n 0:2\n1\n"


def test_writer_rejects_non_binary_labels(tmp_path):
    with pytest.raises(ValueError, match="0/1"):
        write_xmc(tmp_path / "x.txt", sp.eye(2), 2 * sp.eye(2))


@pytest.mark.skipif(not os.path.exists(f"{SHARED}/delicious_train.txt.gz"), reason="shared data absent")
def test_real_file_matches_sklearn():
    svm = pytest.importorskip("sklearn.datasets")
    path = f"{SHARED}/delicious_train.txt.gz"
    data = read_xmc(path)
    assert data.features.shape == (12920, 500) and data.labels.shape == (12920, 983)
    assert (data.labels.getnnz(axis=1) == 0).sum() == 10
    with gzip.open(path, "rb") as f:
        f.readline()
        X, y = svm.load_svmlight_file(f, multilabel=True, zero_based=True, n_features=500)
    assert same(data.features, sp.csr_matrix(X, dtype=np.float32))
    rows = [sorted(int(v) for v in labels) for labels in y]
    assert rows == [list(data.labels.indices[a:b]) for a, b in zip(data.labels.indptr[:-1], data.labels.indptr[1:])]


def test_normalize_rows():
    X = sp.csr_matrix(np.array([[3, 4], [0, 0], [-1, 1]], np.float32))
    np.testing.assert_allclose(normalize_rows(X, "l2").toarray(), [[0.6, 0.8], [0, 0], [-(0.5**0.5), 0.5**0.5]], rtol=1e-6)
    np.testing.assert_allclose(normalize_rows(X, "l1").toarray(), [[3 / 7, 4 / 7], [0, 0], [-0.5, 0.5]], rtol=1e-6)
    assert same(normalize_rows(X, "none"), X)
    with pytest.raises(ValueError, match="norm"):
        normalize_rows(X, "max")
    for norm in ("l2", "l1", "none"):   # dense rows (.npy features) get the same scaling as float32 arrays
        dense = normalize_rows(X.toarray().astype(np.float64), norm)
        assert isinstance(dense, np.ndarray) and dense.dtype == np.float32
        np.testing.assert_allclose(dense, normalize_rows(X, norm).toarray(), rtol=1e-6)


# ---------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_well_formed():
    a, b, c = small_data(seed=3), small_data(seed=3), small_data(seed=4)
    assert same(a.features, b.features) and same(a.labels, b.labels)
    assert not same(a.labels, c.labels)
    assert a.labels.has_canonical_format and np.all(a.labels.data == 1)
    assert a.features.dtype == np.float32 and a.labels.dtype == np.float32


def test_synthetic_power_law_and_co_occurrence():
    data = synthetic(4000, 400, 200, 6.0, seed=0, max_freq=0.3)
    counts = np.sort(np.bincount(data.labels.indices, minlength=200))[::-1]
    assert abs(data.labels.nnz / 4000 - 6.0) < 0.6
    assert counts[0] > 10 * counts[-1]  # heavy head, long tail
    # Co-occurrence: label pairs of the same topic co-occur far above independence.
    Y = data.labels.astype(np.float64)
    co = (Y.T @ Y).toarray() / 4000
    p = np.asarray(Y.mean(axis=0)).ravel()
    lift = co / np.maximum(np.outer(p, p), 1e-12)
    np.fill_diagonal(lift, 0)
    assert np.percentile(lift[np.outer(p, p) > 1e-3], 99) > 2.0


def test_synthetic_graded_topics_make_rare_labels_predictable():
    """With topic_precision, a label is positive in ~topic_precision of its topic's examples,
    however rare it is: rare labels of one topic co-occur far above what equally common
    topics allow (lift ~ K / T there), and the marginals stay on the power law."""
    kw = dict(seed=0, max_freq=0.3, label_noise=0.1)
    graded = synthetic(6000, 400, 300, 8.0, topic_precision=0.5, num_topics=30, **kw)
    flat = synthetic(6000, 400, 300, 8.0, **kw)
    for data in (graded, flat):
        assert abs(data.labels.nnz / 6000 - 8.0) < 0.8
    freq = np.bincount(graded.labels.indices, minlength=300) / 6000
    assert freq.max() > 10 * freq.min()

    def best_partner_share(data):
        """Per rare label: the largest P(other label | this label), median over rare labels."""
        Y = data.labels.astype(np.float64)
        n = np.asarray(Y.sum(axis=0)).ravel()
        co = (Y.T @ Y).toarray()
        np.fill_diagonal(co, 0)
        rare = np.flatnonzero((n >= 30) & (n <= np.percentile(n, 30)))
        partner_rare = n <= np.percentile(n, 30)
        return np.median((co[rare][:, partner_rare] / n[rare, None]).max(axis=1))

    # A rare label's best topic mate is positive in about half of its examples when
    # graded; with 2 of 10 equally common topics only in ~5x their ~1% marginal.
    assert best_partner_share(graded) > 0.4
    assert best_partner_share(flat) < 0.25
    with pytest.raises(ValueError, match="topic_precision"):
        synthetic(100, 10, 10, 2.0, topic_precision=1.5)
    one = synthetic(50, 6, 1, 0.5, topic_precision=0.5, max_freq=0.6)  # default K never exceeds L
    assert one.labels.shape == (50, 1) and one.labels.nnz > 0


def test_synthetic_default_preset_size():
    data = synthetic_preset("default")
    params = SYNTHETIC_PRESETS["default"]
    assert data.features.shape == (params["num_examples"], params["num_features"])
    assert data.labels.shape == (params["num_examples"], params["num_labels"])


def test_synthetic_seed_preset_matches_the_scenario():
    data = synthetic_preset("seed")
    assert data.labels.shape == (80_000, 7_900) and data.num_features == 5_000
    assert 120 <= data.labels.nnz / len(data) <= 140
    freq = np.bincount(data.labels.indices, minlength=7_900) / len(data)
    assert 0.005 <= freq.min() <= 0.02 and 0.12 <= freq.max() <= 0.16


def test_synthetic_rejects_impossible_mean():
    with pytest.raises(ValueError, match="mean_labels"):
        synthetic(100, 10, 10, 5.0, max_freq=0.2)
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        synthetic_preset("huge")


# ---------------------------------------------------------------------------- loader


def collect(loader):
    return list(loader)


def test_batches_match_the_data():
    data = small_data()
    batches = collect(make_loader(data, 64, shuffle=True, seed=1, dense_features=True))
    rows = torch.cat([b.row_ids for b in batches]).numpy()
    assert sorted(rows.tolist()) == list(range(len(data)))
    bag = torch.nn.EmbeddingBag(data.num_features, 1, mode="sum")
    torch.nn.init.ones_(bag.weight)
    for b in batches:
        idx = b.row_ids.numpy()
        assert isinstance(b, Batch) and len(b) == idx.size
        np.testing.assert_array_equal(b.targets.numpy(), data.labels[idx].toarray())
        np.testing.assert_array_equal(b.dense.numpy(), data.features[idx].toarray())
        assert b.indices.dtype == torch.int64 and b.offsets.dtype == torch.int64 and b.weights.dtype == torch.float32
        sums = bag(b.indices, b.offsets, per_sample_weights=b.weights).squeeze(1)
        torch.testing.assert_close(sums, b.dense.sum(1))


def test_shuffle_is_deterministic_and_differs_by_epoch_and_seed():
    data = small_data()
    order = lambda loader: torch.cat([b.row_ids for b in loader]).tolist()
    a = make_loader(data, 32, shuffle=True, seed=5)
    b = make_loader(data, 32, shuffle=True, seed=5)
    epoch1_a, epoch2_a = order(a), order(a)
    assert epoch1_a == order(b) and epoch2_a == order(b)
    assert epoch1_a != epoch2_a
    assert order(make_loader(data, 32, shuffle=True, seed=6)) != epoch1_a
    assert order(make_loader(data, 32, shuffle=False)) == list(range(len(data)))


def test_one_csr_slice_per_batch(monkeypatch):
    data = small_data()
    calls = []
    original = SparseDataset.__getitems__

    def spy(self, indices):
        calls.append(len(indices))
        return original(self, indices)

    monkeypatch.setattr(SparseDataset, "__getitems__", spy)
    batches = collect(make_loader(data, 100, shuffle=False, drop_last=True))
    assert calls == [100, 100, 100] and len(batches) == 3


def test_workers_give_the_same_batches():
    data = small_data()
    single = collect(make_loader(data, 50, shuffle=True, seed=2))
    multi = collect(make_loader(data, 50, shuffle=True, seed=2, num_workers=2))
    assert len(single) == len(multi)
    for a, b in zip(single, multi):
        for name in ("indices", "offsets", "weights", "targets", "row_ids"):
            assert torch.equal(getattr(a, name), getattr(b, name))


def test_distributed_sampler_shards():
    data = small_data()
    ranks = []
    for rank in range(2):
        sampler = torch.utils.data.DistributedSampler(SparseDataset(data), num_replicas=2, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(0)
        ranks.append(torch.cat([b.row_ids for b in make_loader(data, 40, shuffle=False, sampler=sampler)]).tolist())
    assert len(ranks[0]) == len(ranks[1]) == len(data) // 2
    assert set(ranks[0]).isdisjoint(ranks[1])


def test_batch_to_and_pin_memory():
    b = next(iter(make_loader(small_data(), 8, shuffle=False)))
    moved = b.to("cpu")
    assert moved.dense is None and torch.equal(moved.targets, b.targets)
    if torch.cuda.is_available():
        pinned = b.pin_memory()
        assert pinned.targets.is_pinned() and pinned.indices.is_pinned()
        loader = make_loader(small_data(), 8, shuffle=False, pin_memory=True, num_workers=1)
        assert next(iter(loader)).targets.is_pinned()
        assert b.to("cuda", non_blocking=True).targets.is_cuda


def test_item_access_and_subset():
    data = small_data()
    ds = SparseDataset(data)
    one = ds[3]
    assert len(one) == 1 and one.row_ids.tolist() == [3]
    sub = data.subset(np.array([4, 2]))
    assert same(sub.labels, data.labels[[4, 2]]) and len(sub) == 2
    with pytest.raises(ValueError, match="rows"):
        XMCData(data.features[:3], data.labels, data.num_features, data.num_labels)


# ---------------------------------------------------------------------------- split


def per_label_deviation(labels, val_idx, fraction):
    counts = np.bincount(labels.indices, minlength=labels.shape[1])
    val_counts = np.bincount(labels[val_idx].indices, minlength=labels.shape[1])
    keep = counts > 0
    return np.abs(val_counts[keep] / counts[keep] - fraction).mean()


def test_stratified_split_keeps_label_proportions_better_than_random():
    data = synthetic(3000, 100, 300, 5.0, seed=1, max_freq=0.2)
    train, val = stratified_split(data.labels, 0.2, seed=0)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert np.array_equal(np.union1d(train, val), np.arange(len(data)))
    assert abs(val.size / len(data) - 0.2) < 0.03
    ours = per_label_deviation(data.labels, val, 0.2)
    rng = np.random.default_rng(0)
    random = np.mean([per_label_deviation(data.labels, np.sort(rng.permutation(3000)[: val.size]), 0.2) for _ in range(5)])
    assert ours < 0.5 * random, (ours, random)


def test_stratified_split_sizes_exact_when_examples_carry_many_labels():
    # ~40 labels per example: the paper's label-wise greedy over-fills the small fold here
    # and ends no closer than random; the example-wise choice keeps sizes exact and is closer
    data = synthetic(2000, 100, 200, 40.0, seed=2, max_freq=0.4)
    train, val = stratified_split(data.labels, 0.1, seed=0)
    assert val.size == 200 and train.size == 1800
    ours = per_label_deviation(data.labels, val, 0.1)
    rng = np.random.default_rng(0)
    random = np.mean([per_label_deviation(data.labels, np.sort(rng.permutation(2000)[:200]), 0.1) for _ in range(5)])
    assert ours < 0.5 * random, (ours, random)


def test_stratified_split_deterministic_and_handles_unlabelled_rows():
    Y = sp.csr_matrix(np.array([[1, 0], [0, 0], [1, 1], [0, 0], [0, 1], [1, 0], [0, 0], [1, 1], [0, 1], [0, 0]], np.float32))
    a = stratified_split(Y, 0.3, seed=1)
    b = stratified_split(Y, 0.3, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert a[0].size + a[1].size == 10 and np.intersect1d(*a).size == 0
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(Y, 1.0)
