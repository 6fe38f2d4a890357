"""Encoders for sparse bag-of-words / tf-idf input, each ending in a linear head over L labels.

Every model maps a batch of sparse rows to logits ``(B, L)``; no loss, no sigmoid inside.
The first layer is :class:`SparseLinear`, an ``nn.EmbeddingBag(mode="sum")`` with
``per_sample_weights``: ``x @ W + b`` computed from the non-zeros of ``x`` only, so a batch
never becomes a dense ``(B, D)`` tensor.

Models are built from the ``model`` config section through the :data:`MODELS` registry;
register your own encoder with ``MODELS["mine"] = my_builder`` where
``my_builder(cfg, num_features, num_labels) -> nn.Module``.

Example::

    >>> import torch
    >>> from xmlc.config import ModelConfig
    >>> model = build_model(ModelConfig(name="mlp", hidden=[64]), num_features=100, num_labels=7)
    >>> indices = torch.tensor([3, 17, 42, 5]); offsets = torch.tensor([0, 3])
    >>> model(indices, offsets, torch.ones(4)).shape
    torch.Size([2, 7])
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SparseLinear", "LinearModel", "MLP", "Ensemble", "MODELS", "ACTIVATIONS", "build_model",
           "init_output_bias", "probabilities", "ensemble_loss"]


class SparseLinear(nn.Module):
    """``y = x @ weight + bias`` for sparse rows ``x`` given as EmbeddingBag inputs.

    Initialised like ``nn.Linear(num_features, out_features)``, so a model built on it
    starts where the same model on dense input would.

    Args:
        num_features: D, the input dimension.
        out_features: H, the output dimension.
        input_dropout: probability of dropping each non-zero input entry while training
            (the kept entries are scaled by ``1 / (1 - p)``, as ``nn.Dropout`` does on dense input).
    """

    def __init__(self, num_features: int, out_features: int, *, input_dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= input_dropout < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {input_dropout!r}")
        self.bag = nn.EmbeddingBag(num_features, out_features, mode="sum")
        self.bias = nn.Parameter(torch.empty(out_features))
        self.input_dropout = input_dropout
        bound = 1.0 / math.sqrt(num_features)
        nn.init.uniform_(self.bag.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    @property
    def weight(self) -> torch.Tensor:
        """(D, H) weight; ``x @ weight`` for dense x."""
        return self.bag.weight

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor | None = None,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``indices`` (nnz,) int64 feature ids, ``offsets`` (B,) row starts, ``weights``
        (nnz,) feature values (None: all ones). A dense float ``indices`` of shape (B, D) is
        accepted too and multiplied directly. Returns (B, H)."""
        if indices.is_floating_point():  # dense (B, D) input
            x = F.dropout(indices, self.input_dropout, self.training)
            return x @ self.bag.weight + self.bias
        if weights is None:
            weights = torch.ones(indices.shape[0], dtype=self.bag.weight.dtype, device=indices.device)
        weights = F.dropout(weights, self.input_dropout, self.training)
        return self.bag(indices, offsets, per_sample_weights=weights) + self.bias


def _split_inputs(x: Any, offsets, weights):
    """Accept a Batch-like object (``.indices``, ``.offsets``, ``.weights``) or the tensors."""
    if offsets is None and hasattr(x, "indices"):
        if getattr(x, "dense", None) is not None:   # dense rows (B, D): one matmul, no EmbeddingBag
            return x.dense, None, None
        return x.indices, x.offsets, x.weights
    return x, offsets, weights


class LinearModel(nn.Module):
    """One linear layer from sparse features to L logits (one-vs-all logistic regression)."""

    def __init__(self, num_features: int, num_labels: int, *, input_dropout: float = 0.0):
        super().__init__()
        self.head = SparseLinear(num_features, num_labels, input_dropout=input_dropout)

    def forward(self, x, offsets=None, weights=None) -> torch.Tensor:
        """x: a Batch, or (indices, offsets, weights) as for :class:`SparseLinear`. Returns (B, L)."""
        return self.head(*_split_inputs(x, offsets, weights))

    @property
    def output_bias(self) -> torch.Tensor:
        return self.head.bias


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}
NORMS: dict[str, Callable[[int], nn.Module]] = {
    "layer": nn.LayerNorm,
    "batch": nn.BatchNorm1d,
    "none": lambda dim: nn.Identity(),
}


def _lookup(registry: dict, name: str, what: str):
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(registry)}")
    return registry[name]


class MLP(nn.Module):
    """Sparse input -> [linear, norm, activation, dropout] x len(hidden) -> linear head (L).

    The first linear layer is a :class:`SparseLinear` (EmbeddingBag), the rest are dense.

    Args:
        num_features: D. num_labels: L. hidden: hidden sizes, at least one.
        dropout: after each hidden block. input_dropout: on the sparse input entries.
        norm: "layer" | "batch" | "none". activation: a key of :data:`ACTIVATIONS`.
    """

    def __init__(self, num_features: int, num_labels: int, hidden: list[int], *,
                 dropout: float = 0.0, input_dropout: float = 0.0, norm: str = "layer",
                 activation: str = "relu"):
        super().__init__()
        if not hidden or any(h <= 0 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of positive sizes, got {hidden!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        make_norm, make_act = _lookup(NORMS, norm, "norm"), _lookup(ACTIVATIONS, activation, "activation")
        self.input = SparseLinear(num_features, hidden[0], input_dropout=input_dropout)
        blocks = []
        for i, size in enumerate(hidden):
            if i > 0:
                blocks.append(nn.Linear(hidden[i - 1], size))
            blocks += [make_norm(size), make_act(), nn.Dropout(dropout)]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(hidden[-1], num_labels)

    def forward(self, x, offsets=None, weights=None) -> torch.Tensor:
        """x: a Batch, or (indices, offsets, weights) as for :class:`SparseLinear`. Returns (B, L)."""
        return self.head(self.body(self.input(*_split_inputs(x, offsets, weights))))

    @property
    def output_bias(self) -> torch.Tensor:
        return self.head.bias


class Ensemble(nn.Module):
    """``M`` independently initialised members trained side by side on the same batches.

    A deep ensemble (Lakshminarayanan et al., NeurIPS 2017): each member gets its own loss
    (:func:`ensemble_loss`, the mean of the member losses, so no gradient flows between
    members) and the ensemble's score is the mean of the member probabilities
    (:func:`probabilities`). Members differ by initialisation and dropout masks.

    ``forward`` returns the member logits ``(M, B, L)``; everything in xmlc that turns
    logits into a loss or a score goes through the two functions above, which accept
    ``(B, L)`` and ``(M, B, L)`` alike.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an Ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x, offsets=None, weights=None) -> torch.Tensor:
        """Returns member logits (M, B, L)."""
        return torch.stack([member(x, offsets, weights) for member in self.members])


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Scores from logits: ``sigmoid`` of (B, L), or the member mean of (M, B, L); float32 (B, L)."""
    p = torch.sigmoid(logits.float())
    return p.mean(dim=0) if p.dim() == 3 else p


def ensemble_loss(loss_fn: Callable, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``loss_fn(logits, targets)`` for (B, L) logits; the mean of the member losses for (M, B, L)."""
    if logits.dim() == 3:
        return torch.stack([loss_fn(member, targets) for member in logits.float()]).mean()
    return loss_fn(logits.float(), targets)


def build_linear(cfg, num_features: int, num_labels: int) -> nn.Module:
    return LinearModel(num_features, num_labels, input_dropout=cfg.input_dropout)


def build_mlp(cfg, num_features: int, num_labels: int) -> nn.Module:
    return MLP(num_features, num_labels, list(cfg.hidden), dropout=cfg.dropout,
               input_dropout=cfg.input_dropout, norm=cfg.norm, activation=cfg.activation)


#: Name -> builder ``(model_cfg, num_features, num_labels) -> nn.Module``. Add your own.
MODELS: dict[str, Callable[..., nn.Module]] = {"linear": build_linear, "mlp": build_mlp}


def build_model(cfg, num_features: int, num_labels: int) -> nn.Module:
    """Build the encoder named ``cfg.name`` from the ``model`` config section.

    Args:
        cfg: the ``model`` section (:class:`xmlc.config.ModelConfig` or any object with its fields).
        num_features: D. num_labels: L.

    Returns:
        An ``nn.Module`` with ``forward(batch) -> logits (B, L)``; with ``cfg.ensemble = M > 1``
        an :class:`Ensemble` of M such encoders, ``forward(batch) -> (M, B, L)``.
    """
    builder = _lookup(MODELS, cfg.name, "model")
    ensemble = getattr(cfg, "ensemble", 1)
    if ensemble < 1:
        raise ValueError(f"model.ensemble must be >= 1, got {ensemble!r}")
    if ensemble == 1:
        return builder(cfg, num_features, num_labels)
    return Ensemble([builder(cfg, num_features, num_labels) for _ in range(ensemble)])


def init_output_bias(model: nn.Module, prior: torch.Tensor) -> None:
    """Set the output bias to ``log(p / (1 - p))`` of the label priors ``p`` (L,) (Lin et al. 2017).

    The model must expose its head bias as ``model.output_bias`` (the built-in ones do).
    """
    for member in (model.members if isinstance(model, Ensemble) else [model]):
        bias = getattr(member, "output_bias", None)
        if bias is None:
            raise ValueError(f"{type(member).__name__} has no `output_bias`; cannot use output_bias='prior'")
        p = prior.clamp(1e-6, 1 - 1e-6).to(bias.dtype)
        with torch.no_grad():
            bias.copy_(torch.log(p) - torch.log1p(-p))
