"""The Example sections of the library's docstrings run and print what they show."""

import doctest
import importlib

import pytest

MODULES = ["xmlc.eval.inputs", "xmlc.eval.metrics", "xmlc.eval.summary", "xmlc.eval.streaming", "xmlc.eval.calibrate",
           "xmlc.stats", "xmlc.losses", "xmlc.kernels.keys", "xmlc.kernels.ap", "xmlc.train.monitor", "xmlc.optim",
           "xmlc.data.features", "xmlc.recipe"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name == "xmlc.eval.streaming":
        pytest.importorskip("torchmetrics")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
