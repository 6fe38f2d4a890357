"""The Example sections of the library's docstrings run and print what they show."""

import doctest

import pytest

from xmlc.kernels import keys as _keys
from xmlc import losses, optim, stats
from xmlc.eval import streaming
from xmlc.eval import calibrate
from xmlc.eval import metrics
from xmlc.train import monitor


@pytest.mark.parametrize("module", [metrics, streaming, calibrate, stats, losses, _keys, monitor, optim], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
