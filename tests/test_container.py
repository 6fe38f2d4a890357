"""Tests for xmlc.data.container: row normalisation, joins and checks on XMCData."""

import numpy as np
import pytest
import scipy.sparse as sp

from conftest import same, small_data
from xmlc.data.container import XMCData, check_labelled, concat_data, normalize_rows
from xmlc.errors import DataFileError


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


def test_concat_data_stacks_rows_and_keeps_names():
    data = small_data()
    data.label_names = [f"l{j}" for j in range(data.num_labels)]
    both = concat_data(data.subset(np.arange(10)), data.subset(np.arange(10, 30)))
    assert len(both) == 30 and both.label_names == data.label_names
    assert same(both.features, data.features[:30]) and same(both.labels, data.labels[:30])
    dense = XMCData(data.features.toarray(), data.labels, data.num_features, data.num_labels)
    joined = concat_data(dense.subset(np.arange(5)), dense.subset(np.arange(5, 9)))
    assert isinstance(joined.features, np.ndarray)
    np.testing.assert_array_equal(joined.features, dense.features[:9])


def test_check_labelled_names_the_empty_split():
    data = small_data()
    assert check_labelled(data, "data.train") is data
    with pytest.raises(DataFileError, match=r"^data.val \(v.txt\) has no examples$"):
        check_labelled(data.subset(np.arange(0)), "data.val (v.txt)")
    unlabelled = XMCData(data.features, sp.csr_matrix(data.labels.shape, dtype=np.float32),
                         data.num_features, data.num_labels)
    with pytest.raises(DataFileError, match="data.test has 300 examples but not one positive label"):
        check_labelled(unlabelled, "data.test")
