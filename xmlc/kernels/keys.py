"""Order-preserving integer keys of float32 values, for sort-free selection and counting.

IEEE 754 floats of one sign order like their bit patterns read as integers: upwards for
``+0.0 <= x``, downwards below zero. :func:`sortable_keys` flips the 31 magnitude bits of the
negative values, so that the int32 keys order exactly like the floats, and equal floats
(``-0.0`` and ``+0.0`` included) get equal keys. Integer keys allow what floats do not: a
radix histogram of their high bits (``xmlc.kernels.select``), and lookup tables over equal
ranges of keys (``xmlc.kernels.ap.tie_counts``). NaN has no place in the order: callers reject it.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["sortable_keys", "floats_from_keys"]


def sortable_keys(x, *, nonnegative: bool | None = None):
    """int32 keys that sort like the float32 values ``x``: ``x[i] < x[j]`` iff ``key[i] < key[j]``.

    Args:
        x: float32 numpy array or torch tensor, any shape (strided views are fine).
        nonnegative: ``True`` when the caller already knows that no value has its sign bit set
            (every value ``>= +0.0``, no ``-0.0``): the keys are then the bit patterns themselves,
            a zero-copy view. ``None`` (default) checks that with one pass; ``False`` skips
            the check.

    Returns:
        int32 array / tensor of the same shape and kind (a view of ``x`` when non-negative).

    Example:
        >>> sortable_keys(np.array([-2.0, -0.0, 0.0, 1.5], dtype=np.float32))
        array([-1073741825,           0,           0,  1069547520], dtype=int32)
    """
    int32 = torch.int32 if isinstance(x, torch.Tensor) else np.int32
    bits = x.view(int32)
    if nonnegative is None:
        size = bits.numel() if isinstance(bits, torch.Tensor) else bits.size
        nonnegative = size == 0 or bool(bits.min() >= 0)
    if nonnegative:
        return bits
    bits = (x + 0.0).view(int32)  # -0.0 + 0.0 = +0.0
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negatives: flip the magnitude bits


def floats_from_keys(keys):
    """The float32 values of int32 keys from :func:`sortable_keys` (``-0.0`` comes back as ``0.0``).

    The key transform is its own inverse (it keeps the sign bit), so this is one line.

    Example:
        >>> floats_from_keys(sortable_keys(np.array([-2.0, 1.5], dtype=np.float32)))
        array([-2. ,  1.5], dtype=float32)
    """
    float32 = torch.float32 if isinstance(keys, torch.Tensor) else np.float32
    return (keys ^ ((keys >> 31) & 0x7FFFFFFF)).view(float32)
