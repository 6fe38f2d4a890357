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
from collections import defaultdict

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["AdamW", "Schedule", "build_optimizer", "build_scheduler", "clip_grad_norm_", "use_sparse",
           "optimizer_state_bytes", "optimizer_state_report"]


class AdamW:
    """AdamW (fused where supported) that also takes row-sparse gradients; torch's update, state
    and ``state_dict`` layout, without ``torch.optim.Optimizer``.

    Dense gradients get ``torch.optim.AdamW``'s update: its fused kernel (``fused=True``, where
    the build has it) or its single-tensor formula, per parameter group. A parameter whose
    ``.grad`` is a sparse COO tensor with one sparse dimension (rows) gets the AdamW update on
    the rows present in it only (lazy rows, see the module docstring); a group marked
    ``sgd: "column"`` steps by column-normalised SGD at its rate (:func:`_column_sgd_step`; state
    ``step`` and ``col_sq``), one marked ``sgd: True`` (saved before that rule) by plain SGD.
    The state is torch's ``step``, ``exp_avg`` and ``exp_avg_sq`` per parameter, and
    ``state_dict`` / ``load_state_dict`` use torch's layout (so a checkpoint written by
    ``torch.optim.AdamW`` loads).

    Why not a ``torch.optim.Optimizer`` subclass: building one imports ``torch._dynamo``
    (``add_param_group`` and ``step`` are wrapped to be skipped by the compiler), about 1 s,
    the largest fixed cost of a short run; nothing here runs under ``torch.compile``.

    The row update gathers a chunk of rows of the parameter and both moments, applies torch's
    fused AdamW kernel to them while the chunk is in cache and writes the rows back, on the
    calling thread (on CUDA, all rows in one chunk); the rows come sorted and unique from
    :func:`xmlc.kernels.bag.sparse_bag`, so nothing is re-coalesced.
    ``amsgrad``, ``maximize`` and ``capturable`` are not supported.
    """

    #: rows per chunk (CPU) are chosen so a chunk of one tensor holds about this many elements
    #: (1 MiB of float32: the chunk's rows of the parameter, both moments and the gradient stay in cache)
    chunk_elements = 1 << 18

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, fused: bool | None = None):
        self.defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                         "amsgrad": False, "maximize": False, "fused": bool(fused)}
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = [self.defaults | group | {"params": list(group["params"])} for group in groups]
        if fused:   # as torch.optim.AdamW(fused=True) refuses: no kernel, or a device or dtype it lacks
            from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
            devices = _get_fused_kernels_supported_devices()
            bad = [p for g in self.param_groups for p in g["params"]
                   if p.device.type not in devices or not torch.is_floating_point(p)]
            if not hasattr(torch, "_fused_adamw_") or bad:
                raise RuntimeError("xmlc.optim.AdamW: fused=True needs torch's fused AdamW kernel and floating-point "
                                   f"parameters on {devices}")
        self.state: dict = defaultdict(dict)   # parameter -> its state

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().requires_grad_(False).zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            dense = []
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if group.get("sgd") == "column":
                    _column_sgd_step(p, grad, float(group["lr"]), self.state[p], eps=group["eps"])
                elif group.get("sgd"):   # ``True``: plain SGD (a run started before the column rule)
                    _sgd_step(p, grad, float(group["lr"]))
                elif grad.is_sparse:
                    self._row_step(group, p, grad)
                else:
                    dense.append(p)
            if dense:
                self._dense_step(group, dense)

    def _moments(self, p: torch.Tensor) -> dict:
        """``p``'s state, created at zero on its first step (the step count is not advanced here)."""
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _dense_step(self, group: dict, params: list[torch.Tensor]) -> None:
        """``torch.optim.AdamW``'s update of whole parameters: the fused kernel over the group's
        parameters at once, or the single-tensor formula one by one."""
        states = [self._moments(p) for p in params]
        torch._foreach_add_([s["step"] for s in states], 1)
        lr, (beta1, beta2), eps, wd = float(group["lr"]), group["betas"], group["eps"], group["weight_decay"]
        if group["fused"]:
            torch._fused_adamw_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                                [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states], lr=lr,
                                beta1=beta1, beta2=beta2, weight_decay=wd, eps=eps, amsgrad=False, maximize=False)
            return
        for p, s in zip(params, states):
            _adamw_formula(p, p.grad, s["exp_avg"], s["exp_avg_sq"], s["step"], lr=lr, beta1=beta1, beta2=beta2,
                           eps=eps, weight_decay=wd)

    def state_dict(self) -> dict:
        """torch's layout: ``{"state": {index: state}, "param_groups": [{..., "params": [index]}]}``,
        parameters numbered in group order."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            ids = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append({k: v for k, v in group.items() if k != "params"} | {"params": ids})
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """The groups' settings and each parameter's state from :meth:`state_dict` (or
        ``torch.optim.AdamW``'s), matched by position; copies of the tensors, the moments on each
        parameter's device and dtype, ``step`` float32."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(saved, self.param_groups)):
            raise ValueError("xmlc.optim.AdamW.load_state_dict: the saved parameter groups do not match "
                             f"this optimizer's (sizes {[len(g['params']) for g in saved]} against "
                             f"{[len(g['params']) for g in self.param_groups]})")
        by_index = {i: p for g_saved, g in zip(saved, self.param_groups) for i, p in zip(g_saved["params"], g["params"])}
        self.state = defaultdict(dict)
        for i, s in state_dict["state"].items():
            p = by_index[int(i)]
            self.state[p] = {k: (v.to(device=p.device, dtype=torch.float32 if k == "step" else p.dtype, copy=True)
                                 if torch.is_tensor(v) else v) for k, v in s.items()}
        # the saved settings, but this optimizer's kernel choice (``fused`` is how, not what, it computes)
        self.param_groups = [{k: v for k, v in g_saved.items() if k != "params"}
                             | {"params": g["params"], "fused": g["fused"], "betas": tuple(g_saved["betas"])}
                             for g_saved, g in zip(saved, self.param_groups)]

    def _row_step(self, group: dict, p: torch.Tensor, grad: torch.Tensor) -> None:
        if group["amsgrad"] or group["maximize"]:
            raise ValueError("xmlc.optim.AdamW: amsgrad and maximize are not supported for sparse gradients")
        if grad.sparse_dim() != 1:
            raise ValueError(f"xmlc.optim.AdamW: expected a row-sparse gradient (sparse_dim 1), "
                             f"got sparse_dim {grad.sparse_dim()}")
        rows, values = _rows_and_values(grad)
        state = self._moments(p)
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
    """``p -= lr * grad`` (plain SGD, no state); a row-sparse ``grad`` touches its rows only. A
    group marked ``sgd: True`` (the wide part's rule before b7b2d3a, at 100 L) steps so, so a run
    saved by that version resumes as it would have gone on."""
    if grad.is_sparse:
        rows, values = _rows_and_values(grad)
        p.index_add_(0, rows, values.to(p.dtype), alpha=-lr)
    else:
        p.add_(grad, alpha=-lr)


#: The decay of the column-normalised SGD's mean squared column norm (Adam's beta2).
COLUMN_BETA = 0.999


def _column_sgd_step(p: torch.Tensor, grad: torch.Tensor, lr: float, state: dict, *,
                     beta: float = COLUMN_BETA, eps: float = 1e-8) -> None:
    """Column-normalised SGD: ``p[:, j] -= lr * g[:, j] / (sqrt(v_j / (1 - beta^t)) + eps)``, where
    ``v_j`` is the moving mean of column j's squared gradient norm ``||g[:, j]||^2``.

    Within a column the step keeps the gradient's direction, so a label's weights keep the
    tf-idf geometry of its evidence (Adam's per-coordinate steps move every touched weight by
    about ``lr``); across columns (labels, for the wide part of :class:`xmlc.models.WideDeep`)
    each column moves about ``lr`` in L2 norm a step, whatever its label's frequency and the
    loss's scale (the mean over L labels and B rows). A row-sparse ``grad`` touches its rows
    only, and its column norms are the dense gradient's (the absent rows are zero): the same
    update as the dense one (tested). ``state``: ``step`` (float32, as Adam's) and ``col_sq``
    ``(C,)``, created at zero on the first step.
    """
    rows, values = _rows_and_values(grad) if grad.is_sparse else (None, grad)
    values = values.to(p.dtype)
    if not state:
        state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        state["col_sq"] = torch.zeros(p.shape[1:], dtype=p.dtype, device=p.device)
    state["step"] += 1
    col_sq = state["col_sq"]
    col_sq.mul_(beta).add_(values.square().sum(0), alpha=1.0 - beta)
    # -lr / (sqrt(v_hat) + eps) per column, then one multiply of the rows (a division, or index_add_'s
    # alpha, costs another pass over them); no host sync on CUDA
    scale = (col_sq / (1.0 - beta ** state["step"])).sqrt_().add_(eps).reciprocal_().mul_(-lr)
    if rows is None:
        p.add_(values * scale)
    else:
        p.index_add_(0, rows, values * scale)


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
    _adamw_formula(param, grad, exp_avg, exp_avg_sq, step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                   weight_decay=weight_decay)


def _adamw_formula(param, grad, exp_avg, exp_avg_sq, step: torch.Tensor, *, lr: float, beta1: float, beta2: float,
                   eps: float, weight_decay: float) -> None:
    """``torch.optim.AdamW``'s single-tensor update, in place (``step`` already counts this one)."""
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


def build_optimizer(ocfg, model: nn.Module, *, lr_scale: float = 1.0) -> AdamW:
    """AdamW (fused where supported); weight decay on weight matrices only (not biases, not norms).

    With sparse updates on (:func:`use_sparse` of the section's ``sparse`` attribute if it has
    one, for library callers; else "auto"), each ``nn.EmbeddingBag`` in
    ``model`` (the input tables of :class:`xmlc.models.SparseLinear`) is switched to sparse
    gradients, which :class:`AdamW` updates row by row; off switches them back to dense.
    Call it before wrapping the model in DistributedDataParallel (which reads that flag).
    A table whose ``nn.EmbeddingBag`` carries ``sgd_lr`` (the linear part of
    :class:`xmlc.models.WideDeep`) gets its own group, stepped by column-normalised SGD at that
    rate (:func:`_column_sgd_step`; the schedule scales it like the others), without weight decay;
    its state is one moving mean per column.
    ``lr_scale`` multiplies every group's rate (``optim.lr`` and the tables' ``sgd_lr``).
    """
    setting = getattr(ocfg, "sparse", "auto")
    for module in model.modules():
        if isinstance(module, nn.EmbeddingBag):
            module.sparse = use_sparse(setting, module.num_embeddings)
    sgd_tables = [m for m in model.modules() if isinstance(m, nn.EmbeddingBag) and getattr(m, "sgd_lr", None)]
    skip = {id(m.weight) for m in sgd_tables}
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2 and id(p) not in skip]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": ocfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups += [{"params": [m.weight], "weight_decay": 0.0, "lr": m.sgd_lr * lr_scale, "sgd": "column"}
               for m in sgd_tables]
    try:   # the fused kernel (CPU and CUDA) is several times faster than the per-tensor loop
        return AdamW(groups, lr=ocfg.lr * lr_scale, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return AdamW(groups, lr=ocfg.lr * lr_scale)


class Schedule:
    """Every group's rate = its base rate x ``factor(step)``: ``torch.optim.lr_scheduler.LambdaLR``'s
    rule and ``state_dict`` keys (``base_lrs``, ``last_epoch``: the steps taken), for
    :class:`AdamW` (LambdaLR takes only a ``torch.optim.Optimizer``). Built at step 0, where it
    sets the rates for the first step; :meth:`step` after each optimizer step."""

    def __init__(self, optimizer: AdamW, factor):
        self.optimizer, self.factor = optimizer, factor
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._set_rates()

    def _set_rates(self) -> None:
        f = self.factor(self.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def step(self) -> None:
        self.last_epoch += 1
        self._set_rates()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        """From :meth:`state_dict` or LambdaLR's (its other keys are not needed)."""
        self.base_lrs, self.last_epoch = list(state_dict["base_lrs"]), int(state_dict["last_epoch"])
        self._set_rates()


def build_scheduler(ocfg, optimizer, total_steps: int) -> Schedule:
    """Linear warmup over ``optim.warmup`` of the steps, then cosine to 0 or constant."""
    warmup = int(round(ocfg.warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if ocfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return Schedule(optimizer, factor)


def optimizer_state_bytes(optimizer) -> int:
    """Bytes held by the optimizer's state tensors (Adam moments and step counters)."""
    return sum(_state_bytes(state) for state in optimizer.state.values())


def optimizer_state_report(optimizer, model: nn.Module) -> dict:
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
