"""xmlc.models: EmbeddingBag encoders agree with their dense equivalents; registry."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from xmlc import data as xdata
from xmlc.config import ModelConfig
from xmlc.models import MLP, MODELS, Ensemble, SparseLinear, build_model, ensemble_loss, init_output_bias, probabilities


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
    expected = dense @ layer.weight + layer.bias
    torch.testing.assert_close(layer(batch.indices, batch.offsets, batch.weights), expected)
    torch.testing.assert_close(layer(dense), expected)   # dense input path
    # gradient of the sparse path equals the dense one
    layer(batch.indices, batch.offsets, batch.weights).sum().backward()
    g_sparse = layer.bag.weight.grad.clone()
    layer.zero_grad()
    layer(dense).sum().backward()
    torch.testing.assert_close(g_sparse, layer.bag.weight.grad)


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
    model = build_model(ModelConfig(hidden=[32, 16], norm="batch", activation="gelu", dropout=0.1), 50, 7)
    kinds = [type(m) for m in model.body]
    assert kinds == [nn.BatchNorm1d, nn.GELU, nn.Dropout, nn.Linear, nn.BatchNorm1d, nn.GELU, nn.Dropout]
    assert model.head.out_features == 7


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
    assert build_model(ModelConfig(name="tiny"), 20, 3)(batch).shape == (6, 3)


def test_prior_output_bias():
    model = build_model(ModelConfig(hidden=[4]), 10, 3)
    init_output_bias(model, torch.tensor([0.5, 0.1, 0.0]))
    torch.testing.assert_close(model.head.bias[:2], torch.tensor([0.0, -2.1972246]))
    assert torch.isfinite(model.head.bias).all()


def test_ensemble_members_are_independent_models():
    torch.manual_seed(0)
    X, batch = _sparse_batch()
    model = build_model(ModelConfig(name="mlp", hidden=[8], ensemble=3), num_features=20, num_labels=3)
    assert isinstance(model, Ensemble) and len(model.members) == 3
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
    g0 = model.members[0].head.bag.weight.grad.clone()
    model.zero_grad()
    (loss_fn(model.members[0](batch), targets) / 2).backward()
    torch.testing.assert_close(g0, model.members[0].head.bag.weight.grad)


def test_prior_output_bias_sets_every_ensemble_member():
    model = build_model(ModelConfig(name="mlp", hidden=[4], ensemble=2), num_features=5, num_labels=3)
    prior = torch.tensor([0.5, 0.1, 0.01])
    init_output_bias(model, prior)
    for member in model.members:
        torch.testing.assert_close(member.output_bias, torch.log(prior / (1 - prior)))
