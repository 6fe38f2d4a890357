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

Focal and asymmetric losses share one kernel with a closed-form backward
(:func:`xmlc.kernels.focal.focal`, the published formulas under autograd beside it); the
element mode of :func:`ohem` selects with :func:`xmlc.kernels.select.top_k_mask` (a radix
select, a stable sort beside it). This module validates the arguments and calls them.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmlc.kernels.focal import compute_dtype, focal as _focal_kernel
from xmlc.kernels.select import RANK_FIRST, top_k_mask

__all__ = ["bce_with_logits", "focal_loss", "asymmetric_loss", "ohem", "BCEWithLogits", "FocalLoss", "AsymmetricLoss",
           "OHEMLoss", "LOSSES", "build_loss"]

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


# --------------------------------------------------------------------------- BCE


def bce_with_logits(logits: Tensor, targets: Tensor, *, pos_weight: Optional[Tensor] = None,
                    weight: Optional[Tensor] = None, reduction: Reduction = "mean") -> Tensor:
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
    dtype = compute_dtype(logits)
    return F.binary_cross_entropy_with_logits(
        logits.to(dtype), targets.to(dtype), weight=None if weight is None else weight.to(dtype),
        pos_weight=None if pos_weight is None else pos_weight.to(dtype), reduction=reduction,
    )


# --------------------------------------------------------------------------- focal, asymmetric


def _focal_apply(logits, targets, *, gamma_pos, gamma_neg, clip, alpha, pos_weight, weight, reduction):
    _check_reduction(reduction)
    _check_tensors(logits, targets, pos_weight, weight)
    return _focal_kernel(
        logits, targets, gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, alpha=alpha,
        pos_weight=pos_weight, weight=weight, reduction=reduction,
    )


def focal_loss(logits: Tensor, targets: Tensor, *, gamma: float = 2.0, alpha: Optional[float] = None,
               pos_weight: Optional[Tensor] = None, weight: Optional[Tensor] = None,
               reduction: Reduction = "mean") -> Tensor:
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
        logits, targets, gamma_pos=gamma, gamma_neg=gamma, clip=0.0, alpha=alpha,
        pos_weight=pos_weight, weight=weight, reduction=reduction,
    )


def asymmetric_loss(logits: Tensor, targets: Tensor, *, gamma_pos: float = 0.0, gamma_neg: float = 4.0,
                    clip: float = 0.05, pos_weight: Optional[Tensor] = None, weight: Optional[Tensor] = None,
                    reduction: Reduction = "mean") -> Tensor:
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
        logits, targets, gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, alpha=None,
        pos_weight=pos_weight, weight=weight, reduction=reduction,
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


def _check_ohem_tensors(loss: Tensor, targets: Tensor) -> None:
    if not isinstance(loss, Tensor) or loss.dim() != 2:
        raise ValueError(f"loss must be a 2-D (N, L) tensor (reduction='none'), got {getattr(loss, 'shape', type(loss))}")
    if not isinstance(targets, Tensor) or targets.shape != loss.shape:
        raise ValueError(
            f"targets shape {tuple(getattr(targets, 'shape', ()))} does not match loss shape {tuple(loss.shape)}"
        )
    if loss.numel() == 0:
        raise ValueError(f"loss is empty, shape {tuple(loss.shape)}")


def _top_rows(row_loss: Tensor, k: int) -> Tensor:
    """0/1 vector (N,) of the ``k`` rows with the largest ``row_loss``, ties to the lowest row."""
    order = torch.sort(row_loss, descending=True, stable=True).indices
    rows = torch.zeros(row_loss.shape[0], dtype=row_loss.dtype, device=row_loss.device)
    rows[order[:k]] = 1.0
    return rows


def _kept_mask(loss: Tensor, pos: Optional[Tensor], k: int, mode: str) -> tuple[Tensor, int]:
    """The 0/1 mask ``(N, L)`` of the kept elements and their number (no gradient)."""
    if mode == "element":
        values = loss.detach()
        n_kept = k
        if pos is not None:  # positives rank above every loss; then the top max(k, P)
            n_kept = max(k, int(pos.sum()))
            values = torch.addcmul(values, pos, pos, value=RANK_FIRST[values.dtype])
        return top_k_mask(values, n_kept), n_kept
    rows = _top_rows(loss.detach().sum(dim=1), k)
    mask = torch.maximum(pos, rows.unsqueeze(1))
    return mask, int(mask.sum())


def ohem(loss: Tensor, targets: Tensor, *, keep_ratio: float, mode: OhemMode = "element", min_kept: int = 1,
         keep_positives: bool = False) -> Tensor:
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

    Element mode selects with :func:`xmlc.kernels.select.top_k_mask` (no sort); example mode
    sorts the N row sums. The kept sum is a dot product with the 0/1 mask.

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
    _check_ohem_tensors(loss, targets)
    n = loss.numel() if mode == "element" else loss.shape[0]
    k = min(max(math.ceil(keep_ratio * n), min_kept), n)
    if k >= n:
        return loss.mean()
    if mode == "example" and not keep_positives:
        row_loss = loss.sum(dim=1)
        with torch.no_grad():
            rows = _top_rows(row_loss.detach(), k)
        return torch.dot(row_loss, rows) / (k * loss.shape[1])
    with torch.no_grad():
        pos = targets.to(loss.dtype) if keep_positives else None  # binary: its own 0/1 mask
        mask, n_kept = _kept_mask(loss, pos, k, mode)
    return torch.dot(loss.reshape(-1), mask.reshape(-1)) / n_kept


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

    def __init__(self, *, gamma: float = 2.0, alpha: Optional[float] = None, pos_weight: Optional[Tensor] = None,
                 weight: Optional[Tensor] = None, reduction: Reduction = "mean") -> None:
        super().__init__(pos_weight, weight, reduction)
        self.gamma = _check_nonneg("gamma", gamma)
        self.alpha = _check_alpha(alpha)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return focal_loss(logits, targets, gamma=self.gamma, alpha=self.alpha, pos_weight=self.pos_weight,
                          weight=self.weight, reduction=self.reduction)

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

    def __init__(self, *, gamma_pos: float = 0.0, gamma_neg: float = 4.0, clip: float = 0.05,
                 pos_weight: Optional[Tensor] = None, weight: Optional[Tensor] = None,
                 reduction: Reduction = "mean") -> None:
        super().__init__(pos_weight, weight, reduction)
        self.gamma_pos = _check_nonneg("gamma_pos", gamma_pos)
        self.gamma_neg = _check_nonneg("gamma_neg", gamma_neg)
        self.clip = _check_clip(clip)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return asymmetric_loss(logits, targets, gamma_pos=self.gamma_pos, gamma_neg=self.gamma_neg, clip=self.clip,
                               pos_weight=self.pos_weight, weight=self.weight, reduction=self.reduction)

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

    def __init__(self, base: nn.Module, keep_ratio: float, *, mode: OhemMode = "element", min_kept: int = 1,
                 keep_positives: bool = False) -> None:
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
        return ohem(loss, targets, keep_ratio=self.keep_ratio, mode=self.mode, min_kept=self.min_kept,
                    keep_positives=self.keep_positives)

    def extra_repr(self) -> str:
        return (f"keep_ratio={self.keep_ratio}, mode={self.mode!r}, min_kept={self.min_kept}, "
                f"keep_positives={self.keep_positives}")


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
    return AsymmetricLoss(   # gamma_pos and clip: the section may set them (library use), else as published
        gamma_pos=getattr(cfg, "gamma_pos", 0.0), gamma_neg=_required(cfg, "gamma_neg"),
        clip=getattr(cfg, "clip", 0.05), pos_weight=pos_weight, weight=weight, reduction=reduction,
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
    (``gamma``, ``alpha`` for focal; ``gamma_neg`` for asymmetric, a missing one raises, with
    ``gamma_pos`` and ``clip`` optional). OHEM is on when ``cfg.ohem < 1`` (absent: off), keeping
    that share of the entries in :func:`ohem`'s element mode (``ohem_mode``, ``ohem_min_kept``,
    ``ohem_keep_positives`` are read when the section has them), and the base loss is built with
    ``reduction="none"``. Otherwise the loss reduces with ``"mean"``. Whether to pass ``pos_weight`` / ``weight`` is the caller's call.

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
    keep_ratio = getattr(cfg, "ohem", 1.0)
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
