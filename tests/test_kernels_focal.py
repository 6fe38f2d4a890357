"""xmlc.kernels.focal: the closed-form focal / asymmetric kernel equals its reference (the
published formulas under autograd) in value and gradient, for every reduction, weighting and
dtype; gradcheck in float64; the no-grad path equals the grad path bit for bit."""

import pytest
import torch
from torch.autograd import gradcheck

from xmlc.kernels.focal import compute_dtype, focal, focal_reference

N, L = 7, 9

# (gamma_pos, gamma_neg, clip, alpha): focal (one gamma, no shift) and asymmetric variants.
# The reference's gradient of p_m ** gamma is NaN at p_m = 0 for gamma < 1: with clip > 0
# only gamma_neg >= 1 (or 0) is compared against it.
CASES = [
    (0.0, 0.0, 0.0, None), (2.0, 2.0, 0.0, None), (2.0, 2.0, 0.0, 0.25), (0.5, 0.5, 0.0, 0.75),
    (3.7, 3.7, 0.0, None), (1.0, 1.0, 0.0, 0.5),
    (0.0, 4.0, 0.05, None), (1.0, 4.0, 0.05, None), (0.0, 2.0, 0.0, None), (0.5, 1.0, 0.2, None),
    (2.0, 1.5, 0.3, None), (0.0, 0.0, 0.1, None),
]


def _data(seed=0, dtype=torch.float64, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(N, L, generator=g, dtype=torch.float64) * scale).to(dtype)
    y = (torch.rand(N, L, generator=g) < 0.4).to(dtype)
    y[0, 0], y[0, 1] = 1, 0
    pw = torch.rand(L, generator=g, dtype=torch.float64).to(dtype) * 5 + 0.1
    w_label = torch.rand(L, generator=g, dtype=torch.float64).to(dtype) + 0.5
    w_elem = torch.rand(N, L, generator=g, dtype=torch.float64).to(dtype) + 0.5
    return x, y, pw, w_label, w_elem


def _value_and_grad(fn, x, y, **kw):
    xi = x.clone().requires_grad_(True)
    out = fn(xi, y, **kw)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    out.backward(g)
    return out.detach(), xi.grad


@pytest.mark.parametrize("gamma_pos,gamma_neg,clip,alpha", CASES)
@pytest.mark.parametrize("weights", ["none", "pos_weight", "label", "element", "all"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_fast_equals_reference_value_and_gradient(gamma_pos, gamma_neg, clip, alpha, weights, reduction):
    x, y, pw, w_label, w_elem = _data(seed=2)
    kw = dict(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, alpha=alpha, reduction=reduction,
              pos_weight=pw if weights in ("pos_weight", "all") else None,
              weight={"label": w_label, "element": w_elem, "all": w_elem}.get(weights))
    out, grad = _value_and_grad(focal, x, y, **kw)
    ref, ref_grad = _value_and_grad(focal_reference, x, y, **kw)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("gamma_pos,gamma_neg,clip,alpha", CASES[:8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fast_equals_reference_in_low_precision(gamma_pos, gamma_neg, clip, alpha, dtype):
    """Half inputs compute in float32 and return float32; the gradient has the logits' dtype."""
    x, y, pw, _, w_elem = _data(seed=3, dtype=dtype, scale=2.0)
    kw = dict(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, alpha=alpha, reduction="none",
              pos_weight=pw, weight=w_elem)
    out, grad = _value_and_grad(focal, x, y, **kw)
    ref, ref_grad = _value_and_grad(focal_reference, x, y, **kw)
    assert out.dtype == compute_dtype(x) == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else {}
    torch.testing.assert_close(grad, ref_grad.to(dtype), **tol)


@pytest.mark.parametrize("gamma_pos,gamma_neg,clip,alpha", CASES + [(0.0, 0.5, 0.2, None)])
def test_gradcheck_float64(gamma_pos, gamma_neg, clip, alpha):
    x, y, pw, _, w_elem = _data(seed=4, scale=2.0)
    fn = lambda a: focal(a, y, gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, alpha=alpha,  # noqa: E731
                         pos_weight=pw, weight=w_elem, reduction="sum")
    assert gradcheck(fn, (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("gamma_pos,gamma_neg,clip,alpha", CASES)
def test_no_grad_path_equals_grad_path_bitwise(gamma_pos, gamma_neg, clip, alpha):
    x, y, pw, w_label, _ = _data(seed=5, dtype=torch.float32)
    kw = dict(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, alpha=alpha, pos_weight=pw, weight=w_label,
              reduction="none")
    with_grad = focal(x.clone().requires_grad_(True), y, **kw)
    with torch.no_grad():
        without = focal(x.clone().requires_grad_(True), y, **kw)
    assert without.grad_fn is None and torch.equal(with_grad.detach(), without)


def test_fast_stays_finite_where_the_reference_does_not():
    """gamma < 1 at p_t = 1 and logits of +-1e4: the reference's gradient is NaN, the kernel's finite."""
    x = torch.tensor([[1e4, -1e4, 40.0, -40.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    for gamma_pos, gamma_neg, clip in ((0.5, 0.5, 0.0), (0.5, 0.5, 0.1)):
        kw = dict(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, alpha=None, pos_weight=None, weight=None,
                  reduction="sum")
        out, grad = _value_and_grad(focal, x, y, **kw)
        _, ref_grad = _value_and_grad(focal_reference, x, y, **kw)
        assert bool(torch.isfinite(out).all() and torch.isfinite(grad).all())
        assert not bool(torch.isfinite(ref_grad).all())
