"""xmlc.kernels.dropout: the 16-bit CPU mask against its reference ``torch.rand(shape) >= p``.
The random streams differ, so the tests check what both must satisfy (rate, independence of
neighbours, scaling), not equality."""

import pytest
import torch

from xmlc.kernels.dropout import dropout, keep_mask, keep_mask_reference


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_dropout_zeroes_a_fraction_p_and_scales_the_rest(p):
    """dropout (CPU mask from 16-bit random integers) does what F.dropout does: each entry zeroed
    with probability p, the kept ones (and their gradient) multiplied by exactly 1 / (1 - p)."""
    torch.manual_seed(0)
    x = torch.rand(200, 500) + 0.5
    x.requires_grad_(True)
    y = dropout(x, p)
    kept = y != 0
    assert abs((~kept).float().mean().item() - p) < 0.005   # 100,000 draws: 4 standard deviations
    torch.testing.assert_close(y[kept], x[kept] / (1 - p), rtol=1e-6, atol=0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p), rtol=1e-6, atol=0)
    assert dropout(x, p, training=False) is x and dropout(x, 0.0) is x
    masks = [dropout(torch.ones(1000), p) != 0 for _ in range(2)]
    assert not torch.equal(*masks)                                 # a fresh mask per call


def _rate_and_neighbours(mask, p):
    flat = mask.flatten().float()
    sd = (p * (1 - p) / flat.numel()) ** 0.5
    assert abs(1 - flat.mean().item() - p) < 5 * sd
    for shift in (1, 2, 3, 4):
        both = (flat[:-shift] * flat[shift:]).mean().item()
        assert abs(both - (1 - p) ** 2) < 5 * sd, shift


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_keep_mask_rate_shape_and_independent_neighbours(p):
    """Four entries share one 64-bit draw: each is still False with probability p, and entries
    next to each other (in one draw or across two) are independent: P(both kept) = (1 - p)^2."""
    torch.manual_seed(0)
    mask = keep_mask((1001, 999), p)   # 999,999 entries: not a multiple of 4
    assert mask.shape == (1001, 999) and mask.dtype == torch.bool
    _rate_and_neighbours(mask, p)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_agrees_with_reference_in_distribution(p):
    """Fast and reference masks: same shape and dtype, the same rate and independence (each
    checked against p at 5 sd), and their kept fractions within 5 sd of each other."""
    torch.manual_seed(1)
    fast, ref = keep_mask((999, 1001), p), keep_mask_reference((999, 1001), p)
    assert fast.shape == ref.shape and fast.dtype == ref.dtype == torch.bool
    _rate_and_neighbours(ref, p)
    _rate_and_neighbours(fast, p)
    sd = (2 * p * (1 - p) / fast.numel()) ** 0.5
    assert abs(fast.float().mean().item() - ref.float().mean().item()) < 5 * sd


def test_keep_mask_rounds_p_to_sixteen_bits():
    torch.manual_seed(0)
    assert bool(keep_mask((4_000,), 1e-7).all())          # rounds to 0: nothing dropped
    kept = int(keep_mask((4_000_000,), 1 - 1e-9).sum())   # rounds to 1 - 2^-16: ~61 of 4M kept
    assert 20 < kept < 120


def test_keep_mask_draws_from_the_global_generator():
    """Seeded like the rest of training: the same seed gives the same mask."""
    torch.manual_seed(5)
    a = keep_mask((37, 3), 0.4)
    torch.manual_seed(5)
    assert torch.equal(a, keep_mask((37, 3), 0.4))
