"""Encoders for sparse bag-of-words / tf-idf input, each ending in a linear head over L labels.

Every model maps a batch of sparse rows to logits ``(B, L)`` (``(M, B, L)`` for an ensemble
of M members); no loss, no sigmoid inside. The first layer is :class:`SparseLinear`:
``x @ W + b`` computed from the non-zeros of ``x`` only (an ``embedding_bag``), so a batch
never becomes a dense ``(B, D)`` tensor, and with ``bag.sparse = True`` its gradient holds
only the rows of ``W`` the batch touched. The members of an ensemble run as one computation:
one lookup into a ``(D, M * H)`` table, then batched matmuls (:class:`MemberLinear`). The
sparse product and the CPU dropout mask are kernels (:mod:`xmlc.kernels.bag`,
:mod:`xmlc.kernels.dropout`), each beside its plain reference.

:class:`WideDeep` (``wide_deep``, the text recipe) puts a linear part beside a bag of embeddings
shared by the ensemble's heads, so its memory grows with D (L + H), not with D x H x M; its sizes
follow from D, L and M (:func:`auto_hidden`).

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

import contextlib
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from xmlc.kernels.bag import IdOrder, dense_input, sparse_bag
from xmlc.kernels.dropout import dropout

__all__ = ["dropout", "Dropout", "SparseLinear", "sparse_bag", "MemberLinear", "MemberLayerNorm", "MemberBatchNorm",
           "LinearModel", "MLP", "WideDeep", "Ensemble", "MODELS", "ACTIVATIONS", "NORMS", "build_model", "init_output_bias",
           "probabilities", "ensemble_loss", "auto_hidden", "hidden_sizes", "WIDE_LR", "weights_to_load"]

#: False inside :func:`weights_to_load`: the large tables are allocated, not initialised.
_INIT = True


@contextlib.contextmanager
def weights_to_load():
    """Build models whose weights are about to be loaded: their input tables and heads are
    allocated but not randomly initialised (at D = 152,000 and L = 593 the initialisation took
    1.9 s of a one-string ``predict``, and the load overwrites it). Everything else, training
    included, initialises as always."""
    global _INIT
    before, _INIT = _INIT, False
    try:
        yield
    finally:
        _INIT = before


class Dropout(nn.Dropout):
    """``nn.Dropout`` computed by :func:`dropout` (a cheaper mask on CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class SparseLinear(nn.Module):
    """``y = x @ weight + bias`` for sparse rows ``x``, for ``members`` independent layers at once.

    The ``members`` weight matrices ``(D, H)`` sit side by side in one ``(D, members * H)``
    table, so one sparse lookup serves every member; member ``m``'s matrix is
    ``weight.view(D, members, H)[:, m]``. Each is initialised like ``nn.Linear(D, H)``.

    The table is stored in ``self.bag``, an ``nn.EmbeddingBag`` that holds the parameter and its
    ``sparse`` flag (as in torch: ``bag.sparse = True`` makes the gradient a sparse COO tensor
    over the rows of the table present in the batch, which DistributedDataParallel and
    :class:`xmlc.optim.AdamW` know how to handle); the product itself is :func:`xmlc.kernels.bag.sparse_bag`.

    Args:
        num_features: D, the input dimension.
        out_features: H, the output dimension of each member.
        members: M, the number of independent layers.
        input_dropout: probability of dropping each non-zero input entry while training, drawn
            independently per member (the kept entries are scaled by ``1 / (1 - p)``, as
            ``nn.Dropout`` does on dense input).
    """

    def __init__(self, num_features: int, out_features: int, *, members: int = 1, input_dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= input_dropout < 1.0:
            raise ValueError(f"input_dropout must be in [0, 1), got {input_dropout!r}")
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members!r}")
        self.members, self.out_features = members, out_features
        # nn.EmbeddingBag draws N(0, 1) for a table it allocates; given one (under weights_to_load) it does not
        table = None if _INIT else torch.empty(num_features, members * out_features)
        self.bag = nn.EmbeddingBag(num_features, members * out_features, mode="sum", _weight=table)
        self.bias = nn.Parameter(torch.empty(members, out_features))
        self.input_dropout = input_dropout
        if _INIT:
            bound = 1.0 / math.sqrt(num_features)
            nn.init.uniform_(self.bag.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def weight(self) -> torch.Tensor:
        """(D, M * H) weight; ``x @ weight[:, m*H:(m+1)*H]`` is member m for dense x."""
        return self.bag.weight

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor | None = None,
                weights: torch.Tensor | None = None, *, order: IdOrder | None = None) -> torch.Tensor:
        """Args: ``indices`` (nnz,) int64 feature ids, ``offsets`` (B,) row starts, ``weights``
        (nnz,) feature values (None: all ones); ``order``: an :class:`xmlc.kernels.bag.IdOrder`
        shared with other tables over the same ids (their backward sorts them once). A dense
        float ``indices`` of shape (B, D) is accepted too and multiplied directly. Returns (M, B, H)."""
        M, weight = self.members, self.bag.weight
        drop = self.input_dropout if self.training else 0.0
        if indices.is_floating_point():  # dense (B, D) input
            x = indices.to(weight.dtype).expand(M, -1, -1)
            if drop:   # an independent mask per member
                x = dropout(x, drop)
            return dense_input(weight, x, sparse=self.bag.sparse) + self.bias[:, None, :]
        if weights is None:
            weights = torch.ones(indices.shape[0], dtype=weight.dtype, device=indices.device)
        w = weights.to(weight.dtype).expand(M, -1)
        if drop:
            w = dropout(w, drop)
        return sparse_bag(weight, indices, offsets, w, sparse=self.bag.sparse, order=order) + self.bias[:, None, :]


def _split_inputs(x: Any, offsets, weights):
    """Accept a Batch-like object (``.indices``, ``.offsets``, ``.weights``) or the tensors."""
    if offsets is None and hasattr(x, "indices"):
        if getattr(x, "dense", None) is not None:   # dense rows (B, D): one matmul, no EmbeddingBag
            return x.dense, None, None
        return x.indices, x.offsets, x.weights
    return x, offsets, weights


class MemberLinear(nn.Module):
    """``M`` independent ``nn.Linear(in_features, out_features)`` layers as one batched matmul.

    ``weight`` (M, in, out) (member m's ``nn.Linear.weight`` is ``weight[m].T``), ``bias`` (M, out);
    initialised like ``nn.Linear``. Maps (M, B, in) to (M, B, out) with ``torch.baddbmm``.
    """

    def __init__(self, in_features: int, out_features: int, *, members: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(members, out_features))
        if _INIT:
            bound = 1.0 / math.sqrt(in_features)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias[:, None, :], x, self.weight)


class MemberLayerNorm(nn.Module):
    """``nn.LayerNorm(dim)`` for each of M members: (M, B, dim), a per-member affine (M, dim)."""

    def __init__(self, dim: int, members: int = 1, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, dim))
        self.bias = nn.Parameter(torch.zeros(members, dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias[:, None, :], F.layer_norm(x, x.shape[-1:], eps=self.eps), self.weight[:, None, :])


class MemberBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d(dim)`` for each of M members: (M, B, dim), statistics per member and unit."""

    def __init__(self, dim: int, members: int = 1):
        super().__init__(members * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        M, B, H = x.shape
        return super().forward(x.transpose(0, 1).reshape(B, M * H)).view(B, M, H).transpose(0, 1)


class LinearModel(nn.Module):
    """One linear layer from sparse features to L logits (one-vs-all logistic regression).

    With ``members = M > 1``, M independent such layers (an ensemble) in one computation.
    """

    def __init__(self, num_features: int, num_labels: int, *, input_dropout: float = 0.0, members: int = 1):
        super().__init__()
        self.members = members
        self.head = SparseLinear(num_features, num_labels, members=members, input_dropout=input_dropout)

    def forward(self, x, offsets=None, weights=None) -> torch.Tensor:
        """x: a Batch, or (indices, offsets, weights) as for :class:`SparseLinear`.
        Returns (B, L); (M, B, L) with M > 1 members."""
        out = self.head(*_split_inputs(x, offsets, weights))
        return out[0] if self.members == 1 else out

    @property
    def output_bias(self) -> torch.Tensor:
        """(M, L) output bias."""
        return self.head.bias


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}
#: Name -> ``(dim, members) -> module`` normalising (M, B, dim) per member.
NORMS: dict[str, Callable[[int, int], nn.Module]] = {
    "layer": MemberLayerNorm,
    "batch": MemberBatchNorm,
    "none": lambda dim, members: nn.Identity(),
}


def _lookup(registry: dict, name: str, what: str):
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(registry)}")
    return registry[name]


class MLP(nn.Module):
    """Sparse input -> [linear, norm, activation, dropout] x len(hidden) -> linear head (L).

    The first linear layer is a :class:`SparseLinear`, the rest are :class:`MemberLinear`.
    With ``members = M > 1`` the module is a deep ensemble of M independently initialised
    MLPs computed together: one sparse lookup into a (D, M * H) table, then batched matmuls;
    dropout masks are drawn independently per member, norms keep per-member statistics and
    affine parameters. It computes what M separate ``MLP(members=1)`` would (tested).

    Args:
        num_features: D. num_labels: L. hidden: hidden sizes, at least one.
        dropout: after each hidden block. input_dropout: on the sparse input entries.
        norm: "layer" | "batch" | "none". activation: a key of :data:`ACTIVATIONS`.
        members: M, the ensemble size.
    """

    def __init__(self, num_features: int, num_labels: int, hidden: list[int], *,
                 dropout: float = 0.0, input_dropout: float = 0.0, norm: str = "layer",
                 activation: str = "relu", members: int = 1):
        super().__init__()
        if not hidden or any(h <= 0 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of positive sizes, got {hidden!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        make_norm, make_act = _lookup(NORMS, norm, "norm"), _lookup(ACTIVATIONS, activation, "activation")
        self.members = members
        self.input = SparseLinear(num_features, hidden[0], members=members, input_dropout=input_dropout)
        blocks = []
        for i, size in enumerate(hidden):
            if i > 0:
                blocks.append(MemberLinear(hidden[i - 1], size, members=members))
            blocks += [make_norm(size, members), make_act(), Dropout(dropout)]
        self.body = nn.Sequential(*blocks)
        self.head = MemberLinear(hidden[-1], num_labels, members=members)

    def forward(self, x, offsets=None, weights=None) -> torch.Tensor:
        """x: a Batch, or (indices, offsets, weights) as for :class:`SparseLinear`.
        Returns (B, L); (M, B, L) with M > 1 members."""
        out = self.head(self.body(self.input(*_split_inputs(x, offsets, weights))))
        return out[0] if self.members == 1 else out

    @property
    def output_bias(self) -> torch.Tensor:
        """(M, L) output bias."""
        return self.head.bias


class WideDeep(nn.Module):
    """Wide & deep (Cheng et al., 2016) on sparse rows: ``x @ W + b + head_m(relu(x @ E + c))``.

    The wide part ``W`` (D, L) is a one-vs-all linear model: it carries the evidence of rare,
    high-D features. It starts at zero and is updated by column-normalised SGD at ``wide_lr``
    (set on its table as ``bag.sgd_lr``, read by :func:`xmlc.optim.build_optimizer`): each
    label's column steps along its gradient, which keeps the tf-idf geometry of the evidence
    (Adam's per-coordinate steps move every touched weight by about the same amount, which
    ranks the rare labels worse), by about ``wide_lr`` in norm whatever the label's frequency.
    The deep part is a bag of embeddings ``E`` (D, H) (fastText-style) under one hidden ReLU
    layer, shared by the ``members`` heads ``(H, L)`` (:class:`MemberLinear`), each with its own
    hidden dropout mask: an ensemble whose memory does not grow as D x M.

    Args:
        num_features: D. num_labels: L. hidden: H, the embedding width.
        dropout: on the hidden layer (per member). input_dropout: on the sparse input entries
            (one mask, both tables). members: M heads. wide_lr: the rate of ``W`` (:data:`WIDE_LR` in the recipe).
    """

    def __init__(self, num_features: int, num_labels: int, hidden: int, *, dropout: float = 0.0,
                 input_dropout: float = 0.0, members: int = 1, wide_lr: float | None = None):
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be a positive size, got {hidden!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.members, self.num_labels, self.input_dropout = members, num_labels, input_dropout
        self.wide = SparseLinear(num_features, num_labels)
        self.input = SparseLinear(num_features, hidden)
        self.wide.bag.sgd_lr = wide_lr
        self.dropout = Dropout(dropout)
        self.head = MemberLinear(hidden, num_labels, members=members)
        if _INIT:   # the linear part starts at zero, and its bias is the output bias
            with torch.no_grad():
                for p in (self.wide.weight, self.wide.bias, self.head.bias):
                    p.zero_()

    def forward(self, x, offsets=None, weights=None) -> torch.Tensor:
        """x: a Batch, or (indices, offsets, weights) as for :class:`SparseLinear`.
        Returns (B, L); (M, B, L) with M > 1 members."""
        indices, offsets, weights = _split_inputs(x, offsets, weights)
        if self.training and self.input_dropout and not indices.is_floating_point():
            if weights is None:
                weights = torch.ones(indices.shape[0], dtype=self.wide.weight.dtype, device=indices.device)
            weights = dropout(weights, self.input_dropout)   # one mask for both tables
        order = None if indices.is_floating_point() else IdOrder()           # one sort of the ids for both
        wide = self.wide(indices, offsets, weights, order=order)[0]           # (B, L)
        deep = F.relu(self.input(indices, offsets, weights, order=order)[0])  # (B, H)
        deep = self.dropout(deep.expand(self.members, -1, -1))                # a mask per member
        logits = self.head(deep) + wide
        return logits[0] if self.members == 1 else logits

    @property
    def output_bias(self) -> torch.Tensor:
        """(1, L) output bias (the wide part's), shared by the members."""
        return self.wide.bias


class Ensemble(nn.Module):
    """``M`` independently initialised members trained side by side on the same batches.

    A deep ensemble (Lakshminarayanan et al., NeurIPS 2017): each member gets its own loss
    (:func:`ensemble_loss`, the mean of the member losses, so no gradient flows between
    members) and the ensemble's score is the mean of the member probabilities
    (:func:`probabilities`). Members differ by initialisation and dropout masks.

    The built-in models compute all members in one pass (``members=M``); this wrapper runs
    M separate modules in turn, for registered models that do not.

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


def probabilities(logits: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
    """Scores from logits: ``sigmoid`` of (B, L), or the member mean of (M, B, L); float32 (B, L).

    ``members`` (B,) int64, for (M, B, L) logits: row b scored by member ``members[b]`` alone
    (the out-of-fold scores of ``train.final: crossfit``) instead of the mean.
    """
    if logits.dim() == 3 and members is not None:
        logits = logits[members.to(logits.device), torch.arange(logits.shape[1], device=logits.device)]
    p = torch.sigmoid(logits.float())
    return p.mean(dim=0) if p.dim() == 3 else p


def ensemble_loss(loss_fn: Callable, logits: torch.Tensor, targets: torch.Tensor,
                  keep: torch.Tensor | None = None) -> torch.Tensor:
    """``loss_fn(logits, targets)`` for (B, L) logits; the mean of the member losses for (M, B, L).

    ``keep`` (M, B) bool (CPU): member m's loss covers only the rows ``keep[m]`` holds (its mean
    over them, so a member trains at the same loss scale whatever it leaves out); a member
    that keeps no row of the batch adds 0 and gets no gradient. (B, L) logits take (1, B).
    """
    members = logits.float() if logits.dim() == 3 else logits.float()[None]
    parts = []
    for m, member in enumerate(members):
        if keep is None or bool(keep[m].all()):
            parts.append(loss_fn(member, targets))
            continue
        rows = keep[m].nonzero().squeeze(1).to(member.device)
        parts.append(loss_fn(member[rows], targets[rows]) if rows.numel() else member.sum() * 0.0)
    return torch.stack(parts).mean() if logits.dim() == 3 else parts[0]


def build_linear(cfg, num_features: int, num_labels: int) -> nn.Module:
    return LinearModel(num_features, num_labels, input_dropout=cfg.input_dropout,
                       members=getattr(cfg, "ensemble", 1))


def build_mlp(cfg, num_features: int, num_labels: int) -> nn.Module:
    return MLP(num_features, num_labels, hidden_sizes(cfg, num_features, num_labels), dropout=cfg.dropout,
               input_dropout=cfg.input_dropout, norm=cfg.norm,
               members=getattr(cfg, "ensemble", 1))


def build_wide_deep(cfg, num_features: int, num_labels: int) -> nn.Module:
    return WideDeep(num_features, num_labels, hidden_sizes(cfg, num_features, num_labels)[0], dropout=cfg.dropout,
                    input_dropout=cfg.input_dropout, members=getattr(cfg, "ensemble", 1),
                    wide_lr=WIDE_LR)


#: The wide part's rate: each label's column of ``W`` moves about this far (L2 norm) a step at
#: the schedule's peak (column-normalised SGD, :func:`xmlc.optim._column_sgd_step`): a unit
#: step moves the logit of an L2-normalised row by at most 1, whatever L, B or the label's
#: frequency.
WIDE_LR = 1.0


def auto_hidden(num_features: int, num_labels: int, members: int = 1) -> int:
    """``model.hidden: auto``: H = 2 D L / (D + M L), a multiple of 8 in [16, 512].

    The deep part (a (D, H) table and M (H, L) heads) then holds about twice the weights of a
    linear model (D, L), so a wide & deep model is at most about 3 D L weights and its memory
    does not grow with M.
    """
    h = 2 * num_features * num_labels / (num_features + members * num_labels)
    return int(min(512, max(16, 8 * math.floor(h / 8))))


def hidden_sizes(cfg, num_features: int, num_labels: int) -> list[int]:
    """The hidden sizes of ``model.hidden``; ``auto`` -> ``[auto_hidden(D, L, M)]``."""
    if cfg.hidden == "auto":
        return [auto_hidden(num_features, num_labels, getattr(cfg, "ensemble", 1))]
    return list(cfg.hidden)


# these build all `cfg.ensemble` members themselves, as one module
build_linear.builds_ensemble = build_mlp.builds_ensemble = build_wide_deep.builds_ensemble = True

#: Name -> builder ``(model_cfg, num_features, num_labels) -> nn.Module``. Add your own; a
#: builder with the attribute ``builds_ensemble = True`` returns all ``model_cfg.ensemble``
#: members as one module (``forward -> (M, B, L)``), any other is called M times and wrapped
#: in :class:`Ensemble`.
MODELS: dict[str, Callable[..., nn.Module]] = {"linear": build_linear, "mlp": build_mlp,
                                               "wide_deep": build_wide_deep}


def build_model(cfg, num_features: int, num_labels: int) -> nn.Module:
    """Build the encoder named ``cfg.name`` from the ``model`` config section.

    Args:
        cfg: the ``model`` section (:class:`xmlc.config.ModelConfig` or any object with its fields).
        num_features: D. num_labels: L.

    Returns:
        An ``nn.Module`` with ``forward(batch) -> logits (B, L)``; with ``cfg.ensemble = M > 1``
        M such encoders, ``forward(batch) -> (M, B, L)``: for the built-in models one module
        computing all members together, for others an :class:`Ensemble`.
    """
    builder = _lookup(MODELS, cfg.name, "model")
    ensemble = getattr(cfg, "ensemble", 1)
    if ensemble < 1:
        raise ValueError(f"model.ensemble must be >= 1, got {ensemble!r}")
    if ensemble == 1 or getattr(builder, "builds_ensemble", False):
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
