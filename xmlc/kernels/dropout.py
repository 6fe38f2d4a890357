"""Dropout on CPU with a 16-bit random mask: four mask entries per 64-bit random draw.

* Fast: :func:`dropout`. On CPU the mask is :func:`keep_mask`, uniform 16-bit integers
  compared with a threshold, turned into ``{0, 1 / (1 - p)}`` and multiplied in; torch's CPU
  dropout draws its mask with ``bernoulli_``, one draw per entry. Elsewhere (CUDA) it is
  ``F.dropout``'s fused kernel.
* Reference: :func:`keep_mask_reference`, ``torch.rand(shape) >= p``, one float per entry.
  The two draw different random streams, so ``tests/test_kernels_dropout.py`` checks the
  rate, the independence of neighbours and the scaling, not equality.

Used by :class:`xmlc.models.Dropout` and the input dropout of :class:`xmlc.models.SparseLinear`.
Its place is earned by the dropout rows of ``python benchmarks/bench_train.py --cases tricks``
(against ``F.dropout`` and against the reference mask).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["dropout", "keep_mask", "keep_mask_reference"]


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``: each entry zeroed with probability ``p``, the rest scaled by
    ``1 / (1 - p)`` (Srivastava et al., JMLR 2014).

    Args:
        x: any shape, floating point.
        p: drop probability in ``[0, 1)``; on CPU rounded to a multiple of 2^-16 (:func:`keep_mask`).
        training: False (or ``p == 0``) returns ``x`` itself.

    Returns:
        A tensor of the shape and dtype of ``x``.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * keep_mask(x.shape, p).to(x.dtype).mul_(1.0 / (1.0 - p))


def keep_mask(shape, p: float) -> torch.Tensor:
    """A bool CPU tensor of ``shape``, each entry False (dropped) with probability ``p`` rounded
    to a multiple of 2^-16 (at most 7.6e-6 off; at most 1 - 2^-16), independently, drawn from
    torch's global generator: one 64-bit draw gives four uniform 16-bit integers, each compared
    with a threshold.
    """
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, None)   # every 64-bit pattern
    threshold = min(round(p * 65536), 65535) - 32768   # P(uniform int16 >= threshold) = 1 - round(p * 2^16) / 2^16
    return (bits.view(torch.int16)[:n] >= threshold).view(shape)


def keep_mask_reference(shape, p: float) -> torch.Tensor:
    """The plain algorithm of :func:`keep_mask`: ``torch.rand(shape) >= p``, one float per entry."""
    return torch.rand(shape) >= p
