"""Tests for xmlc.losses against independent references (the published formulas written out
here in float64, PyTorch's BCE, brute-force top-k) plus numerics and argument checks."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from xmlc.config import LossConfig
from xmlc.losses import (
    LOSSES,
    AsymmetricLoss,
    BCEWithLogits,
    FocalLoss,
    OHEMLoss,
    asymmetric_loss,
    bce_with_logits,
    build_loss,
    focal_loss,
    ohem,
)

N, L = 6, 7


def _data(seed=0, n=N, l=L, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, l, generator=g, dtype=torch.float64) * scale).to(dtype)
    y = (torch.rand(n, l, generator=g) < 0.4).to(dtype)
    pw = torch.rand(l, generator=g, dtype=torch.float64).to(dtype) * 5 + 0.1
    w = torch.rand(l, generator=g, dtype=torch.float64).to(dtype) + 0.5
    return x, y, pw, w


# ----------------------------------------------------------------- independent references


def ref_focal(x, y, gamma, alpha=None, pos_weight=None, weight=None):
    """Lin et al. 2017, eq. 5, written the textbook way: -alpha_t (1 - p_t)^gamma log p_t."""
    p = 1.0 / (1.0 + torch.exp(-x))
    p_t = torch.where(y == 1, p, 1 - p)
    alpha_t = torch.ones_like(x) if alpha is None else torch.where(y == 1, alpha, 1 - alpha)
    loss = -alpha_t * (1 - p_t) ** gamma * torch.log(p_t)
    if pos_weight is not None:
        loss = loss * torch.where(y == 1, pos_weight.expand_as(x), torch.ones_like(x))
    if weight is not None:
        loss = loss * weight
    return loss


def ref_asl(x, y, gamma_pos, gamma_neg, clip, pos_weight=None, weight=None):
    """Ridnik et al. 2021, eq. 4 with the shifted probability p_m = max(p - m, 0)."""
    p = 1.0 / (1.0 + torch.exp(-x))
    p_m = torch.clamp(p - clip, min=0.0)
    l_pos = -((1 - p) ** gamma_pos) * torch.log(p)
    l_neg = -(p_m**gamma_neg) * torch.log(1 - p_m)
    if pos_weight is not None:
        l_pos = l_pos * pos_weight
    loss = y * l_pos + (1 - y) * l_neg
    return loss if weight is None else loss * weight


def brute_force_element_mask(loss, k):
    """First k of (loss descending, flat index ascending)."""
    flat = loss.detach().reshape(-1).numpy()
    order = np.lexsort((np.arange(flat.size), -flat))
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:k]] = True
    return torch.from_numpy(mask.reshape(loss.shape))


def _selected(fn, loss):
    """Elements that receive gradient from an OHEM call."""
    loss = loss.detach().clone().requires_grad_(True)
    out = fn(loss)
    out.backward()
    return loss.grad != 0, out


# ----------------------------------------------------------------- focal


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.7])
@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_matches_published_formula_value_and_gradient(gamma, alpha, weighted):
    x, y, pw, w = _data(seed=1)
    kw = dict(pos_weight=pw, weight=w) if weighted else {}
    xr = x.clone().requires_grad_(True)
    ref = ref_focal(xr, y, gamma, alpha, **kw)
    xo = x.clone().requires_grad_(True)
    out = focal_loss(xo, y, gamma=gamma, alpha=alpha, reduction="none", **kw)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-12)
    g = torch.randn_like(x)
    ref.backward(g)
    out.backward(g)
    torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-6, atol=1e-12)


def test_focal_gamma0_equals_bce_value_and_gradient():
    x, y, pw, w = _data(seed=2)
    for kw in ({}, {"pos_weight": pw}, {"weight": w}, {"pos_weight": pw, "weight": w}):
        for reduction in ("none", "mean", "sum"):
            xa = x.clone().requires_grad_(True)
            xb = x.clone().requires_grad_(True)
            a = focal_loss(xa, y, gamma=0.0, alpha=None, reduction=reduction, **kw)
            b = F.binary_cross_entropy_with_logits(xb, y, reduction=reduction, **kw)
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
            g = torch.ones_like(a) if reduction == "none" else torch.tensor(1.0, dtype=a.dtype)
            a.backward(g)
            b.backward(g)
            torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-12, atol=1e-14)


def test_focal_alpha_weights_positive_and_negative_sides():
    x, y, _, _ = _data(seed=3)
    base = focal_loss(x, y, gamma=2.0, reduction="none")
    a = focal_loss(x, y, gamma=2.0, alpha=0.25, reduction="none")
    torch.testing.assert_close(a, torch.where(y == 1, 0.25 * base, 0.75 * base))


def test_reductions_agree():
    x, y, pw, w = _data(seed=4)
    for fn in (focal_loss, asymmetric_loss, bce_with_logits):
        none = fn(x, y, pos_weight=pw, weight=w, reduction="none")
        assert none.shape == (N, L)
        torch.testing.assert_close(fn(x, y, pos_weight=pw, weight=w, reduction="sum"), none.sum())
        torch.testing.assert_close(fn(x, y, pos_weight=pw, weight=w, reduction="mean"), none.mean())


def test_no_grad_path_equals_grad_path():
    x, y, pw, _ = _data(seed=5)
    with torch.no_grad():
        a = focal_loss(x, y, gamma=1.5, pos_weight=pw)
        c = asymmetric_loss(x, y, gamma_pos=1.0)
    assert torch.equal(a, focal_loss(x.clone().requires_grad_(True), y, gamma=1.5, pos_weight=pw).detach())
    assert torch.equal(c, asymmetric_loss(x.clone().requires_grad_(True), y, gamma_pos=1.0).detach())


# ----------------------------------------------------------------- asymmetric


@pytest.mark.parametrize(
    "gamma_pos,gamma_neg,clip", [(0.0, 4.0, 0.05), (1.0, 4.0, 0.05), (0.5, 0.5, 0.2), (0.0, 0.0, 0.1), (2.0, 1.0, 0.0), (0.0, 1.0, 0.1), (3.7, 2.5, 0.05)]
)
def test_asymmetric_matches_paper_formula_value_and_gradient(gamma_pos, gamma_neg, clip):
    x, y, pw, w = _data(seed=6)
    xr = x.clone().requires_grad_(True)
    ref = ref_asl(xr, y, gamma_pos, gamma_neg, clip, pos_weight=pw, weight=w)
    xo = x.clone().requires_grad_(True)
    out = asymmetric_loss(
        xo, y, gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, pos_weight=pw, weight=w, reduction="none"
    )
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-12)
    g = torch.randn_like(x)
    ref.backward(g)
    out.backward(g)
    torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-6, atol=1e-12)


def test_asymmetric_without_shift_equals_focal():
    x, y, _, _ = _data(seed=7)
    torch.testing.assert_close(
        asymmetric_loss(x, y, gamma_pos=2.0, gamma_neg=2.0, clip=0.0), focal_loss(x, y, gamma=2.0)
    )


def test_asymmetric_easy_negatives_below_clip_have_zero_loss_and_gradient():
    x = torch.tensor([[-5.0, -3.0, 4.0]], dtype=torch.float64, requires_grad=True)  # p = .007, .047, .98
    y = torch.zeros(1, 3, dtype=torch.float64)
    out = asymmetric_loss(x, y, clip=0.05, reduction="none")
    out.sum().backward()
    assert out[0, 0] == 0 and out[0, 1] == 0 and out[0, 2] > 0
    assert x.grad[0, 0] == 0 and x.grad[0, 1] == 0 and x.grad[0, 2] > 0


def test_asymmetric_does_not_touch_grad_mode():
    x, y, _, _ = _data(seed=8)
    x.requires_grad_(True)
    out = asymmetric_loss(x, y, gamma_pos=1.0)
    assert torch.is_grad_enabled() and out.requires_grad


# ----------------------------------------------------------------- gradcheck


def _gradcheck_cases():
    x, y, pw, w = _data(seed=9, n=4, l=5)
    wn = torch.rand(4, 5, dtype=torch.float64) + 0.5
    return y, [
        ("bce", lambda a: bce_with_logits(a, y, pos_weight=pw, weight=w)),
        ("focal", lambda a: focal_loss(a, y, gamma=2.0, alpha=0.25, pos_weight=pw, weight=w)),
        ("focal_g0.5_none", lambda a: focal_loss(a, y, gamma=0.5, reduction="none")),
        ("asl", lambda a: asymmetric_loss(a, y, pos_weight=pw, weight=wn, reduction="sum")),
        ("asl_g0.5", lambda a: asymmetric_loss(a, y, gamma_pos=0.5, gamma_neg=0.5, clip=0.2)),
        ("ohem_element", lambda a: ohem(focal_loss(a, y, reduction="none"), y, keep_ratio=0.3)),
        (
            "ohem_element_pos",
            lambda a: ohem(asymmetric_loss(a, y, reduction="none"), y, keep_ratio=0.3, keep_positives=True),
        ),
        ("ohem_example", lambda a: ohem(bce_with_logits(a, y, reduction="none"), y, keep_ratio=0.5, mode="example")),
        (
            "ohem_example_pos",
            lambda a: ohem(focal_loss(a, y, reduction="none"), y, keep_ratio=0.5, mode="example", keep_positives=True),
        ),
    ], x


def test_gradcheck_float64_every_loss():
    _, cases, x = _gradcheck_cases()
    for name, fn in cases:
        xi = x.clone().requires_grad_(True)
        assert gradcheck(fn, (xi,), eps=1e-6, atol=1e-7, rtol=1e-5), name


# ----------------------------------------------------------------- OHEM


def test_ohem_keep_ratio_one_equals_base_loss_exactly():
    x, y, pw, _ = _data(seed=10)
    base = focal_loss(x, y, pos_weight=pw, reduction="none")
    for mode in ("element", "example"):
        for keep_positives in (False, True):
            out = ohem(base, y, keep_ratio=1.0, mode=mode, keep_positives=keep_positives)
            assert torch.equal(out, focal_loss(x, y, pos_weight=pw, reduction="mean"))
    module = OHEMLoss(FocalLoss(reduction="none"), 1.0)
    assert torch.equal(module(x, y), FocalLoss()(x, y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # radix select / kthvalue
@pytest.mark.parametrize("keep_ratio", [0.01, 0.1, 0.25, 0.5, 0.9])
def test_ohem_element_selects_brute_force_top_k_with_ties(keep_ratio, dtype):
    g = torch.Generator().manual_seed(11)
    loss = torch.randint(0, 4, (9, 11), generator=g).to(dtype)  # heavy ties
    y = torch.zeros_like(loss)
    k = math.ceil(keep_ratio * loss.numel())
    sel, out = _selected(lambda t: ohem(t, y, keep_ratio=keep_ratio), loss)
    expect = brute_force_element_mask(loss.double(), k)
    # An element of loss 0 gets gradient too (1/k), so compare masks via the gradient pattern.
    assert torch.equal(sel, expect)
    torch.testing.assert_close(out, loss[expect].sum() / k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("keep_ratio", [0.05, 0.3, 0.6])
def test_ohem_element_keep_positives(keep_ratio, dtype):
    g = torch.Generator().manual_seed(12)
    loss = torch.randint(0, 3, (8, 10), generator=g).to(dtype)
    y = (torch.rand(8, 10, generator=g) < 0.2).to(dtype)
    k = math.ceil(keep_ratio * loss.numel())
    n_pos = int(y.sum())
    neg_loss = torch.where(y == 1, -math.inf, loss.double())
    expect = brute_force_element_mask(neg_loss, max(k - n_pos, 0)) | (y == 1)
    sel, out = _selected(lambda t: ohem(t, y, keep_ratio=keep_ratio, keep_positives=True), loss)
    assert torch.equal(sel, expect)
    torch.testing.assert_close(out, loss[expect].sum() / max(k, n_pos))


def test_ohem_example_mode_with_ties_and_positives():
    loss = torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.5, 0.5], [3.0, 1.0], [0.0, 0.1]], dtype=torch.float64)
    y = torch.tensor([[0, 0], [0, 0], [1, 0], [0, 0], [0, 1]], dtype=torch.float64)
    # row sums 2, 2, 1, 4, 0.1 -> k = ceil(0.6 * 5) = 3: rows 3, 0, 1 (0 before 1 on the tie).
    sel, out = _selected(lambda t: ohem(t, y, keep_ratio=0.6, mode="example"), loss)
    rows = torch.tensor([True, True, False, True, False])
    assert torch.equal(sel, rows[:, None].expand(5, 2).clone())
    torch.testing.assert_close(out, loss[rows].sum() / 6)
    # keep_ratio 0.4 -> k = 2: rows 3, 0; positives of rows 2 and 4 join.
    _, out = _selected(lambda t: ohem(t, y, keep_ratio=0.4, mode="example", keep_positives=True), loss)
    torch.testing.assert_close(out, (loss[3].sum() + loss[0].sum() + 0.5 + 0.1) / 6)


def test_bool_targets_equal_float_targets():
    x, y, pw, _ = _data(seed=21)
    for fn in (focal_loss, asymmetric_loss, bce_with_logits):
        torch.testing.assert_close(fn(x, y.bool(), pos_weight=pw), fn(x, y, pos_weight=pw))


def test_ohem_min_kept_floor():
    loss = torch.arange(20.0).reshape(4, 5)
    y = torch.zeros(4, 5)
    assert ohem(loss, y, keep_ratio=0.01, min_kept=1).item() == 19.0
    assert ohem(loss, y, keep_ratio=0.01, min_kept=3).item() == 18.0
    assert ohem(loss, y, keep_ratio=0.01, min_kept=1000).item() == loss.mean().item()
    assert ohem(loss, y, keep_ratio=0.01, mode="example", min_kept=2).item() == loss[2:].mean().item()


def test_ohem_gradient_only_reaches_kept_logits():
    x, y, _, _ = _data(seed=13, dtype=torch.float32)
    x.requires_grad_(True)
    OHEMLoss(FocalLoss(reduction="none"), 0.2)(x, y).backward()
    assert int((x.grad != 0).sum()) == math.ceil(0.2 * x.numel())


# ----------------------------------------------------------------- numerics


def _extreme_logits(dtype):
    x = torch.tensor(
        [[1e4, -1e4, 0.0, 30.0, -30.0, 1e4], [-1e4, 1e4, 5.0, -5.0, 1e-3, -1e4],
         [1e4, 1e4, -1e4, -1e4, 50.0, -50.0], [1e4, -1e4, 1e4, -1e4, 0.0, 0.0]],
        dtype=torch.float32,
    )
    y = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 0, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.float32)
    return x.to(dtype), y  # row 2 all-positive, row 3 all-negative


_NUMERIC_FNS = {
    "bce": lambda a, y: bce_with_logits(a, y, pos_weight=torch.full((6,), 3.0)),
    "focal_g0.5": lambda a, y: focal_loss(a, y, gamma=0.5, alpha=0.25, pos_weight=torch.full((6,), 3.0)),
    "focal_g0.2_sum": lambda a, y: focal_loss(a, y, gamma=0.2, reduction="sum"),
    "focal_g2": lambda a, y: focal_loss(a, y, gamma=2.0),
    "asl": lambda a, y: asymmetric_loss(a, y),
    "asl_g0.5": lambda a, y: asymmetric_loss(a, y, gamma_pos=0.5, gamma_neg=0.3, clip=0.1),
    "asl_noclip": lambda a, y: asymmetric_loss(a, y, gamma_pos=0.5, gamma_neg=0.5, clip=0.0),
    "ohem": lambda a, y: ohem(focal_loss(a, y, gamma=0.5, reduction="none"), y, keep_ratio=0.3, keep_positives=True),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", sorted(_NUMERIC_FNS))
def test_extreme_logits_and_low_precision_are_finite(name, dtype):
    x, y = _extreme_logits(dtype)
    x.requires_grad_(True)
    out = _NUMERIC_FNS[name](x, y)
    out.backward()
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.isfinite(out).all(), out
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all(), x.grad


def test_extreme_logits_values_are_right():
    x = torch.tensor([[-1e4, 1e4, 1e4, -1e4]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    out = focal_loss(x, y, gamma=0.5, reduction="none")
    torch.testing.assert_close(out, torch.tensor([[1e4, 1e4, 0.0, 0.0]]))
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([[-1.0, 1.0, 0.0, 0.0]]))
    asl = asymmetric_loss(x.detach(), y, gamma_neg=0.5, clip=0.05, reduction="none")
    torch.testing.assert_close(asl, torch.tensor([[1e4, -(0.95**0.5) * math.log(0.05), 0.0, 0.0]]))


def test_half_inputs_match_float32():
    x, y, pw, _ = _data(seed=14, dtype=torch.float32)
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype)
        for fn in (focal_loss, asymmetric_loss, bce_with_logits):
            torch.testing.assert_close(fn(xh, y, pos_weight=pw), fn(xh.float(), y, pos_weight=pw))


# ----------------------------------------------------------------- modules, registry


def test_modules_hold_buffers_and_follow_to():
    pw, w = torch.rand(L) + 0.5, torch.rand(L)
    for module in (BCEWithLogits(pos_weight=pw, weight=w), FocalLoss(pos_weight=pw, weight=w),
                   AsymmetricLoss(pos_weight=pw, weight=w)):
        assert set(module.state_dict()) == {"pos_weight", "weight"}
        assert dict(module.named_buffers())["pos_weight"] is module.pos_weight
        module.to(torch.float64)
        assert module.pos_weight.dtype == torch.float64
    x, y, _, _ = _data(seed=15, dtype=torch.float32)
    torch.testing.assert_close(FocalLoss(gamma=1.0, alpha=0.3, pos_weight=pw, weight=w)(x, y),
                               focal_loss(x, y, gamma=1.0, alpha=0.3, pos_weight=pw, weight=w))


def _cfg(**kw):
    base = dataclasses.asdict(LossConfig())
    base.update(kw)
    return SimpleNamespace(**base)


def _library_cfg(**kw):
    """A loss section with the knobs only library callers set (the config fixes them)."""
    base = dict(name="bce", gamma=2.0, alpha=None, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, ohem=1.0,
                ohem_mode="element", ohem_min_kept=1, ohem_keep_positives=False)
    base.update(kw)
    return SimpleNamespace(**base)


def test_build_loss_registry():
    assert set(LOSSES) == {"bce", "focal", "asymmetric"}
    pw = torch.rand(L) + 0.5
    assert isinstance(build_loss(_cfg(name="bce"), pos_weight=pw), BCEWithLogits)
    focal = build_loss(_cfg(name="focal", gamma=1.5, alpha=0.25), pos_weight=pw)
    assert isinstance(focal, FocalLoss) and focal.gamma == 1.5 and focal.alpha == 0.25
    assert torch.equal(focal.pos_weight, pw)
    asl = build_loss(_cfg(name="asymmetric", gamma_neg=2.0))   # the config's section: published gamma_pos, clip
    assert isinstance(asl, AsymmetricLoss) and (asl.gamma_pos, asl.gamma_neg, asl.clip) == (0.0, 2.0, 0.05)
    asl = build_loss(_library_cfg(name="asymmetric", gamma_pos=1.0, clip=0.1))
    assert isinstance(asl, AsymmetricLoss) and (asl.gamma_pos, asl.gamma_neg, asl.clip) == (1.0, 4.0, 0.1)
    mined = build_loss(_cfg(name="focal", ohem=0.25))
    assert isinstance(mined, OHEMLoss) and mined.base.reduction == "none"
    assert (mined.keep_ratio, mined.mode, mined.min_kept, mined.keep_positives) == (0.25, "element", 1, False)
    mined = build_loss(_library_cfg(name="focal", ohem=0.25, ohem_mode="example", ohem_min_kept=3,
                                    ohem_keep_positives=True))
    assert isinstance(mined, OHEMLoss) and mined.base.reduction == "none"
    assert (mined.keep_ratio, mined.mode, mined.min_kept, mined.keep_positives) == (0.25, "example", 3, True)
    x, y, _, _ = _data(seed=16, dtype=torch.float32)
    assert mined(x, y).shape == ()
    assert isinstance(build_loss(SimpleNamespace(name="bce")), BCEWithLogits)  # OHEM keys optional


def test_build_loss_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'bce'.*'focal'.*'nope'|asymmetric.*nope"):
        build_loss(_cfg(name="nope"))
    with pytest.raises(ValueError, match="gamma"):
        build_loss(SimpleNamespace(name="focal", alpha=None))


# ----------------------------------------------------------------- invalid arguments


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x, y: focal_loss(x, y, gamma=-1.0), r"gamma.*-1\.0"),
        (lambda x, y: focal_loss(x, y, alpha=1.5), r"alpha.*1\.5"),
        (lambda x, y: focal_loss(x, y, alpha=-0.1), r"alpha.*-0\.1"),
        (lambda x, y: asymmetric_loss(x, y, gamma_neg=-2.0), r"gamma_neg.*-2\.0"),
        (lambda x, y: asymmetric_loss(x, y, gamma_pos=float("nan")), r"gamma_pos.*nan"),
        (lambda x, y: asymmetric_loss(x, y, clip=1.0), r"clip.*1\.0"),
        (lambda x, y: focal_loss(x, y, reduction="avg"), r"reduction.*'avg'"),
        (lambda x, y: bce_with_logits(x, y, reduction="mean "), r"reduction.*'mean '"),
        (lambda x, y: asymmetric_loss(x, y, reduction=None), r"reduction.*None"),
        (lambda x, y: focal_loss(x, y[:, :-1]), r"targets shape \(6, 6\).*\(6, 7\)"),
        (lambda x, y: focal_loss(x[0], y[0]), r"logits must be 2-D.*\(7,\)"),
        (lambda x, y: focal_loss(x, y, pos_weight=torch.ones(L + 1)), r"pos_weight.*\(7,\).*\(8,\)"),
        (lambda x, y: bce_with_logits(x, y, pos_weight=torch.ones(L - 1)), r"pos_weight.*\(6,\)"),
        (lambda x, y: focal_loss(x, y, weight=torch.ones(3, L)), r"weight.*\(3, 7\)"),
        (lambda x, y: ohem(x, y, keep_ratio=0.0), r"keep_ratio.*0\.0"),
        (lambda x, y: ohem(x, y, keep_ratio=1.5), r"keep_ratio.*1\.5"),
        (lambda x, y: ohem(x, y, keep_ratio=0.5, mode="row"), r"mode.*'row'"),
        (lambda x, y: ohem(x, y, keep_ratio=0.5, min_kept=-1), r"min_kept.*-1"),
        (lambda x, y: ohem(x[0], y[0], keep_ratio=0.5), r"loss must be a 2-D"),
        (lambda x, y: OHEMLoss(FocalLoss(), 0.5), r"base.reduction.*'mean'"),
        (lambda x, y: FocalLoss(gamma=-0.5), r"gamma.*-0\.5"),
        (lambda x, y: AsymmetricLoss(clip=-0.1), r"clip.*-0\.1"),
        (lambda x, y: BCEWithLogits(reduction="meen"), r"reduction.*'meen'"),
    ],
)
def test_invalid_arguments_raise_naming_the_culprit(call, match):
    x, y, _, _ = _data(seed=17, dtype=torch.float32)
    with pytest.raises(ValueError, match=match):
        call(x, y)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x, y: focal_loss(x, y.long()), r"targets.*torch\.int64"),
        (lambda x, y: bce_with_logits(x.long(), y), r"logits.*torch\.int64"),
        (lambda x, y: focal_loss(x, y, gamma="2"), r"gamma.*'2'"),
        (lambda x, y: ohem(x, y, keep_ratio=0.5, keep_positives=1), r"keep_positives.*1"),
    ],
)
def test_wrong_types_raise_type_error(call, match):
    x, y, _, _ = _data(seed=18, dtype=torch.float32)
    with pytest.raises(TypeError, match=match):
        call(x, y)
