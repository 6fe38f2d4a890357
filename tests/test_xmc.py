"""Tests for xmlc.data.xmc: the XMC text reader (paths, errors naming file, line and token) and writer."""

import gzip
import os
import re

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import same, small_data
from xmlc.data.xmc import read_xmc, write_xmc

SHARED = "/work/shared/data"


def write_text(tmp_path, text, name="f.txt"):
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(text.encode())
    else:
        path.write_bytes(text.encode())
    return path



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
