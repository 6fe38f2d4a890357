"""The Example sections of the library's docstrings run and print what they show."""

import doctest

import pytest

from xmlc import _keys, _streaming, calibrate, losses, metrics, monitor, optim, stats


@pytest.mark.parametrize("module", [metrics, _streaming, calibrate, stats, losses, _keys, monitor, optim], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
