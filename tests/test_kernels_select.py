"""xmlc.kernels.select: the radix-select top-k mask equals its reference (a stable descending
sort) and a brute-force numpy lexsort, ties broken by flat index, lowest first."""

import numpy as np
import pytest
import torch

from xmlc.kernels.select import RANK_FIRST, top_k_mask, top_k_mask_reference


def brute_force_element_mask(loss, k):
    """First k of (loss descending, flat index ascending)."""
    flat = loss.detach().reshape(-1).numpy()
    order = np.lexsort((np.arange(flat.size), -flat))
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:k]] = True
    return torch.from_numpy(mask.reshape(loss.shape))


def test_ohem_float32_radix_select_matches_brute_force_on_wide_ranges():
    g = torch.Generator().manual_seed(19)
    for scale in (1e-30, 1e-3, 1.0, 1e4, 1e30):
        loss = (torch.rand(13, 17, generator=g) * scale).float()
        loss[0, :5] = 0.0
        loss[1, :3] = loss[2, 3]  # ties inside
        for k in (1, 7, 100, 220):
            mask = top_k_mask(loss, k)
            assert torch.equal(mask.bool(), brute_force_element_mask(loss.double(), k)), (scale, k)


def test_ohem_top_k_with_negative_values_and_signed_zeros():
    loss = torch.tensor([[-1.0, -0.0, 0.0, 2.0], [-3.0, float("-inf"), 0.5, -0.0]])
    for k in range(1, 9):
        mask = top_k_mask(loss, k)
        assert torch.equal(mask.bool(), brute_force_element_mask(loss.double(), k)), k
        torch.testing.assert_close(mask, top_k_mask(loss.double(), k).float())
        assert torch.equal(mask, top_k_mask_reference(loss, k)), k


def test_reference_equals_brute_force():
    g = torch.Generator().manual_seed(3)
    loss = torch.randint(0, 4, (9, 11), generator=g).double()
    for k in range(0, loss.numel() + 2, 7):
        assert torch.equal(top_k_mask_reference(loss, k).bool(), brute_force_element_mask(loss, k)), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("ties", [False, True])
def test_fast_equals_reference(dtype, ties):
    """Every k from none to all on random values (with heavy ties or none), 1-D and 2-D."""
    g = torch.Generator().manual_seed(7)
    for shape in ((5, 13), (64,), (1, 1)):
        if ties:
            values = torch.randint(-3, 3, shape, generator=g).to(dtype)
        else:
            values = (torch.randn(shape, generator=g) * 100).to(dtype)
        n = values.numel()
        for k in sorted({-1, 0, 1, 2, n // 3, n // 2, n - 1, n, n + 5}):
            fast, ref = top_k_mask(values, k), top_k_mask_reference(values, k)
            assert fast.dtype == ref.dtype == dtype and fast.shape == values.shape
            assert torch.equal(fast, ref), (shape, k)


def test_fast_equals_reference_on_a_large_float32_loss():
    """Radix bins crowded near one value: a loss-like tensor of 200,000 entries."""
    g = torch.Generator().manual_seed(11)
    values = torch.nn.functional.softplus(torch.randn(400, 500, generator=g) * 0.01 - 3)
    values[::7, ::3] = values[0, 0]   # many ties at one key
    for k in (1, 999, 50_000, 123_457, 199_999):
        assert torch.equal(top_k_mask(values, k), top_k_mask_reference(values, k)), k


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_rank_first_is_finite_and_ranks_positives_first(dtype):
    """addcmul(loss, y, y, value=RANK_FIRST) stays finite and puts positives above every loss,
    as masked_fill(y > 0, inf) would."""
    g = torch.Generator().manual_seed(5)
    loss = (torch.rand(6, 9, generator=g) * 30).to(dtype)
    y = (torch.rand(6, 9, generator=g) < 0.3).to(dtype)
    y[0, 0] = 1.0
    ranked = torch.addcmul(loss, y, y, value=RANK_FIRST[dtype])
    assert bool(torch.isfinite(ranked).all())
    assert float(ranked[y > 0].min()) > float(loss.max())
    k = int(y.sum())
    assert torch.equal(top_k_mask(ranked, k), y)
