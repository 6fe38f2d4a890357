"""Focal and asymmetric losses per element, with a closed-form backward.

* Fast: :func:`focal`. Focal (Lin et al., ICCV 2017) and asymmetric (Ridnik et al., ICCV 2021)
  losses share one core (:func:`_focal_core`: a focusing exponent per side and a probability
  shift for negatives) wrapped in one ``torch.autograd.Function``. Its forward computes the
  loss from ``sigmoid`` and ``softplus`` (never ``log(sigmoid(x))``), the modulating factor
  ``(1 - p_t) ** gamma`` from them, and, when the logits need a gradient, the closed-form
  derivative from the same intermediates, saved as one ``(N, L)`` tensor (logits and targets
  are not kept); the backward is one multiplication. The derivative is written with no
  negative power, so ``gamma`` in ``(0, 1)`` at ``p_t = 1`` and logits of ``+-1e4`` stay finite
  (the ``x ** gamma`` gradient at 0 is what makes textbook focal losses NaN). Under
  ``torch.no_grad()`` no gradient is computed.
* Reference: :func:`focal_reference`, the published formulas written with autograd,
  ``FL = -alpha_t (1 - p_t) ** gamma log p_t`` (Lin et al., eq. 5) and the asymmetric loss with
  the shifted probability ``p_m = max(p - clip, 0)`` for negatives (Ridnik et al., eq. 4).
  ``tests/test_kernels_focal.py`` pins value and gradient of the two equal (and ``gradcheck``
  the fast one in float64).

Arguments are not checked here: :func:`xmlc.losses.focal_loss` and
:func:`xmlc.losses.asymmetric_loss` validate them and call :func:`focal`. Its place is earned by
the focal and asymmetric rows of ``python benchmarks/bench_losses.py`` (forward + backward
time against BCE, beside the autograd reference) and the ``p ** 4`` row of ``--tricks``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["focal", "focal_reference", "compute_dtype"]


def compute_dtype(logits: Tensor) -> torch.dtype:
    """float64 for float64 logits, else float32 (half-precision logits are computed in float32)."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _side_coefficients(
    alpha: Optional[float], pos_weight: Optional[Tensor], weight: Optional[Tensor], dtype: torch.dtype
) -> tuple[Optional[Tensor | float], Optional[Tensor | float], Optional[Tensor]]:
    """Weights of the positive and negative terms: ``alpha * pos_weight * w`` and ``(1 - alpha) * w``.

    A per-label weight ``(L,)`` is folded in here (cheap); an ``(N, L)`` weight is returned
    separately and multiplied per element.
    """
    c_pos: Optional[Tensor | float] = None if alpha is None else alpha
    c_neg: Optional[Tensor | float] = None if alpha is None else 1.0 - alpha
    if pos_weight is not None:
        pw = pos_weight.detach().to(dtype)
        c_pos = pw if c_pos is None else pw * c_pos
    elem_weight = None
    if weight is not None:
        w = weight.detach().to(dtype)
        if w.dim() == 1:
            c_pos = w if c_pos is None else w * c_pos
            c_neg = w if c_neg is None else w * c_neg
        else:
            elem_weight = w
    return c_pos, c_neg, elem_weight


def _pow(t: Tensor, gamma: float) -> Tensor:
    """``t ** gamma`` as a new tensor. ``gamma = 4`` (the asymmetric loss's default) is two
    squarings: PyTorch's CPU ``pow`` has no fast kernel for it (the ``p ** 4`` row of
    ``benchmarks/bench_losses.py --tricks``). Other exponents: plain ``torch.pow``."""
    if gamma == 4.0:
        sq = t * t
        return sq.mul_(sq)
    return torch.pow(t, gamma)


def _softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x)) = -log(1 - sigmoid(x))``, finite for every finite ``x``."""
    return F.softplus(x, threshold=20.0 if x.dtype != torch.float64 else 40.0)


# The dense (N, L) steps below work in place on as few buffers as possible: every fresh
# (N, L) tensor costs a first-touch page fault per 4 KiB, which on large batches outweighs
# the arithmetic. Each function allocates at most four (N, L) tensors and returns two.


def _negative_terms(x: Tensor, gamma: float, need_grad: bool) -> tuple[Tensor, Optional[Tensor]]:
    """Every element as a negative: ``p ** gamma * -log(1 - p)`` and its derivative
    ``p ** gamma * (p + gamma (1 - p) (-log(1 - p)))``; ``p = sigmoid(x)``. Dense ``(N, L)``."""
    p = torch.sigmoid(x)
    sp = _softplus(x)  # -log(1 - p)
    if gamma == 0.0:
        return sp, p if need_grad else None
    mod = _pow(p, gamma)  # 0 ** gamma = 0: never a negative power
    grad = None
    if need_grad:  # p - gamma p sp + gamma sp, then times mod; in place: p is done after this
        grad = p.addcmul_(p, sp, value=-gamma).add_(sp, alpha=gamma).mul_(mod)
    return mod.mul_(sp), grad


def _shifted_negative_terms(
    x: Tensor, gamma: float, clip: float, need_grad: bool
) -> tuple[Tensor, Optional[Tensor]]:
    """Every element as a shifted negative (Ridnik et al.): ``p_m = max(p - clip, 0)``,
    ``p_m ** gamma * -log(1 - p_m)`` and its derivative

        p (1 - p) p_m ** (gamma - 1) [p_m / (1 - p_m) - gamma log(1 - p_m)]   (p_m > 0),
        0                                                                    (p_m = 0),

    in place on four (N, L) buffers.

    ``1 - p_m >= clip`` keeps the log finite. For gamma < 1 the second term is written as
    ``gamma p_m ** gamma * (log(1 - p_m) / p_m)`` (limit -1 at 0), so no ``0 ** negative``."""
    p = torch.sigmoid(x)
    p_m = F.softshrink(p, clip)  # max(p - clip, 0) for p >= 0
    one_m = torch.rsub(p_m, 1.0)  # 1 - p_m, in [clip, 1]
    if gamma >= 1.0:
        base = None if gamma == 1.0 else _pow(p_m, gamma - 1.0)
        if need_grad:
            grad = p.addcmul_(p, p, value=-1.0)  # p (1 - p)
            if base is not None:
                grad.mul_(base)
        mod = p_m.clone() if base is None else base.mul_(p_m)  # p_m ** gamma
        if need_grad:
            p_m.div_(one_m)  # p_m / (1 - p_m)
        nlog_r = one_m.reciprocal_().log_()  # -log(1 - p_m) >= +0 (never -0.0)
        if need_grad:
            grad.mul_(p_m.add_(nlog_r, alpha=gamma))
        return mod.mul_(nlog_r), grad if need_grad else None
    nlog_r = torch.reciprocal(one_m).log_()
    mod = _pow(p_m, gamma)  # 0 ** 0 = 1
    grad = None
    if need_grad:
        active = p_m > 0
        ratio = torch.where(active, nlog_r / p_m, 1.0)  # -log(1 - p_m) / p_m, 1 in the limit
        grad = ratio.mul_(gamma).add_(one_m.reciprocal_()).mul_(mod).mul_(p.addcmul_(p, p, value=-1.0))
        grad = torch.where(active, grad, 0.0)
    return mod.mul_(nlog_r), grad


def _flipped_terms(
    x: Tensor, pos: Tensor, gamma: float, need_grad: bool, coef: Optional[tuple] = None
) -> tuple[Tensor, Optional[Tensor]]:
    """Focal terms with one gamma for both sides, dense: with ``w = x`` for negatives and
    ``w = -x`` for positives (``pos`` is the 0/1 float target), ``q = sigmoid(w) = 1 - p_t``
    and ``softplus(w) = -log p_t``, the term is ``q ** gamma * softplus(w)``, its derivative
    wrt ``w`` is ``q ** gamma * (q + gamma (1 - q) softplus(w))`` and ``dw/dx = 1 - 2 pos``.
    ``coef = (c_pos, c_neg, elem_weight)`` weights the two sides (written into the softplus
    buffer once it is free). Three (N, L) buffers; nothing is done per positive."""
    w = torch.addcmul(x, x, pos, value=-2.0)
    sp = _softplus(w)  # -log p_t
    q = w.sigmoid_()  # 1 - p_t, in place: w is done
    if gamma == 0.0:
        loss, grad = sp.clone() if coef is not None else sp, (q if need_grad else None)
    else:
        mod = _pow(q, gamma)
        grad = q.addcmul_(q, sp, value=-gamma).add_(sp, alpha=gamma).mul_(mod) if need_grad else None
        loss = mod.mul_(sp)
    if grad is not None:
        grad.addcmul_(grad, pos, value=-2.0)  # times dw/dx
    if coef is not None:
        c_pos, c_neg, elem_weight = coef
        if c_pos is None and c_neg is None:
            weights = elem_weight
        else:
            cp = 1.0 if c_pos is None else c_pos
            cn = 1.0 if c_neg is None else c_neg
            weights = torch.mul(pos, cp - cn, out=sp).add_(cn)  # c_neg + (c_pos - c_neg) y
            if elem_weight is not None:
                weights.mul_(elem_weight)
        loss.mul_(weights)
        if grad is not None:
            grad.mul_(weights)
    return loss, grad


def _positive_terms(x: Tensor, gamma: float, need_grad: bool) -> tuple[Tensor, Optional[Tensor]]:
    """Elements as positives: ``(1 - p) ** gamma * -log(p)`` and its derivative
    ``-(1 - p) ** gamma * (gamma p (-log p) + 1 - p)``. Called on the positives only."""
    q = torch.sigmoid(-x)  # 1 - p
    ce = _softplus(-x)  # -log(p)
    mod = _pow(q, gamma)
    grad = None
    if need_grad:
        grad = torch.rsub(q, 1.0).mul_(ce).mul_(gamma).add_(q).mul_(mod).neg_()
    return mod * ce, grad


def _focal_core(
    logits: Tensor,
    targets: Tensor,
    *,
    gamma_pos: float,
    gamma_neg: float,
    clip: float,
    alpha: Optional[float],
    pos_weight: Optional[Tensor],
    weight: Optional[Tensor],
    need_grad: bool,
) -> tuple[Tensor, Optional[Tensor]]:
    """Per-element focal / asymmetric loss and, if asked, its derivative wrt the logits.

    Focal (one gamma, no shift) flips the sign of the logits of positives and evaluates one
    formula densely (:func:`_flipped_terms`). The asymmetric loss has a different formula per
    side; labels are sparse, so it evaluates every element as a negative on the dense ``(N, L)``
    logits, then overwrites the positives, found with one scan, from a computation on those
    few elements (its cost grows with the number of positives).

    Returns ``(loss (N, L), dloss/dlogits (N, L) or None)`` in float32 / float64, unreduced.
    """
    dtype = compute_dtype(logits)
    x = logits.detach().to(dtype).contiguous()
    c_pos, c_neg, elem_weight = _side_coefficients(alpha, pos_weight, weight, dtype)

    if clip == 0.0 and gamma_pos == gamma_neg:  # focal: both sides alike, no per-positive step
        pos = targets.to(dtype)  # binary targets are their own 0/1 mask: no copy for float
        weighted = c_pos is not None or c_neg is not None or elem_weight is not None
        return _flipped_terms(x, pos, gamma_pos, need_grad, (c_pos, c_neg, elem_weight) if weighted else None)

    if clip > 0.0:
        loss, grad = _shifted_negative_terms(x, gamma_neg, clip, need_grad)
    else:
        loss, grad = _negative_terms(x, gamma_neg, need_grad)
    if elem_weight is not None:
        c_neg = elem_weight if c_neg is None else elem_weight * c_neg
    if c_neg is not None:
        loss = loss.mul_(c_neg)
        if grad is not None:
            grad = grad.mul_(c_neg)

    idx = (targets > 0.5).reshape(-1).nonzero().squeeze(1)  # sorted flat indices of the positives
    if idx.numel() > 0:
        loss_p, grad_p = _positive_terms(x.reshape(-1)[idx], gamma_pos, need_grad)
        coef = None
        if isinstance(c_pos, Tensor):
            coef = c_pos[idx % x.shape[1]]
        elif c_pos is not None:
            coef = torch.full_like(loss_p, c_pos)
        if elem_weight is not None:
            ew = elem_weight.reshape(-1)[idx]
            coef = ew if coef is None else coef * ew
        if coef is not None:
            loss_p = loss_p * coef
            grad_p = None if grad_p is None else grad_p * coef
        loss.view(-1)[idx] = loss_p
        if grad is not None:
            grad.view(-1)[idx] = grad_p
    return loss, grad


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / loss.numel()


class _FocalFunction(torch.autograd.Function):
    """Autograd wrapper of :func:`_focal_core`: the gradient is computed in the forward pass
    from the intermediates it already has and saved as one ``(N, L)`` tensor (the logits
    and targets are not saved); the backward is one multiplication."""

    @staticmethod
    def forward(ctx, logits, targets, pos_weight, weight, gamma_pos, gamma_neg, clip, alpha, reduction):
        loss, grad = _focal_core(
            logits,
            targets,
            gamma_pos=gamma_pos,
            gamma_neg=gamma_neg,
            clip=clip,
            alpha=alpha,
            pos_weight=pos_weight,
            weight=weight,
            need_grad=ctx.needs_input_grad[0],
        )
        ctx.save_for_backward(grad)
        ctx.scale = 1.0 / loss.numel() if reduction == "mean" else 1.0
        ctx.logits_dtype = logits.dtype
        return _reduce(loss, reduction)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if ctx.scale != 1.0:
            grad_output = grad_output * ctx.scale  # a scalar for "mean"
        grad_logits = (grad * grad_output).to(ctx.logits_dtype)
        return grad_logits, None, None, None, None, None, None, None, None


def focal(
    logits: Tensor,
    targets: Tensor,
    *,
    gamma_pos: float,
    gamma_neg: float,
    clip: float,
    alpha: Optional[float],
    pos_weight: Optional[Tensor],
    weight: Optional[Tensor],
    reduction: str,
) -> Tensor:
    """Focal / asymmetric loss of ``logits`` ``(N, L)`` against binary ``targets`` ``(N, L)``.

    Focal loss is ``gamma_pos = gamma_neg = gamma, clip = 0``; the asymmetric loss is
    ``alpha = None``. ``pos_weight`` ``(L,)`` weights the positive term, ``weight`` ``(L,)`` or
    ``(N, L)`` the whole element, ``alpha`` the positives (``1 - alpha`` the negatives).

    Returns:
        ``(N, L)`` for ``reduction="none"``, else the sum (``"sum"``) or the sum over ``N * L``
        (``"mean"``); float64 for float64 logits, else float32. The gradient (closed form, see
        the module docstring) has the logits' dtype.
    """
    if torch.is_grad_enabled() and logits.requires_grad:
        return _FocalFunction.apply(
            logits, targets, pos_weight, weight, gamma_pos, gamma_neg, clip, alpha, reduction
        )
    loss, _ = _focal_core(
        logits,
        targets,
        gamma_pos=gamma_pos,
        gamma_neg=gamma_neg,
        clip=clip,
        alpha=alpha,
        pos_weight=pos_weight,
        weight=weight,
        need_grad=False,
    )
    return _reduce(loss, reduction)


def focal_reference(
    logits: Tensor,
    targets: Tensor,
    *,
    gamma_pos: float,
    gamma_neg: float,
    clip: float,
    alpha: Optional[float],
    pos_weight: Optional[Tensor],
    weight: Optional[Tensor],
    reduction: str,
) -> Tensor:
    """The plain algorithm of :func:`focal`: the published formulas under autograd.

    Per element, with ``p = sigmoid(x)`` and ``p_m = max(p - clip, 0)``::

        y = 1:  -w * alpha       * pw * (1 - p) ** gamma_pos * log(p)
        y = 0:  -w * (1 - alpha)      *    p_m  ** gamma_neg * log(1 - p_m)

    Same arguments and result as :func:`focal`. Textbook numerics: ``log(sigmoid(x))`` is
    ``-inf`` for logits far below zero, and the gradient of ``p_m ** gamma`` with
    ``gamma < 1`` is NaN where ``p_m = 0``; compare on moderate logits.
    """
    x = logits.to(compute_dtype(logits))
    y = targets.to(x.dtype)
    p = torch.sigmoid(x)
    p_m = torch.clamp(p - clip, min=0.0) if clip > 0.0 else p
    loss_pos = -((1 - p) ** gamma_pos) * torch.log(p)
    loss_neg = -(p_m**gamma_neg) * torch.log(1 - p_m)
    if alpha is not None:
        loss_pos, loss_neg = alpha * loss_pos, (1 - alpha) * loss_neg
    if pos_weight is not None:
        loss_pos = loss_pos * pos_weight.detach().to(x.dtype)
    loss = torch.where(y > 0.5, loss_pos, loss_neg)
    if weight is not None:
        loss = loss * weight.detach().to(x.dtype)
    return _reduce(loss, reduction)
