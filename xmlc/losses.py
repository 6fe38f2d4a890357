"""Losses for multilabel training with thousands of imbalanced labels.

Every loss takes logits ``(N, L)`` and targets ``(N, L)`` and a ``reduction`` in
``{"none", "mean", "sum"}``; ``"none"`` returns the ``(N, L)`` per-element losses, so that
online hard-example mining (:func:`ohem`) wraps any of them.

* :func:`bce_with_logits`: binary cross-entropy, a thin checked layer over PyTorch's.
* :func:`focal_loss`: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
* :func:`asymmetric_loss`: Ridnik et al., "Asymmetric Loss For Multi-Label Classification",
  ICCV 2021.
* :func:`ohem`: Shrivastava et al., "Training Region-based Object Detectors with Online Hard
  Example Mining", CVPR 2016, adapted to multilabel: per element or per example.

Conventions shared by all losses:

* ``pos_weight`` ``(L,)`` multiplies the positive term of each label, as in
  :func:`torch.nn.functional.binary_cross_entropy_with_logits` (``(N - pos) / pos`` from
  :func:`xmlc.stats.pos_weight`); ``weight`` ``(L,)`` (per label, e.g. class-balanced or
  propensity weights) or ``(N, L)`` multiplies the whole element. Both are constants: no
  gradient flows into them.
* ``"mean"`` divides the (weighted) sum by ``N * L``, like PyTorch does; it does not divide
  by the sum of the weights.
* float16 / bfloat16 logits are computed in float32 and the loss is returned in float32 (as
  autocast does for BCE; a float16 sum over millions of elements overflows); the gradient
  reaching the logits has their dtype. float32 and float64 are computed in their own dtype.
* Focal and asymmetric losses take binary targets ``{0, 1}`` (float or bool). Other values
  are not supported and not checked (a check is one more pass over ``(N, L)``). BCE accepts
  soft targets in ``[0, 1]``.

Focal and asymmetric losses share one core (:func:`_focal_core`: a focusing exponent per
side and a probability shift for negatives) wrapped in one ``torch.autograd.Function``. Its
forward computes the loss from ``sigmoid`` and ``softplus`` (never ``log(sigmoid(x))``),
the modulating factor ``(1 - p_t) ** gamma`` from them, and, when the logits need a
gradient, the closed-form derivative from the same intermediates, saved as one ``(N, L)``
tensor (logits and targets are not kept); the backward is one multiplication. The derivative
is written with no negative power, so ``gamma`` in ``(0, 1)`` at ``p_t = 1`` and logits of
``+-1e4`` stay finite (the ``x ** gamma`` gradient at 0 is what makes textbook focal losses
NaN). ``gradcheck`` verifies it in float64. Under ``torch.no_grad()`` no gradient is computed.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmlc.kernels.keys import sortable_keys

__all__ = [
    "bce_with_logits",
    "focal_loss",
    "asymmetric_loss",
    "ohem",
    "BCEWithLogits",
    "FocalLoss",
    "AsymmetricLoss",
    "OHEMLoss",
    "LOSSES",
    "build_loss",
]

REDUCTIONS = ("none", "mean", "sum")
OHEM_MODES = ("element", "example")
Reduction = Literal["none", "mean", "sum"]
OhemMode = Literal["element", "example"]


# --------------------------------------------------------------------------- validation


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_nonneg(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


def _check_alpha(alpha: Optional[float]) -> Optional[float]:
    if alpha is None:
        return None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a float in [0, 1] or None, got {alpha!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] or None, got {alpha!r}")
    return float(alpha)


def _check_clip(clip: float) -> float:
    clip = _check_nonneg("clip", clip)
    if clip >= 1.0:
        raise ValueError(f"clip must be in [0, 1), got {clip!r}")
    return clip


def _check_tensors(
    logits: Tensor, targets: Tensor, pos_weight: Optional[Tensor], weight: Optional[Tensor]
) -> None:
    """Per-call checks: shapes, dtypes, devices. Values are not scanned (that costs a pass)."""
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {getattr(logits, 'dtype', type(logits))}")
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D (N, L), got shape {tuple(logits.shape)}")
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a tensor, got {type(targets)}")
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets shape {tuple(targets.shape)} does not match logits shape {tuple(logits.shape)}"
        )
    if not (targets.is_floating_point() or targets.dtype == torch.bool):
        raise TypeError(f"targets must be a floating-point or bool tensor, got dtype {targets.dtype}")
    if targets.device != logits.device:
        raise ValueError(f"targets are on {targets.device}, logits on {logits.device}")
    num_labels = logits.shape[1]
    if pos_weight is not None:
        if not isinstance(pos_weight, Tensor) or not pos_weight.is_floating_point():
            raise TypeError(f"pos_weight must be a floating-point tensor (L,), got {type(pos_weight)}")
        if pos_weight.shape != (num_labels,):
            raise ValueError(
                f"pos_weight must have shape (L,) = ({num_labels},), got {tuple(pos_weight.shape)}"
            )
        if pos_weight.device != logits.device:
            raise ValueError(f"pos_weight is on {pos_weight.device}, logits on {logits.device}")
    if weight is not None:
        if not isinstance(weight, Tensor) or not weight.is_floating_point():
            raise TypeError(f"weight must be a floating-point tensor (L,) or (N, L), got {type(weight)}")
        if weight.shape not in ((num_labels,), logits.shape):
            raise ValueError(
                f"weight must have shape (L,) = ({num_labels},) or (N, L) = {tuple(logits.shape)}, "
                f"got {tuple(weight.shape)}"
            )
        if weight.device != logits.device:
            raise ValueError(f"weight is on {weight.device}, logits on {logits.device}")


def _compute_dtype(logits: Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------- BCE


def bce_with_logits(
    logits: Tensor,
    targets: Tensor,
    *,
    pos_weight: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Binary cross-entropy on logits, per label: ``-w [pw y log p + (1 - y) log(1 - p)]``.

    A checked layer over :func:`torch.nn.functional.binary_cross_entropy_with_logits` (same
    value and gradient); half-precision logits are computed in float32.

    Args:
        logits: ``(N, L)`` floating point.
        targets: ``(N, L)`` in ``[0, 1]`` (float or bool).
        pos_weight: ``(L,)`` weight of the positive term, or None.
        weight: ``(L,)`` or ``(N, L)`` weight of the whole element, or None.
        reduction: ``"none"`` -> ``(N, L)``; ``"mean"`` (sum / (N L)); ``"sum"``.

    Returns:
        The loss, float32 for half inputs, else the logits' dtype.

    Example:
        >>> bce_with_logits(torch.zeros(2, 3), torch.ones(2, 3)).item()  # log 2
        0.6931...
    """
    _check_reduction(reduction)
    _check_tensors(logits, targets, pos_weight, weight)
    dtype = _compute_dtype(logits)
    return F.binary_cross_entropy_with_logits(
        logits.to(dtype),
        targets.to(dtype),
        weight=None if weight is None else weight.to(dtype),
        pos_weight=None if pos_weight is None else pos_weight.to(dtype),
        reduction=reduction,
    )


# --------------------------------------------------------------------------- focal core


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
    squarings: PyTorch's CPU ``pow`` has no fast kernel for it (1.7x at 1,024 x 30,000,
    14x at 256 x 7,900; benchmarks/RESULTS.md, Losses). Other exponents: plain ``torch.pow``
    (an ``exp(gamma * log t)`` path measured no faster)."""
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
    dtype = _compute_dtype(logits)
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


def _focal_apply(logits, targets, *, gamma_pos, gamma_neg, clip, alpha, pos_weight, weight, reduction):
    _check_reduction(reduction)
    _check_tensors(logits, targets, pos_weight, weight)
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


def focal_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    gamma: float = 2.0,
    alpha: Optional[float] = None,
    pos_weight: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

    Per element, with ``p = sigmoid(x)``::

        y = 1:  -w * alpha       * pw * (1 - p) ** gamma * log(p)
        y = 0:  -w * (1 - alpha)      *      p  ** gamma * log(1 - p)

    i.e. ``-alpha_t (1 - p_t) ** gamma log(p_t)`` (paper eq. 5) with ``pos_weight`` ``pw``
    multiplying the positive term as in BCE-with-logits and ``weight`` ``w`` the whole element.
    ``alpha=None`` drops the alpha factor (both sides 1); ``gamma=0, alpha=None`` is BCE.

    Args:
        logits: ``(N, L)`` floating point.
        targets: ``(N, L)`` binary ``{0, 1}``, float or bool.
        gamma: focusing parameter, ``>= 0``.
        alpha: weight of positives in ``[0, 1]`` (negatives get ``1 - alpha``), or None.
        pos_weight: ``(L,)`` or None.
        weight: ``(L,)`` or ``(N, L)`` or None.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Returns:
        ``(N, L)`` or a scalar; float32 for half inputs, else the logits' dtype.

    Example:
        >>> x = torch.tensor([[3.0, -1.0]]); y = torch.tensor([[1.0, 0.0]])
        >>> focal_loss(x, y, gamma=2.0, alpha=0.25, reduction="none").shape
        torch.Size([1, 2])
    """
    gamma = _check_nonneg("gamma", gamma)
    alpha = _check_alpha(alpha)
    return _focal_apply(
        logits,
        targets,
        gamma_pos=gamma,
        gamma_neg=gamma,
        clip=0.0,
        alpha=alpha,
        pos_weight=pos_weight,
        weight=weight,
        reduction=reduction,
    )


def asymmetric_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    pos_weight: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Asymmetric loss (Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021).

    Per element, with ``p = sigmoid(x)`` and the shifted probability ``p_m = max(p - clip, 0)``::

        y = 1:  -w * pw * (1 - p) ** gamma_pos * log(p)
        y = 0:  -w *        p_m  ** gamma_neg * log(1 - p_m)

    Gradient: the exact gradient of this loss, including through the focusing weights
    ``(1 - p) ** gamma_pos`` and ``p_m ** gamma_neg``. The official implementation offers to
    compute those weights with grad mode switched off globally
    (``disable_torch_grad_focal_loss``); we neither toggle grad mode nor detach them: the
    paper's gradient analysis (Sec. 3.3) is of the full loss, the exact gradient is what
    ``gradcheck`` can verify, and the memory that detaching saved in the official code is
    moot here since the backward is closed-form. Negatives with ``p <= clip`` have zero loss
    and zero gradient.

    Args:
        logits: ``(N, L)`` floating point.
        targets: ``(N, L)`` binary ``{0, 1}``, float or bool.
        gamma_pos: focusing parameter of positives, ``>= 0``.
        gamma_neg: focusing parameter of negatives, ``>= 0``.
        clip: probability margin ``m`` in ``[0, 1)`` for negatives; 0 turns the shift off.
        pos_weight: ``(L,)`` or None.
        weight: ``(L,)`` or ``(N, L)`` or None.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Returns:
        ``(N, L)`` or a scalar; float32 for half inputs, else the logits' dtype.

    Example:
        >>> x = torch.tensor([[3.0, -1.0]]); y = torch.tensor([[1.0, 0.0]])
        >>> asymmetric_loss(x, y, reduction="none").shape
        torch.Size([1, 2])
    """
    gamma_pos = _check_nonneg("gamma_pos", gamma_pos)
    gamma_neg = _check_nonneg("gamma_neg", gamma_neg)
    clip = _check_clip(clip)
    return _focal_apply(
        logits,
        targets,
        gamma_pos=gamma_pos,
        gamma_neg=gamma_neg,
        clip=clip,
        alpha=None,
        pos_weight=pos_weight,
        weight=weight,
        reduction=reduction,
    )


# --------------------------------------------------------------------------- OHEM


def _check_ohem_args(keep_ratio: float, mode: str, min_kept: int, keep_positives: bool) -> None:
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)):
        raise TypeError(f"keep_ratio must be a float in (0, 1], got {keep_ratio!r}")
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio!r}")
    if mode not in OHEM_MODES:
        raise ValueError(f"mode must be one of {OHEM_MODES}, got {mode!r}")
    if isinstance(min_kept, bool) or not isinstance(min_kept, int) or min_kept < 0:
        raise ValueError(f"min_kept must be an int >= 0, got {min_kept!r}")
    if not isinstance(keep_positives, bool):
        raise TypeError(f"keep_positives must be a bool, got {keep_positives!r}")


def _radix_kth_largest(keys: Tensor, k: int) -> tuple[int, int, Tensor]:
    """The k-th largest of int32 ``keys`` (1-D) by a two-level radix select: a 65,536-bin
    histogram of the high 16 bits finds the bin holding it, a second of the low 16 bits of
    that bin's keys finds the key. Returns ``(key, number of keys >= key, scratch)`` where
    ``scratch`` is the int32 buffer of high bits, free for the caller to reuse. Two bincounts
    instead of a sort, a ``topk`` or a quickselect over a copy with int64 indices: with the
    mask, 2.4-4.4x faster than ``torch.kthvalue`` and 3-4x than ``torch.topk`` on CPU
    (benchmarks/RESULTS.md, Losses)."""
    high = torch.bitwise_right_shift(keys, 16).add_(32768)  # in [0, 65536)
    counts = torch.bincount(high, minlength=65536).flip(0).cumsum_(0)  # keys in bins >= 65535 - j
    j = int(torch.searchsorted(counts, k))
    above = int(counts[j - 1]) if j > 0 else 0
    bin_high = 65535 - j
    low = torch.bitwise_and(keys[high == bin_high], 0xFFFF)
    counts_low = torch.bincount(low, minlength=65536).flip(0).cumsum_(0)
    j_low = int(torch.searchsorted(counts_low, k - above))
    key = ((bin_high - 32768) << 16) | (65535 - j_low)
    return key, above + int(counts_low[j_low]), high


def _top_k_mask(values: Tensor, k: int) -> Tensor:
    """0/1 mask (dtype of ``values``) of the ``k`` largest entries of ``values``; ties at the
    threshold are broken by flat (row-major) index, lowest first. No sort: the threshold
    comes from a radix select (float32) or ``kthvalue`` (other dtypes), then one comparison
    writes the mask."""
    flat = values.reshape(-1)
    n = flat.numel()
    if k >= n:
        return torch.ones_like(values)
    if k <= 0:
        return torch.zeros_like(values)
    if flat.dtype == torch.float32:
        keys = sortable_keys(flat.contiguous())
        threshold, n_ge, scratch = _radix_kth_largest(keys, k)
        mask = scratch.view(torch.float32).copy_(keys >= threshold)  # reuse the int32 buffer
    else:
        mask = torch.empty_like(flat)
        keys = flat
        threshold = torch.kthvalue(flat, n - k + 1).values
        torch.ge(flat, threshold, out=mask)
        n_ge = int(mask.sum())
    surplus = n_ge - k
    if surplus > 0:  # more ties at the threshold than places left: drop the last by index
        tied = torch.nonzero(keys == threshold).squeeze(1)
        mask[tied[tied.numel() - surplus :]] = 0.0
    return mask.view_as(values)


def ohem(
    loss: Tensor,
    targets: Tensor,
    *,
    keep_ratio: float,
    mode: OhemMode = "element",
    min_kept: int = 1,
    keep_positives: bool = False,
) -> Tensor:
    """Online hard-example mining (Shrivastava et al., CVPR 2016) for multilabel losses.

    Keeps the hardest part of a batch of per-element losses and returns the mean over the
    kept elements; only they receive gradient.

    * ``mode="element"``: keeps the ``k = min(max(ceil(keep_ratio * N * L), min_kept), N * L)``
      largest ``(example, label)`` losses.
    * ``mode="example"``: keeps the ``k = min(max(ceil(keep_ratio * N), min_kept), N)``
      examples with the largest summed loss, all ``L`` labels of each.
    * ``keep_positives=True``: every positive element (``targets == 1``; targets are binary,
      float or bool) is kept in addition.
      In element mode the selection is filled with the hardest negatives up to ``k`` in all
      (if there are more than ``k`` positives, all positives and no negative are kept); in
      example mode the positives of the examples not selected are added.

    The result is ``sum(kept losses) / number of kept elements`` (the mean over the kept
    elements, not over the batch; with per-label weights in the base loss, over the kept
    weighted losses), and ``keep_ratio=1`` returns exactly ``loss.mean()``. Ties are broken
    deterministically by index, lowest first: flat row-major index in element mode, row index
    in example mode; equal means equal value (``-0.0`` ties with ``0.0``).

    Selection, no sort: element mode finds the k-th largest loss with a two-level radix
    select (two 65,536-bin histograms of the float32 bits; ``kthvalue`` for other dtypes)
    and writes a 0/1 mask with one comparison; example mode sorts the N row sums. The kept
    sum is a dot product with the mask, so the only ``(N, L)`` temporaries are the int32
    high-bit keys and the mask.

    Args:
        loss: ``(N, L)`` per-element losses (a loss called with ``reduction="none"``).
        targets: ``(N, L)`` targets, used by ``keep_positives``.
        keep_ratio: fraction kept, in ``(0, 1]``.
        mode: ``"element"`` | ``"example"``.
        min_kept: floor on the number kept (elements or examples), ``>= 0``.
        keep_positives: always keep every positive element.

    Returns:
        Scalar tensor.

    Example:
        >>> l = torch.tensor([[0.1, 2.0], [0.5, 0.3]])
        >>> ohem(l, torch.zeros(2, 2), keep_ratio=0.5).item()  # (2.0 + 0.5) / 2
        1.25
    """
    _check_ohem_args(keep_ratio, mode, min_kept, keep_positives)
    if not isinstance(loss, Tensor) or loss.dim() != 2:
        raise ValueError(f"loss must be a 2-D (N, L) tensor (reduction='none'), got {getattr(loss, 'shape', type(loss))}")
    if not isinstance(targets, Tensor) or targets.shape != loss.shape:
        raise ValueError(
            f"targets shape {tuple(getattr(targets, 'shape', ()))} does not match loss shape {tuple(loss.shape)}"
        )
    n_rows, n_labels = loss.shape
    total = loss.numel()
    if total == 0:
        raise ValueError(f"loss is empty, shape {tuple(loss.shape)}")
    n = total if mode == "element" else n_rows
    k = min(max(math.ceil(keep_ratio * n), min_kept), n)
    if k >= n:
        return loss.mean()

    if mode == "example" and not keep_positives:
        row_loss = loss.sum(dim=1)
        with torch.no_grad():
            order = torch.sort(row_loss.detach(), descending=True, stable=True).indices
            rows = torch.zeros(n_rows, dtype=loss.dtype, device=loss.device)
            rows[order[:k]] = 1.0
        return torch.dot(row_loss, rows) / (k * n_labels)

    with torch.no_grad():
        pos = targets.to(loss.dtype) if keep_positives else None  # binary: its own 0/1 mask
        if mode == "element":
            values = loss.detach()
            n_kept = k
            if pos is not None:  # positives rank above every loss; then the top max(k, P)
                n_kept = max(k, int(pos.sum()))
                values = torch.addcmul(values, pos, pos, value=_RANK_FIRST[values.dtype])
            mask = _top_k_mask(values, n_kept)
        else:
            order = torch.sort(loss.detach().sum(dim=1), descending=True, stable=True).indices
            rows = torch.zeros(n_rows, dtype=loss.dtype, device=loss.device)
            rows[order[:k]] = 1.0
            mask = torch.maximum(pos, rows.unsqueeze(1))
            n_kept = int(mask.sum())
    return torch.dot(loss.reshape(-1), mask.reshape(-1)) / n_kept


# A finite value above every loss, added to the positives' losses by one fused addcmul so that
# they rank first (1.5-12x faster than masked_fill(positives, inf); benchmarks/RESULTS.md, Losses).
_RANK_FIRST = {torch.float16: 6e4, torch.bfloat16: 1e38, torch.float32: 1e38, torch.float64: 1e300}


# --------------------------------------------------------------------------- modules


class _WeightedLoss(nn.Module):
    """Holds ``pos_weight`` and ``weight`` as buffers (they follow ``.to()`` and ``state_dict``)."""

    def __init__(self, pos_weight: Optional[Tensor], weight: Optional[Tensor], reduction: str) -> None:
        super().__init__()
        _check_reduction(reduction)
        for name, value in (("pos_weight", pos_weight), ("weight", weight)):
            if value is not None and (not isinstance(value, Tensor) or not value.is_floating_point()):
                raise TypeError(f"{name} must be a floating-point tensor or None, got {type(value)}")
        if pos_weight is not None and pos_weight.dim() != 1:
            raise ValueError(f"pos_weight must be 1-D (L,), got shape {tuple(pos_weight.shape)}")
        self.register_buffer("pos_weight", None if pos_weight is None else pos_weight.detach().clone())
        self.register_buffer("weight", None if weight is None else weight.detach().clone())
        self.reduction = reduction


class BCEWithLogits(_WeightedLoss):
    """Module form of :func:`bce_with_logits`: ``pos_weight`` and ``weight`` are buffers.

    Args:
        pos_weight: ``(L,)`` or None. weight: ``(L,)``, ``(N, L)`` or None. reduction: as in
            :func:`bce_with_logits`.

    Returns:
        ``forward(logits (N, L), targets (N, L))``: a scalar, or ``(N, L)`` for ``"none"``.

    Example:
        >>> BCEWithLogits(pos_weight=torch.tensor([3.0]))(torch.zeros(1, 1), torch.ones(1, 1)).item()  # 3 log 2
        2.079...
    """

    def __init__(self, *, pos_weight: Optional[Tensor] = None, weight: Optional[Tensor] = None, reduction: Reduction = "mean") -> None:
        super().__init__(pos_weight, weight, reduction)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return bce_with_logits(logits, targets, pos_weight=self.pos_weight, weight=self.weight, reduction=self.reduction)


class FocalLoss(_WeightedLoss):
    """Module form of :func:`focal_loss`: ``pos_weight`` and ``weight`` are buffers.

    Args:
        gamma, alpha, pos_weight, weight, reduction: as in :func:`focal_loss`.

    Returns:
        ``forward(logits (N, L), targets (N, L))``: a scalar, or ``(N, L)`` for ``"none"``.

    Example:
        >>> FocalLoss(gamma=2.0)(torch.zeros(1, 1), torch.ones(1, 1)).item()  # 0.5 ** 2 * log 2
        0.173...
    """

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: Optional[float] = None,
        pos_weight: Optional[Tensor] = None,
        weight: Optional[Tensor] = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(pos_weight, weight, reduction)
        self.gamma = _check_nonneg("gamma", gamma)
        self.alpha = _check_alpha(alpha)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return focal_loss(
            logits, targets, gamma=self.gamma, alpha=self.alpha,
            pos_weight=self.pos_weight, weight=self.weight, reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, reduction={self.reduction!r}"


class AsymmetricLoss(_WeightedLoss):
    """Module form of :func:`asymmetric_loss`: ``pos_weight`` and ``weight`` are buffers.

    Args:
        gamma_pos, gamma_neg, clip, pos_weight, weight, reduction: as in :func:`asymmetric_loss`.

    Returns:
        ``forward(logits (N, L), targets (N, L))``: a scalar, or ``(N, L)`` for ``"none"``.

    Example:
        >>> AsymmetricLoss()(torch.full((1, 1), -5.0), torch.zeros(1, 1)).item()  # p - clip < 0: no loss
        0.0
    """

    def __init__(
        self,
        *,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        pos_weight: Optional[Tensor] = None,
        weight: Optional[Tensor] = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(pos_weight, weight, reduction)
        self.gamma_pos = _check_nonneg("gamma_pos", gamma_pos)
        self.gamma_neg = _check_nonneg("gamma_neg", gamma_neg)
        self.clip = _check_clip(clip)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return asymmetric_loss(
            logits, targets, gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg, clip=self.clip,
            pos_weight=self.pos_weight, weight=self.weight, reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, clip={self.clip}, reduction={self.reduction!r}"


class OHEMLoss(nn.Module):
    """Wraps a per-element loss module (``reduction="none"``) with :func:`ohem`.

    Args:
        base: a loss module returning ``(N, L)`` (``reduction="none"``).
        keep_ratio, mode, min_kept, keep_positives: as in :func:`ohem`.

    Returns:
        ``forward(logits (N, L), targets (N, L))``: a scalar, the mean of the kept losses.

    Example:
        >>> m = OHEMLoss(BCEWithLogits(reduction="none"), keep_ratio=0.5)
        >>> m(torch.tensor([[0.0, 9.0]]), torch.tensor([[1.0, 1.0]])).item()  # keeps log 2
        0.693...
    """

    def __init__(
        self,
        base: nn.Module,
        keep_ratio: float,
        *,
        mode: OhemMode = "element",
        min_kept: int = 1,
        keep_positives: bool = False,
    ) -> None:
        super().__init__()
        _check_ohem_args(keep_ratio, mode, min_kept, keep_positives)
        if getattr(base, "reduction", "none") != "none":
            raise ValueError(f"base.reduction must be 'none' for OHEM, got {base.reduction!r}")
        self.base = base
        self.keep_ratio = float(keep_ratio)
        self.mode = mode
        self.min_kept = min_kept
        self.keep_positives = keep_positives

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        loss = self.base(logits, targets)
        if loss.shape != logits.shape:
            raise ValueError(
                f"base loss must return per-element losses of shape {tuple(logits.shape)}, got {tuple(loss.shape)}"
            )
        return ohem(
            loss, targets, keep_ratio=self.keep_ratio, mode=self.mode,
            min_kept=self.min_kept, keep_positives=self.keep_positives,
        )

    def extra_repr(self) -> str:
        return (
            f"keep_ratio={self.keep_ratio}, mode={self.mode!r}, min_kept={self.min_kept}, "
            f"keep_positives={self.keep_positives}"
        )


# --------------------------------------------------------------------------- registry


def _required(cfg, key: str):
    if not hasattr(cfg, key):
        raise ValueError(f"loss config {cfg!r} has no attribute {key!r}, needed by loss {cfg.name!r}")
    return getattr(cfg, key)


def _build_bce(cfg, pos_weight, weight, reduction) -> nn.Module:
    return BCEWithLogits(pos_weight=pos_weight, weight=weight, reduction=reduction)


def _build_focal(cfg, pos_weight, weight, reduction) -> nn.Module:
    return FocalLoss(
        gamma=_required(cfg, "gamma"), alpha=_required(cfg, "alpha"),
        pos_weight=pos_weight, weight=weight, reduction=reduction,
    )


def _build_asymmetric(cfg, pos_weight, weight, reduction) -> nn.Module:
    return AsymmetricLoss(
        gamma_pos=_required(cfg, "gamma_pos"), gamma_neg=_required(cfg, "gamma_neg"),
        clip=_required(cfg, "clip"), pos_weight=pos_weight, weight=weight, reduction=reduction,
    )


#: name -> builder(cfg, pos_weight, weight, reduction) -> nn.Module
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "bce": _build_bce,
    "focal": _build_focal,
    "asymmetric": _build_asymmetric,
}


def build_loss(cfg, pos_weight: Optional[Tensor] = None, weight: Optional[Tensor] = None) -> nn.Module:
    """Build the training loss from a loss sub-config.

    Reads ``cfg.name`` (a key of :data:`LOSSES`) and the hyperparameters of that loss
    (``gamma``, ``alpha`` for focal; ``gamma_pos``, ``gamma_neg``, ``clip`` for asymmetric; a
    missing one raises). OHEM is on when ``cfg.ohem_keep_ratio < 1`` (absent: off); then
    ``ohem_mode``, ``ohem_min_kept``, ``ohem_keep_positives`` are read (absent: the
    :func:`ohem` defaults) and the base loss is built with ``reduction="none"``. Otherwise the
    loss reduces with ``"mean"``. Whether to pass ``pos_weight`` / ``weight`` is the caller's call.

    Args:
        cfg: the ``loss`` config section (:class:`xmlc.config.LossConfig`, or any object with
            those attributes).
        pos_weight: ``(L,)`` or None. weight: ``(L,)`` or None.

    Returns:
        an ``nn.Module`` (one of :class:`BCEWithLogits`, :class:`FocalLoss`,
        :class:`AsymmetricLoss`, or :class:`OHEMLoss` around one of them).

    Example:
        >>> from types import SimpleNamespace
        >>> build_loss(SimpleNamespace(name="focal", gamma=2.0, alpha=0.25))
        FocalLoss(gamma=2.0, alpha=0.25, reduction='mean')
    """
    name = getattr(cfg, "name", None)
    if name not in LOSSES:
        raise ValueError(f"loss name must be one of {sorted(LOSSES)}, got {name!r}")
    keep_ratio = getattr(cfg, "ohem_keep_ratio", 1.0)
    use_ohem = keep_ratio != 1.0
    base = LOSSES[name](cfg, pos_weight, weight, "none" if use_ohem else "mean")
    if not use_ohem:
        return base
    return OHEMLoss(
        base,
        keep_ratio,
        mode=getattr(cfg, "ohem_mode", "element"),
        min_kept=getattr(cfg, "ohem_min_kept", 1),
        keep_positives=getattr(cfg, "ohem_keep_positives", False),
    )
