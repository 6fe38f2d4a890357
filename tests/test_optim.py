"""xmlc.optim: the lazy row update equals torch's AdamW on the rows it touches; clipping; config."""

import dataclasses
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from xmlc.config import ModelConfig, OptimConfig
from xmlc.models import build_model
from xmlc.optim import (SPARSE_MIN_ROWS, AdamW, Schedule, build_optimizer, build_scheduler, clip_grad_norm_,
                        optimizer_state_bytes, use_sparse)


def _optim(**kw):
    """The optim section with a ``sparse`` attribute (the library knob; the trainer uses auto)."""
    return SimpleNamespace(**(dataclasses.asdict(OptimConfig()) | kw))


def _row_sparse(dense: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return torch.sparse_coo_tensor(rows[None], dense[rows], dense.shape, check_invariants=True).coalesce()


@pytest.mark.parametrize("fused", [False, True])
def test_sparse_rows_step_like_torch_adamw_and_absent_rows_stay(fused, monkeypatch):
    torch.manual_seed(0)
    start = torch.randn(50, 6)
    ours, ref = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    monkeypatch.setattr(AdamW, "chunk_elements", 12)   # several chunks of 2 rows
    if not fused:   # the row update's fallback formula (for a torch without the fused kernel)
        monkeypatch.delattr(torch, "_fused_adamw_", raising=False)
    opt = AdamW([ours], lr=0.01, weight_decay=0.1, fused=fused)
    ref_opt = torch.optim.AdamW([ref], lr=0.01, weight_decay=0.1, fused=fused)
    always = torch.tensor([1, 4, 9, 30])
    for step in range(4):
        rows = torch.cat([always, torch.tensor([40 + step])])      # row 40+s only at step s
        grad = torch.zeros(50, 6)
        grad[rows] = torch.randn(len(rows), 6)
        ours.grad = _row_sparse(grad, rows)
        ref.grad = grad
        opt.step()
        ref_opt.step()
        if step == 0:
            row40 = ours.data[40].clone()
        # rows present at every step: exactly dense AdamW
        torch.testing.assert_close(ours.data[always], ref.data[always])
        # rows never present: untouched (dense AdamW decays them)
        untouched = torch.tensor([0, 2, 49])
        assert torch.equal(ours.data[untouched], start[untouched])
        assert not torch.equal(ref.data[untouched], start[untouched])
    # a row present once moved once, at that step's update, and never again
    assert not torch.equal(row40, start[40]) and torch.equal(ours.data[40], row40)
    assert ours.grad.is_sparse                      # the gradient is handed back after the step
    state = opt.state[ours]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq"} and float(state["step"]) == 4
    assert optimizer_state_bytes(opt) == 2 * 50 * 6 * 4 + 4


def test_uncoalesced_sparse_gradient_is_summed():
    p, ref = nn.Parameter(torch.zeros(5, 2)), nn.Parameter(torch.zeros(5, 2))
    opt, ref_opt = AdamW([p], lr=0.1), torch.optim.AdamW([ref], lr=0.1)
    # rows 3 and 1, row 3 twice (as after a DDP all-reduce of two processes' rows)
    p.grad = torch.sparse_coo_tensor(torch.tensor([[3, 1, 3]]), torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
                                     (5, 2), check_invariants=True)
    ref.grad = p.grad.to_dense()
    opt.step()
    ref_opt.step()
    torch.testing.assert_close(p.data[[1, 3]], ref.data[[1, 3]])


@pytest.mark.parametrize("max_norm", [None, 0.5, 1e6])
def test_clip_grad_norm_with_sparse_gradients_matches_torch(max_norm):
    torch.manual_seed(0)
    a, b = torch.randn(20, 3), torch.randn(4)
    a[::3] = 0
    rows = torch.nonzero(a.abs().sum(1)).flatten()
    ours = [nn.Parameter(torch.zeros(20, 3)), nn.Parameter(torch.zeros(4))]
    ref = [nn.Parameter(torch.zeros(20, 3)), nn.Parameter(torch.zeros(4))]
    ours[0].grad, ours[1].grad = _row_sparse(a, rows), b.clone()
    ref[0].grad, ref[1].grad = a.clone(), b.clone()
    norm = clip_grad_norm_(ours, max_norm)
    ref_norm = nn.utils.clip_grad_norm_(ref, max_norm if max_norm is not None else float("inf"))
    torch.testing.assert_close(norm, ref_norm)
    torch.testing.assert_close(ours[0].grad.to_dense(), ref[0].grad)
    torch.testing.assert_close(ours[1].grad, ref[1].grad)


@pytest.mark.parametrize("setting, rows, expected", [("auto", SPARSE_MIN_ROWS, True), ("auto", 30, False),
                                                   (True, 30, True), (False, SPARSE_MIN_ROWS, False)])
def test_build_optimizer_sets_the_input_table_gradient_layout(setting, rows, expected):
    model = build_model(ModelConfig(hidden=[4], ensemble=2), num_features=rows, num_labels=3)
    build_optimizer(_optim(sparse=setting), model)
    assert model.input.bag.sparse is expected
    assert use_sparse(setting, rows) is expected
    with pytest.raises(ValueError, match="sparse must be"):
        use_sparse("yes", rows)


def test_one_training_step_sparse_equals_dense_on_touched_rows():
    """The whole path: model -> sparse gradient -> clip -> AdamW, against optim.sparse=false."""
    from xmlc import data as xdata
    import scipy.sparse as sp
    X = sp.random(16, 60, density=0.05, format="csr", random_state=0, dtype="float32")
    Y = sp.csr_matrix((torch.rand(16, 4) < 0.3).numpy().astype("float32"))
    batch = next(iter(xdata.make_loader(xdata.XMCData(X, Y, 60, 4), 16, shuffle=False)))
    params = []
    for sparse in (True, False):
        torch.manual_seed(0)
        model = build_model(ModelConfig(hidden=[8], dropout=0.0, ensemble=2), num_features=60, num_labels=4)
        opt = build_optimizer(_optim(sparse=sparse, weight_decay=0.0), model)
        loss = nn.functional.binary_cross_entropy_with_logits(model(batch), batch.targets.expand(2, -1, -1))
        loss.backward()
        clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        params.append([p.detach().clone() for p in model.parameters()])
    for ours, ref in zip(*params):
        torch.testing.assert_close(ours, ref)     # every row is touched or has a zero first moment


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["mlp", "wide_deep"])   # wide_deep: the column-normalised SGD group too
def test_cuda_sparse_step_matches_cpu(name):
    torch.manual_seed(0)
    indices, offsets = torch.tensor([3, 7, 7, 1, 9]), torch.tensor([0, 2])
    results = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(name=name, hidden=[8], dropout=0.0, ensemble=3), 12, 5).to(device)
        opt = build_optimizer(_optim(sparse=True), model)
        for _ in range(2):
            opt.zero_grad()
            out = model(indices.to(device), offsets.to(device), torch.ones(5, device=device))
            out.square().mean().backward()
            clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        results.append([p.detach().cpu() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def _column_sgd_reference(start: torch.Tensor, grads: list[torch.Tensor], lrs: list[float],
                          beta: float = 0.999, eps: float = 1e-8) -> torch.Tensor:
    """Column-normalised SGD written out in float64, one column and one step at a time."""
    w, v = start.double().clone(), [0.0] * start.shape[1]
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = g.double()
        for j in range(w.shape[1]):
            v[j] = beta * v[j] + (1 - beta) * float((g[:, j] ** 2).sum())
            w[:, j] -= lr * g[:, j] / ((v[j] / (1 - beta ** t)) ** 0.5 + eps)
    return w.float()


def test_sgd_table_steps_by_column_normalised_sgd_sparse_equal_to_dense():
    """The wide part of ``wide_deep`` (``bag.sgd_lr``) steps by column-normalised SGD: each column
    along its gradient, scaled by the root of its moving mean squared norm (written out by hand
    above); a row-sparse gradient moves the touched rows as the dense one, the others not at all."""
    torch.manual_seed(0)
    models = [build_model(ModelConfig(name="wide_deep", hidden=[4], ensemble=2), num_features=30, num_labels=3)
              for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    batches = [(torch.tensor([2, 5, 5, 17]), torch.tensor([0, 2]), torch.rand(4)),
               (torch.tensor([5, 9, 28]), torch.tensor([0, 1]), torch.rand(3)),
               (torch.tensor([2, 17]), torch.tensor([0, 1]), torch.rand(2))]
    for model, sparse in zip(models, (True, False)):
        optimizer = build_optimizer(_optim(sparse=sparse, lr=0.01, weight_decay=0.0), model)
        sgd = [g for g in optimizer.param_groups if g.get("sgd")]
        assert len(sgd) == 1 and sgd[0]["params"][0] is model.wide.weight and sgd[0]["lr"] == model.wide.bag.sgd_lr
        model.wide.weight.data.normal_(generator=torch.Generator().manual_seed(1))
        start, grads = model.wide.weight.detach().clone(), []
        for step, (indices, offsets, values) in enumerate(batches):
            optimizer.zero_grad()
            sgd[0]["lr"] = model.wide.bag.sgd_lr * (step + 1) / 3    # as a schedule would set it
            (model(indices, offsets, values) * torch.arange(1.0, 4.0)).sum().backward()
            assert model.wide.weight.grad.is_sparse == sparse
            grads.append(model.wide.weight.grad.to_dense().clone())
            optimizer.step()
        lrs = [model.wide.bag.sgd_lr * (step + 1) / 3 for step in range(3)]
        torch.testing.assert_close(model.wide.weight.detach(), _column_sgd_reference(start, grads, lrs))
        state = optimizer.state[model.wide.weight]
        assert set(state) == {"step", "col_sq"} and float(state["step"]) == 3 and state["col_sq"].shape == (3,)
    torch.testing.assert_close(models[0].wide.weight, models[1].wide.weight)
    untouched = [i for i in range(30) if i not in (2, 5, 9, 17, 28)]
    torch.testing.assert_close(models[0].wide.weight.detach()[untouched], start[untouched], rtol=0, atol=0)


def test_column_sgd_moves_each_column_by_about_its_rate_whatever_its_gradient_scale():
    """A column whose gradient is 1,000x another's moves as far: the step is scale-free per column
    (the reason the wide part needs no rate per label count or per label frequency)."""
    p = nn.Parameter(torch.zeros(4, 2))
    opt = AdamW([{"params": [p], "lr": 0.5, "sgd": "column", "weight_decay": 0.0}], lr=0.01)
    p.grad = torch.tensor([[1.0, 1e-3], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    opt.step()
    torch.testing.assert_close(p.detach()[0], torch.tensor([-0.5, -0.5]), rtol=1e-4, atol=0)


def test_column_sgd_state_round_trips_and_resumes_bit_exactly():
    torch.manual_seed(0)
    grads = [torch.randn(6, 3) for _ in range(4)]

    def run(steps, resume_from=None):
        p = nn.Parameter(torch.ones(6, 3) if resume_from is None else resume_from[0].clone())
        opt = AdamW([{"params": [p], "lr": 0.1, "sgd": "column", "weight_decay": 0.0}], lr=0.01)
        if resume_from is not None:
            opt.load_state_dict(resume_from[1])
        for g in steps:
            p.grad = g.clone()
            opt.step()
        return p.detach().clone(), opt.state_dict()

    whole, _ = run(grads)
    half = run(grads[:2])
    resumed, _ = run(grads[2:], resume_from=half)
    assert torch.equal(whole, resumed)


def test_a_run_saved_with_the_plain_sgd_rule_resumes_with_it():
    """Optimizer state written before the column rule (its wide group marked ``sgd: True``, at its
    own rate, no state) loads and steps by plain SGD at that rate, as that version went on."""
    model = build_model(ModelConfig(name="wide_deep", hidden=[4], ensemble=2), num_features=30, num_labels=3)
    optimizer = build_optimizer(_optim(lr=0.01, weight_decay=0.0), model)
    saved = optimizer.state_dict()
    for group in saved["param_groups"]:
        if group.get("sgd"):
            group["sgd"], group["lr"] = True, 300.0      # as 4c58ca6 wrote it: 100 L
    optimizer.load_state_dict(saved)
    (model(torch.tensor([2, 5]), torch.tensor([0, 1]), torch.ones(2)) * torch.arange(1.0, 4.0)).sum().backward()
    start, grad = model.wide.weight.detach().clone(), model.wide.weight.grad.to_dense().clone()
    optimizer.step()
    torch.testing.assert_close(model.wide.weight.detach(), start - 300.0 * grad)
    assert not optimizer.state[model.wide.weight]


def test_lr_scale_multiplies_every_group_rate_and_nothing_else():
    """``lr_scale`` (``train.final: finetune``'s half rates): Adam's groups and the wide part's SGD
    group at scale x their rates; weight decay and the groups themselves as without it."""
    model = build_model(ModelConfig(name="wide_deep", hidden=[4], ensemble=2), num_features=30, num_labels=3)
    plain, half = (build_optimizer(_optim(lr=0.01, weight_decay=0.1), model, lr_scale=s) for s in (1.0, 0.5))
    assert len(plain.param_groups) == len(half.param_groups) == 3
    for a, b in zip(plain.param_groups, half.param_groups):
        assert b["lr"] == pytest.approx(0.5 * a["lr"]) and b["weight_decay"] == a["weight_decay"]
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]] and a.get("sgd") == b.get("sgd")
    assert [g["lr"] for g in half.param_groups if g.get("sgd")] == [pytest.approx(0.5 * model.wide.bag.sgd_lr)]


@pytest.mark.parametrize("fused", [False, True])
def test_dense_step_and_schedule_equal_torch_adamw_and_lambdalr(fused):
    """Dense parameters in two groups (decay and none) under the warmup + cosine schedule: the
    same parameters, moments and rates as torch.optim.AdamW under LambdaLR, step for step."""
    torch.manual_seed(0)
    ours, ref = (nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)) for _ in range(2))
    ref.load_state_dict(ours.state_dict())

    def groups(m):
        return [{"params": [p for p in m.parameters() if p.dim() >= 2], "weight_decay": 0.1},
                {"params": [p for p in m.parameters() if p.dim() < 2], "weight_decay": 0.0}]

    cfg = _optim(lr=0.02, warmup=0.25, schedule="cosine")
    opt = AdamW(groups(ours), lr=0.02, fused=fused)
    ref_opt = torch.optim.AdamW(groups(ref), lr=0.02, fused=fused)
    sched, ref_sched = build_scheduler(cfg, opt, total_steps=8), None
    factor = sched.factor
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref_opt, factor)
    for step in range(8):
        x = torch.randn(4, 6)
        for m, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            m(x).square().sum().backward()
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in ref_opt.param_groups]
        opt.step()
        ref_opt.step()
        sched.step()
        ref_sched.step()
        for a, b in zip(ours.parameters(), ref.parameters()):
            assert torch.equal(a, b), step
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(opt.state[a]["exp_avg_sq"], ref_opt.state[b]["exp_avg_sq"])
        assert float(opt.state[a]["step"]) == float(ref_opt.state[b]["step"]) == 8
    assert sched.get_last_lr() == ref_sched.get_last_lr() and sched.last_epoch == ref_sched.last_epoch


def test_state_dict_has_torch_layout_both_ways():
    """A state saved by torch.optim.AdamW + LambdaLR loads here and the next step is the same,
    and ours loads into torch's (checkpoints written before either way resume)."""
    torch.manual_seed(1)
    models = [nn.Linear(4, 3) for _ in range(3)]
    for m in models[1:]:
        m.load_state_dict(models[0].state_dict())
    x = torch.randn(5, 4)
    ref_opt = torch.optim.AdamW(models[0].parameters(), lr=0.05, weight_decay=0.1)
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda s: 1.0 / (s + 1))
    for _ in range(3):
        ref_opt.zero_grad()
        models[0](x).sum().backward()
        ref_opt.step()
        ref_sched.step()
    models[1].load_state_dict(models[0].state_dict())
    ours = AdamW(models[1].parameters(), lr=0.05, weight_decay=0.1)
    sched = Schedule(ours, lambda s: 1.0 / (s + 1))
    ours.load_state_dict(ref_opt.state_dict())
    sched.load_state_dict(ref_sched.state_dict())
    assert sched.last_epoch == 3 and ours.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
    for m, o in ((models[0], ref_opt), (models[1], ours)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)
    back = torch.optim.AdamW(models[2].parameters(), lr=0.05, weight_decay=0.1)
    back.load_state_dict(ours.state_dict())
    assert back.state_dict()["state"].keys() == ours.state_dict()["state"].keys()
    for a, b in zip(back.state_dict()["state"].values(), ours.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    with pytest.raises(ValueError, match="parameter groups do not match"):
        AdamW([nn.Parameter(torch.zeros(2))], lr=0.1).load_state_dict(ours.state_dict())
    fused = AdamW(nn.Linear(4, 3).parameters(), lr=0.05, fused=True)
    fused.load_state_dict(ref_opt.state_dict())          # torch saved fused=None: the kernel choice stays ours
    assert fused.param_groups[0]["fused"] is True and fused.param_groups[0]["weight_decay"] == 0.1


def test_a_training_step_does_not_import_the_compiler():
    """The optimizer is not a torch.optim.Optimizer, whose construction imports torch._dynamo
    (about 1 s at the start of every run)."""
    code = ("import sys, torch\n"
            "from xmlc.config import ModelConfig, OptimConfig\n"
            "from xmlc.models import build_model\n"
            "from xmlc.optim import build_optimizer, build_scheduler, clip_grad_norm_\n"
            "m = build_model(ModelConfig(name='wide_deep', hidden=[4], ensemble=2), num_features=30_000, num_labels=3)\n"
            "o = build_optimizer(OptimConfig(), m); s = build_scheduler(OptimConfig(), o, total_steps=4)\n"
            "m(torch.tensor([1, 5, 29_999]), torch.tensor([0, 2])).sum().backward()\n"
            "clip_grad_norm_(m.parameters(), 1.0); o.step(); s.step(); o.zero_grad(); o.state_dict()\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
