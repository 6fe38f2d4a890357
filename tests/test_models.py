"""xmlc.models: EmbeddingBag encoders agree with their dense equivalents; registry."""

import types

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from xmlc import data as xdata
from xmlc.config import ModelConfig
from xmlc.models import (MLP, MODELS, WIDE_LR, Dropout, Ensemble, MemberBatchNorm, MemberLayerNorm,
                         MemberLinear, SparseLinear, WideDeep, auto_hidden, build_model, ensemble_loss,
                         init_output_bias, probabilities)


def _sparse_batch(n=6, d=20, seed=0):
    X = sp.random(n, d, density=0.3, format="csr", random_state=seed, dtype="float32")
    keep = np.ones(n, dtype="float32")
    keep[0] = 0.0                       # an empty row
    X = (sp.diags(keep) @ X).tocsr()
    X.eliminate_zeros()
    Y = sp.csr_matrix((n, 3), dtype="float32")
    return X, next(iter(xdata.make_loader(xdata.XMCData(X, Y, d, 3), n, shuffle=False)))


def test_sparse_linear_equals_dense_linear():
    torch.manual_seed(0)
    X, batch = _sparse_batch()
    layer = SparseLinear(20, 5)
    dense = torch.from_numpy(X.toarray())
    expected = (dense @ layer.weight + layer.bias)[None]
    torch.testing.assert_close(layer(batch.indices, batch.offsets, batch.weights), expected)
    torch.testing.assert_close(layer(dense), expected)   # dense input path
    # gradient of the sparse path equals the dense one
    layer(batch.indices, batch.offsets, batch.weights).sum().backward()
    g_sparse = layer.weight.grad.clone()
    layer.zero_grad()
    layer(dense).sum().backward()
    torch.testing.assert_close(g_sparse, layer.weight.grad)


@pytest.mark.parametrize("dense_input", [False, True])
def test_sparse_gradient_holds_the_touched_rows_of_the_dense_gradient(dense_input):
    torch.manual_seed(0)
    X, batch = _sparse_batch(n=7, d=40)
    layer = SparseLinear(40, 4, members=3)
    inputs = (torch.from_numpy(X.toarray()),) if dense_input else (batch.indices, batch.offsets, batch.weights)
    upstream = torch.randn(3, 7, 4)
    layer(*inputs).backward(upstream)
    dense_grad = layer.weight.grad.clone()
    layer.zero_grad()
    layer.bag.sparse = True
    layer(*inputs).backward(upstream)
    grad = layer.weight.grad
    assert grad.is_sparse and grad.sparse_dim() == 1
    rows = grad.coalesce().indices()[0]
    if not dense_input:   # exactly the feature ids present in the batch, sorted
        torch.testing.assert_close(rows, torch.from_numpy(np.unique(X.indices)).long())
    torch.testing.assert_close(grad.to_dense(), dense_grad)
    assert dense_grad[np.setdiff1d(np.arange(40), X.indices)].abs().max() == 0


def test_init_matches_nn_linear_scale():
    layer = SparseLinear(400, 8)
    bound = 1 / 400 ** 0.5
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound


@pytest.mark.parametrize("name, hidden", [("linear", [16]), ("mlp", [16]), ("mlp", [16, 8])])
def test_models_map_batches_to_logits(name, hidden):
    torch.manual_seed(0)
    X, batch = _sparse_batch()
    model = build_model(ModelConfig(name=name, hidden=hidden, dropout=0.0), 20, 3)
    logits = model(batch)
    assert logits.shape == (6, 3) and logits.dtype == torch.float32
    torch.testing.assert_close(model(batch.indices, batch.offsets, batch.weights), logits)


def test_mlp_structure_follows_config():
    model = build_model(ModelConfig(hidden=[32, 16], norm="batch", dropout=0.1), 50, 7)
    kinds = [type(m) for m in model.body]
    assert kinds == [MemberBatchNorm, nn.ReLU, Dropout, MemberLinear, MemberBatchNorm, nn.ReLU, Dropout]
    assert model.head.weight.shape == (1, 16, 7)


def test_input_dropout_only_while_training():
    torch.manual_seed(0)
    _, batch = _sparse_batch(n=50, d=100)
    model = build_model(ModelConfig(hidden=[16], dropout=0.0, input_dropout=0.5, norm="none"), 100, 3)
    model.eval()
    a, b = model(batch), model(batch)
    torch.testing.assert_close(a, b)
    model.train()
    assert not torch.allclose(model(batch), a)


def test_registry_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model 'transformer'; valid: linear, mlp"):
        build_model(ModelConfig(name="transformer"), 10, 2)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLP(10, 2, [4], activation="swish")
    with pytest.raises(ValueError, match="hidden must be a non-empty list"):
        MLP(10, 2, [])


def test_users_can_register_an_encoder(monkeypatch):
    class Tiny(nn.Module):
        def __init__(self, d, l):
            super().__init__()
            self.input = SparseLinear(d, l)

        def forward(self, batch):
            return self.input(batch.indices, batch.offsets, batch.weights)

    monkeypatch.setitem(MODELS, "tiny", lambda cfg, d, l: Tiny(d, l))
    _, batch = _sparse_batch()
    assert build_model(ModelConfig(name="tiny"), 20, 3)(batch).shape == (1, 6, 3)


def test_prior_output_bias():
    model = build_model(ModelConfig(hidden=[4]), 10, 3)
    init_output_bias(model, torch.tensor([0.5, 0.1, 0.0]))
    torch.testing.assert_close(model.output_bias[0, :2], torch.tensor([0.0, -2.1972246]))
    assert torch.isfinite(model.head.bias).all()


def _member(t: torch.Tensor, m: int, members: int) -> torch.Tensor:
    """Member m's slice of a parameter above the input layer (batch norm keeps (M * H,) flat)."""
    return t.view(members, -1)[m] if t.dim() == 1 else t[m]


def _upper(model: MLP) -> list:
    return list(model.body.parameters()) + list(model.head.parameters())


def _copy_into(batched: MLP, m: int, member: MLP) -> None:
    """Member m of a batched MLP <- a separate one-member MLP's weights."""
    H = member.input.out_features
    with torch.no_grad():
        batched.input.weight[:, m * H:(m + 1) * H] = member.input.weight
        batched.input.bias[m] = member.input.bias[0]
        for mine, theirs in zip(_upper(batched), _upper(member)):
            _member(mine, m, batched.members).copy_(_member(theirs, 0, 1))


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
@pytest.mark.parametrize("sparse_grad", [False, True])
def test_batched_ensemble_equals_separate_members(norm, sparse_grad):
    torch.manual_seed(0)
    X, batch = _sparse_batch(n=8, d=30)
    targets = (torch.rand(8, 5) < 0.3).float()
    M, hidden = 3, [6, 4]
    separate = [MLP(30, 5, hidden, norm=norm, activation="tanh") for _ in range(M)]
    batched = MLP(30, 5, hidden, norm=norm, activation="tanh", members=M)
    for m, member in enumerate(separate):
        _copy_into(batched, m, member)
    batched.input.bag.sparse = sparse_grad
    logits = batched(batch)                                   # train mode: batch norm uses batch statistics
    assert logits.shape == (M, 8, 5)
    expected = torch.stack([member(batch) for member in separate])
    torch.testing.assert_close(logits, expected)
    loss_fn = nn.BCEWithLogitsLoss()
    ensemble_loss(loss_fn, logits, targets).backward()
    ensemble_loss(loss_fn, expected, targets).backward()
    for m, member in enumerate(separate):
        H = hidden[0]
        grad = batched.input.weight.grad
        grad = grad.to_dense() if grad.is_sparse else grad
        torch.testing.assert_close(grad[:, m * H:(m + 1) * H], member.input.weight.grad)
        torch.testing.assert_close(batched.input.bias.grad[m], member.input.bias.grad[0])
        for mine, theirs in zip(_upper(batched), _upper(member)):
            torch.testing.assert_close(_member(mine.grad, m, M), _member(theirs.grad, 0, 1))
    if norm == "batch":   # running statistics kept per member
        for m, member in enumerate(separate):
            torch.testing.assert_close(batched.body[0].running_mean.view(M, -1)[m], member.body[0].running_mean)
    batched.eval()
    for member in separate:
        member.eval()
    torch.testing.assert_close(batched(batch), torch.stack([member(batch) for member in separate]))


def test_member_dropout_masks_are_independent():
    torch.manual_seed(0)
    _, batch = _sparse_batch(n=40, d=100)
    for cfg in (dict(input_dropout=0.5, dropout=0.0), dict(input_dropout=0.0, dropout=0.5)):
        model = MLP(100, 3, [16], norm="none", members=2, **cfg)
        with torch.no_grad():   # two identical members
            H = 16
            model.input.weight[:, H:] = model.input.weight[:, :H]
            for p in [model.input.bias, model.head.weight, model.head.bias]:
                p[1] = p[0]
        model.eval()
        out = model(batch)
        torch.testing.assert_close(out[0], out[1])
        model.train()
        out = model(batch)
        assert not torch.allclose(out[0], out[1])


def test_malloc_thresholds_keep_allocations_working():
    import platform
    from xmlc.train import _malloc
    assert _malloc.reuse_large_blocks() is (platform.libc_ver()[0] == "glibc")   # off glibc: nothing done
    big = torch.ones(1_836, 5_120)                         # above the default mmap threshold
    assert float(big.sum()) == 1_836 * 5_120
    del big
    assert _malloc.set_thresholds(32 << 20, 64 << 20) is (platform.libc_ver()[0] == "glibc")


def test_ensemble_members_are_independent_models(monkeypatch):
    torch.manual_seed(0)
    X, batch = _sparse_batch()
    model = build_model(ModelConfig(name="mlp", hidden=[8], ensemble=3), num_features=20, num_labels=3)
    assert isinstance(model, MLP) and model.members == 3     # the built-in models batch their members
    monkeypatch.setitem(MODELS, "own", lambda cfg, d, l: MLP(d, l, list(cfg.hidden)))
    model = build_model(ModelConfig(name="own", hidden=[8], ensemble=3), num_features=20, num_labels=3)
    assert isinstance(model, Ensemble) and len(model.members) == 3   # other builders are wrapped
    model.eval()
    logits = model(batch)
    assert logits.shape == (3, 6, 3)
    for m, member in enumerate(model.members):   # each slice is that member's own forward
        torch.testing.assert_close(logits[m], member(batch))
    assert not torch.equal(logits[0], logits[1])  # different initialisations
    # scores: the mean of member probabilities, not the sigmoid of the mean logit
    torch.testing.assert_close(probabilities(logits), torch.sigmoid(logits).mean(0))
    torch.testing.assert_close(probabilities(logits[0]), torch.sigmoid(logits[0]))
    with pytest.raises(ValueError, match="ensemble"):
        build_model(ModelConfig(ensemble=0), num_features=20, num_labels=3)


def test_ensemble_loss_is_mean_of_member_losses_and_keeps_gradients_apart():
    torch.manual_seed(0)
    _, batch = _sparse_batch()
    targets = (torch.rand(6, 3) < 0.4).float()
    model = build_model(ModelConfig(name="linear", ensemble=2), num_features=20, num_labels=3)
    loss_fn = nn.BCEWithLogitsLoss()
    logits = model(batch)
    loss = ensemble_loss(loss_fn, logits, targets)
    torch.testing.assert_close(loss, (loss_fn(logits[0], targets) + loss_fn(logits[1], targets)) / 2)
    loss.backward()
    # member 0's gradient equals that of its own loss alone, halved: no coupling between members
    g0 = model.head.weight.grad[:, :3].clone()   # (D, M * L): member 0 in the first L columns
    model.zero_grad()
    (loss_fn(model(batch)[0], targets) / 2).backward()
    torch.testing.assert_close(g0, model.head.weight.grad[:, :3])
    assert model.head.weight.grad[:, 3:].abs().max() == 0


def test_ensemble_loss_with_keep_leaves_each_members_rows_out():
    """train.final: crossfit: member m's loss is its loss function's mean over the rows it keeps; its
    parameters get no gradient from the rows it leaves out; a member keeping none adds 0."""
    torch.manual_seed(0)
    _, batch = _sparse_batch()
    targets = (torch.rand(6, 3) < 0.4).float()
    model = build_model(ModelConfig(name="linear", ensemble=3), num_features=20, num_labels=3)
    loss_fn = nn.BCEWithLogitsLoss()
    keep = torch.tensor([[True, True, False, True, True, True],
                         [True, True, True, True, True, True],
                         [False] * 6])
    logits = model(batch)
    loss = ensemble_loss(loss_fn, logits, targets, keep)
    rows = torch.tensor([0, 1, 3, 4, 5])
    expected = (loss_fn(logits[0, rows], targets[rows]) + loss_fn(logits[1], targets) + 0.0) / 3
    torch.testing.assert_close(loss, expected)
    loss.backward()
    grad = model.head.weight.grad.clone()   # (D, M * L): member m in columns [m*L, (m+1)*L)
    assert grad[:, 6:].abs().max() == 0     # member 2 kept nothing
    # member 0's gradient is the same whatever the targets of the row it leaves out
    flipped = targets.clone()
    flipped[2] = 1 - flipped[2]
    model.zero_grad()
    ensemble_loss(loss_fn, model(batch), flipped, keep).backward()
    assert torch.equal(grad[:, :3], model.head.weight.grad[:, :3])
    assert not torch.equal(grad[:, 3:6], model.head.weight.grad[:, 3:6])
    # no keep, or a keep of all rows: the plain mean of the member losses
    torch.testing.assert_close(ensemble_loss(loss_fn, logits, targets, torch.ones(3, 6, dtype=torch.bool)),
                               ensemble_loss(loss_fn, logits, targets))
    # a single model takes a (1, B) keep
    single = logits[1]
    torch.testing.assert_close(ensemble_loss(loss_fn, single, targets, keep[:1]), loss_fn(single[rows], targets[rows]))


def test_probabilities_of_chosen_members():
    logits = torch.randn(3, 4, 2)
    members = torch.tensor([2, 0, 1, 2])
    expected = torch.stack([torch.sigmoid(logits[m, b]) for b, m in enumerate(members.tolist())])
    torch.testing.assert_close(probabilities(logits, members), expected)


def test_prior_output_bias_sets_every_ensemble_member():
    model = build_model(ModelConfig(name="mlp", hidden=[4], ensemble=2), num_features=5, num_labels=3)
    prior = torch.tensor([0.5, 0.1, 0.01])
    init_output_bias(model, prior)
    for member_bias in model.output_bias:
        torch.testing.assert_close(member_bias, torch.log(prior / (1 - prior)))


# ---------------------------------------------------------------------------------------
# Wide & deep


def test_wide_deep_maps_batches_to_logits_and_shares_one_table():
    model = build_model(ModelConfig(name="wide_deep", hidden=[8], ensemble=3), num_features=40, num_labels=5)
    assert isinstance(model, WideDeep) and model.members == 3
    assert model.wide.weight.shape == (40, 5) and model.input.weight.shape == (40, 8)   # one table each, any M
    assert model.head.weight.shape == (3, 8, 5)
    assert float(model.wide.weight.detach().abs().sum()) == 0.0   # the linear part starts at zero
    indices, offsets = torch.tensor([3, 17, 39, 5, 0]), torch.tensor([0, 3])
    assert model(indices, offsets, torch.ones(5)).shape == (3, 2, 5)
    single = build_model(ModelConfig(name="wide_deep", hidden=[8]), num_features=40, num_labels=5)
    assert single(indices, offsets, torch.ones(5)).shape == (2, 5)


def test_wide_deep_members_equal_separate_models_on_the_same_table():
    """M heads over one shared table compute what M one-head models holding that table and each
    head compute one by one (eval: no dropout)."""
    torch.manual_seed(0)
    shared = WideDeep(30, 4, 6, members=3, dropout=0.5, input_dropout=0.3)
    with torch.no_grad():
        shared.wide.weight.normal_()
    shared.eval()
    indices, offsets, values = torch.tensor([1, 7, 29, 3, 3, 12]), torch.tensor([0, 2, 5]), torch.rand(6)
    together = shared(indices, offsets, values)
    for m in range(3):
        one = WideDeep(30, 4, 6).eval()
        state = {k: v for k, v in shared.state_dict().items() if not k.startswith("head.")}
        state |= {"head.weight": shared.head.weight[m:m + 1], "head.bias": shared.head.bias[m:m + 1]}
        one.load_state_dict(state)
        torch.testing.assert_close(one(indices, offsets, values), together[m])


def test_wide_deep_dense_input_equals_sparse_rows():
    torch.manual_seed(0)
    model = WideDeep(12, 3, 4, members=2).eval()
    with torch.no_grad():
        model.wide.weight.normal_()
    dense = torch.zeros(2, 12)
    dense[0, [1, 5]] = torch.tensor([0.5, 2.0])
    dense[1, 11] = 1.0
    sparse = model(torch.tensor([1, 5, 11]), torch.tensor([0, 2]), torch.tensor([0.5, 2.0, 1.0]))
    batch = types.SimpleNamespace(indices=None, dense=dense)   # a loader's batch of dense rows
    torch.testing.assert_close(model(batch), sparse)


def test_wide_deep_prior_bias_and_gradients_reach_both_parts():
    model = build_model(ModelConfig(name="wide_deep", hidden=[4], ensemble=2), num_features=20, num_labels=3)
    init_output_bias(model, torch.tensor([0.5, 0.1, 0.9]))
    torch.testing.assert_close(model.wide.bias[0], torch.log(torch.tensor([1.0, 1 / 9, 9.0])))
    model(torch.tensor([2, 3, 19]), torch.tensor([0, 1]), torch.ones(3)).sum().backward()
    assert model.wide.weight.grad[[2, 3, 19]].abs().sum() > 0 and model.wide.weight.grad[4].abs().sum() == 0
    assert model.input.weight.grad is not None and model.head.weight.grad is not None
    assert model.wide.bag.sgd_lr == WIDE_LR


@pytest.mark.parametrize("D, L, M", [(58_338, 28, 5), (47_236, 101, 5), (1_836, 159, 5), (500, 983, 5),
                                     (2**20, 100, 5), (100, 3, 1), (10**6, 10**4, 5)])
def test_auto_hidden_keeps_the_deep_part_within_twice_a_linear_model(D, L, M):
    H = auto_hidden(D, L, M)
    assert H % 8 == 0 and 16 <= H <= 512
    if 16 < H < 512:   # the rule binds: table + heads at most 2 D L, and within one step of 8 of it
        assert D * H + M * H * L <= 2 * D * L < D * (H + 8) + M * (H + 8) * L
    model = build_model(ModelConfig(name="wide_deep", hidden="auto", ensemble=M), num_features=min(D, 2000),
                        num_labels=min(L, 50))
    assert model.input.weight.shape[1] == auto_hidden(min(D, 2000), min(L, 50), M)


def test_auto_hidden_for_the_mlp_too():
    model = build_model(ModelConfig(name="mlp", hidden="auto"), num_features=1000, num_labels=20)
    assert model.input.out_features == auto_hidden(1000, 20, 1)


@pytest.mark.parametrize("name", ["wide_deep", "mlp", "linear"])
def test_a_model_built_for_loading_skips_the_random_init_and_predicts_the_same(name):
    """weights_to_load: no random numbers drawn (the init is skipped), and once the weights are
    loaded the model is the one they came from; outside it models initialise as before."""
    from xmlc.models import weights_to_load
    cfg, D, L = ModelConfig(name=name, hidden=[8], ensemble=3), 25_000, 6
    torch.manual_seed(0)
    trained = build_model(cfg, num_features=D, num_labels=L)
    after_build = torch.random.get_rng_state()
    state = torch.random.get_rng_state()
    with weights_to_load():
        loaded = build_model(cfg, num_features=D, num_labels=L)
    assert torch.equal(torch.random.get_rng_state(), state)          # nothing drawn
    loaded.load_state_dict(trained.state_dict())
    x = (torch.tensor([3, 17, 24_999, 5]), torch.tensor([0, 3]), torch.tensor([0.5, 1.0, 2.0, 0.1]))
    trained.eval(), loaded.eval()
    assert torch.equal(trained(*x), loaded(*x))
    torch.manual_seed(0)
    again = build_model(cfg, num_features=D, num_labels=L)             # the context left no trace
    assert torch.equal(torch.random.get_rng_state(), after_build)
    for a, b in zip(again.state_dict().values(), trained.state_dict().values()):
        assert torch.equal(a, b)
