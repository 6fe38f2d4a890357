"""Optimizer, learning-rate schedule and gradient clipping, with row-sparse first-layer updates.

The input table of a model on sparse text features is ``(D, M * H)`` with D = 10^4-10^6, yet a
batch of 128 documents touches a few thousand of its rows. For a table of at least
:data:`SPARSE_MIN_ROWS` rows (:func:`use_sparse`), :func:`build_optimizer` sets ``bag.sparse = True`` on every :class:`xmlc.models.SparseLinear`,
so the table's gradient is a sparse COO tensor over the touched rows only, and :class:`AdamW`
updates just those rows; every other parameter gets torch's fused AdamW as before.

**Lazy rows** (the meaning of the hyperparameters for the table): a row's Adam moments,
its decoupled weight decay and its learning-rate step are applied at the steps where the row
has a gradient, with the learning rate of that step (from the schedule) and the bias
correction of the global step count, as TensorFlow's ``LazyAdam`` and ``torch.optim.SparseAdam``
do. At a step where a row is absent, dense AdamW would still move it (its first moment
decays but is not zero) and decay it; the lazy update leaves it exactly as it is. For a row
present at every step the two are the same update (tested). With ``weight_decay = 0`` (the
text recipe) the only difference is the skipped momentum drift of absent rows.

Example::

    >>> from xmlc.config import ModelConfig, OptimConfig
    >>> from xmlc.models import build_model
    >>> model = build_model(ModelConfig(hidden=[8]), num_features=50_000, num_labels=3)
    >>> optimizer = build_optimizer(OptimConfig(), model)
    >>> model.input.bag.sparse, type(optimizer).__name__
    (True, 'AdamW')
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["AdamW", "build_optimizer", "build_scheduler", "clip_grad_norm_", "use_sparse", "optimizer_state_bytes",
           "optimizer_state_report"]


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` (fused where supported) that also takes row-sparse gradients.

    A parameter whose ``.grad`` is a sparse COO tensor with one sparse dimension (rows) gets
    the AdamW update on the rows present in it only (lazy rows, see the module docstring);
    its state is the same ``step``, ``exp_avg`` and ``exp_avg_sq`` as torch's, so
    ``state_dict`` is AdamW's. Dense gradients go through ``torch.optim.AdamW.step``.

    The row update gathers a chunk of rows of the parameter and both moments, applies torch's
    fused AdamW kernel to them while the chunk is in cache and writes the rows back, on the
    calling thread (on CUDA, all rows in one chunk); the rows come sorted and unique from
    :func:`xmlc.kernels.bag.sparse_bag`, so nothing is re-coalesced.
    ``amsgrad``, ``maximize`` and ``capturable`` are not supported for sparse rows.
    """

    #: rows per chunk (CPU) are chosen so a chunk of one tensor holds about this many elements
    #: (1 MiB of float32: the chunk's rows of the parameter, both moments and the gradient stay in cache)
    chunk_elements = 1 << 18

    @torch.no_grad()
    def step(self, closure=None):
        sparse = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and (p.grad.is_sparse or group.get("sgd")):
                    sparse.append((group, p, p.grad))
                    p.grad = None          # hidden from torch's dense step
        try:
            loss = super().step(closure)
        finally:
            for _, p, grad in sparse:
                p.grad = grad
        for group, p, grad in sparse:
            if group.get("sgd"):
                _sgd_step(p, grad, float(group["lr"]))
            else:
                self._row_step(group, p, grad)
        return loss

    def _row_step(self, group: dict, p: torch.Tensor, grad: torch.Tensor) -> None:
        if group["amsgrad"] or group["maximize"]:
            raise ValueError("xmlc.optim.AdamW: amsgrad and maximize are not supported for sparse gradients")
        if grad.sparse_dim() != 1:
            raise ValueError(f"xmlc.optim.AdamW: expected a row-sparse gradient (sparse_dim 1), "
                             f"got sparse_dim {grad.sparse_dim()}")
        rows, values = _rows_and_values(grad)
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        lr, (beta1, beta2), eps, wd = float(group["lr"]), group["betas"], group["eps"], group["weight_decay"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        n = rows.shape[0]
        row_numel = max(values[0].numel(), 1) if n else 1
        chunk = n if p.device.type != "cpu" else max(1, self.chunk_elements // row_numel)
        with _one_cpu_thread(p.device.type == "cpu"):
            for start in range(0, n, chunk):
                r, g = rows[start:start + chunk], values[start:start + chunk]
                param, m, v = p.index_select(0, r), exp_avg.index_select(0, r), exp_avg_sq.index_select(0, r)
                _adamw_rows(param, g, m, v, state["step"], lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                            weight_decay=wd)
                p.index_copy_(0, r, param)
                exp_avg.index_copy_(0, r, m)
                exp_avg_sq.index_copy_(0, r, v)


def _sgd_step(p: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
    """``p -= lr * grad`` (plain SGD, no state); a row-sparse ``grad`` touches its rows only."""
    if grad.is_sparse:
        rows, values = _rows_and_values(grad)
        p.index_add_(0, rows, values.to(p.dtype), alpha=-lr)
    else:
        p.add_(grad, alpha=-lr)


@contextlib.contextmanager
def _one_cpu_thread(enabled: bool):
    """Run torch's CPU ops on the calling thread only, inside the block (the thread count is restored).

    The row update is a few hundred small, memory-bound ops; on a busy machine each parallel
    region waits for a second thread to be scheduled, which costs more than the ops themselves.
    """
    threads = torch.get_num_threads()
    if not enabled or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _adamw_rows(param, grad, exp_avg, exp_avg_sq, step: torch.Tensor, *, lr: float, beta1: float,
                beta2: float, eps: float, weight_decay: float) -> None:
    """One AdamW step in place on gathered rows: torch's fused kernel (one pass) where it exists,
    else torch.optim.AdamW's single-tensor formula."""
    if hasattr(torch, "_fused_adamw_"):
        torch._fused_adamw_([param], [grad], [exp_avg], [exp_avg_sq], [], [step], lr=lr, beta1=beta1,
                            beta2=beta2, weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=False)
        return
    t = float(step)
    param.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** t)).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1 ** t))


def _rows_and_values(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted unique row ids (U,), their gradient rows (U, ...)) of a row-sparse COO gradient.

    Autograd may drop the "coalesced" flag of a gradient that is coalesced; sorted, unique row
    ids are recognised as such instead of being sorted again. Anything else (e.g. after a
    DDP all-reduce, which concatenates the processes' rows) is coalesced.
    """
    if not grad.is_coalesced():
        rows = grad._indices()[0]
        if rows.numel() < 2 or bool((rows[1:] > rows[:-1]).all()):
            grad._coalesced_(True)
        else:
            grad = grad.coalesce()
    return grad._indices()[0], grad._values()


def clip_grad_norm_(parameters, max_norm: float | None) -> torch.Tensor:
    """``nn.utils.clip_grad_norm_`` (2-norm) that also takes row-sparse gradients.

    Returns the total norm before clipping; ``max_norm=None`` only measures it. A sparse
    gradient's norm is that of its rows (coalesced first where needed), and clipping scales them in place.
    """
    grads = []
    for p in parameters:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            rows, values = _rows_and_values(p.grad)
            p.grad = torch.sparse_coo_tensor(rows[None], values, p.grad.shape, is_coalesced=True,
                                             check_invariants=False)
            grads.append(values)
        else:
            grads.append(p.grad)
    if not grads:
        return torch.tensor(0.0)
    # foreach kernels on CUDA (a launch or two for every gradient at once), a loop on the CPU
    total = nn.utils.get_total_norm(grads)
    if max_norm is not None and max_norm < math.inf:
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, coef)
    return total


#: Sparse updates are on for input tables with at least this many rows
#: (features). Below it a batch of text touches most rows and the dense fused update is faster
#: (benchmarks/RESULTS.md, "The training step").
SPARSE_MIN_ROWS = 20_000


def use_sparse(setting, num_rows: int) -> bool:
    """Sparse updates for an input table of ``num_rows`` rows? ``setting`` True/False as given;
    "auto" (what the trainer uses) is on for ``num_rows >= SPARSE_MIN_ROWS``, except in a process group with the NCCL
    backend (no sparse all-reduce there)."""
    if setting == "auto":
        nccl = dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl"
        return num_rows >= SPARSE_MIN_ROWS and not nccl
    if not isinstance(setting, bool):
        raise ValueError(f"sparse must be 'auto', true or false, got {setting!r}")
    return setting


def build_optimizer(ocfg, model: nn.Module, *, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """AdamW (fused where supported); weight decay on weight matrices only (not biases, not norms).

    With sparse updates on (:func:`use_sparse` of the section's ``sparse`` attribute if it has
    one, for library callers; else "auto"), each ``nn.EmbeddingBag`` in
    ``model`` (the input tables of :class:`xmlc.models.SparseLinear`) is switched to sparse
    gradients, which :class:`AdamW` updates row by row; off switches them back to dense.
    Call it before wrapping the model in DistributedDataParallel (which reads that flag).
    A table whose ``nn.EmbeddingBag`` carries ``sgd_lr`` (the linear part of
    :class:`xmlc.models.WideDeep`) gets its own group, stepped by plain SGD at that rate (the
    schedule scales it like the others), without weight decay or optimizer state.
    ``lr_scale`` multiplies every group's rate (``optim.lr`` and the tables' ``sgd_lr``).
    """
    setting = getattr(ocfg, "sparse", "auto")
    for module in model.modules():
        if isinstance(module, nn.EmbeddingBag):
            module.sparse = use_sparse(setting, module.num_embeddings)
    sgd = [m.weight for m in model.modules() if isinstance(m, nn.EmbeddingBag) and getattr(m, "sgd_lr", None)]
    skip = {id(p) for p in sgd}
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2 and id(p) not in skip]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": ocfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups += [{"params": [m.weight], "weight_decay": 0.0, "lr": m.sgd_lr * lr_scale, "sgd": True}
               for m in model.modules() if isinstance(m, nn.EmbeddingBag) and getattr(m, "sgd_lr", None)]
    try:   # the fused kernel (CPU and CUDA) is several times faster than the per-tensor loop
        return AdamW(groups, lr=ocfg.lr * lr_scale, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return AdamW(groups, lr=ocfg.lr * lr_scale)


def build_scheduler(ocfg, optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over ``optim.warmup`` of the steps, then cosine to 0 or constant."""
    warmup = int(round(ocfg.warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if ocfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held by the optimizer's state tensors (Adam moments and step counters)."""
    return sum(_state_bytes(state) for state in optimizer.state.values())


def optimizer_state_report(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
    """What the optimizer's state holds, for ``metrics.json``: the total and the parameter with
    the largest state (the input table, in the built-in models), in MiB.

    Example:
        >>> model = nn.Linear(1024, 256)
        >>> opt = torch.optim.AdamW(model.parameters())
        >>> model(torch.ones(2, 1024)).sum().backward(); opt.step()
        >>> report = optimizer_state_report(opt, model)
        >>> report["largest"]["parameter"], report["largest"]["shape"], round(report["largest"]["mb"], 3)
        ('weight', [256, 1024], 2.0)
    """
    names = {param: name.removeprefix("module.") for name, param in model.named_parameters()}
    sizes = [(_state_bytes(state), names.get(param, "?"), list(param.shape))
             for param, state in optimizer.state.items()]
    largest = max(sizes, default=(0, None, None))
    return {"total_mb": sum(size for size, _, _ in sizes) / 2**20,
            "largest": {"parameter": largest[1], "shape": largest[2], "mb": largest[0] / 2**20}}


def _state_bytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values() if torch.is_tensor(t))
