"""xmlc.kernels.bag: the hand-written EmbeddingBag backward equals the plain reference
(``F.embedding_bag`` per member under autograd) and the dense product, forward and gradient,
with a dense and with a sparse gradient."""

import pytest
import torch

from xmlc.kernels.bag import IdOrder, dense_input, sparse_bag, sparse_bag_reference


def _bag(seed=0, D=50, M=3, H=7, lengths=(3, 0, 5, 2, 4, 1), drop=0.4):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    nnz = int(lengths.sum())
    indices, offsets = torch.randint(0, D, (nnz,), generator=g), torch.cumsum(lengths, 0) - lengths
    values = torch.rand(M, nnz, generator=g)
    values[torch.rand(M, nnz, generator=g) < drop] = 0
    weight = torch.randn(D, M * H, generator=g)
    return weight, indices, offsets, values, lengths


def _forward_backward(fn, weight, indices, offsets, values, sparse, grad_out=None):
    w = weight.clone().requires_grad_(True)
    out = fn(w, indices, offsets, values, sparse=sparse)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    out.backward(grad_out)
    return out, w.grad, grad_out


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("case", [
    dict(),                                            # empty row, dropped entries
    dict(seed=1, D=8, M=1, H=4, lengths=(6, 6, 6)),    # repeated ids, one member
    dict(seed=2, D=1000, M=5, H=3, lengths=(2, 9, 0, 0, 1), drop=0.0),  # most ids absent
])
def test_sparse_bag_equals_embedding_bag_reference(sparse, case):
    weight, indices, offsets, values, _ = _bag(**case)
    out, grad, grad_out = _forward_backward(sparse_bag, weight, indices, offsets, values, sparse)
    ref, ref_grad, _ = _forward_backward(sparse_bag_reference, weight, indices, offsets, values, sparse, grad_out)
    torch.testing.assert_close(out, ref)
    assert grad.is_sparse == sparse and ref_grad.is_sparse == sparse
    if sparse:   # ours: one row per id present, sorted (nothing to coalesce)
        assert torch.equal(grad._indices()[0], torch.unique(indices))
        torch.testing.assert_close(grad.to_dense(), ref_grad.coalesce().to_dense())
    else:
        torch.testing.assert_close(grad, ref_grad)


@pytest.mark.parametrize("sparse", [False, True])
def test_sparse_bag_with_dropped_entries_matches_dense_product(sparse):
    """Entries with value 0 (dropped by input dropout), empty rows and rows with every entry
    dropped: output and gradient equal the dense per-member product."""
    torch.manual_seed(0)
    D, M, H, lengths = 50, 3, 7, torch.tensor([3, 0, 5, 2, 4, 1])
    nnz, B = int(lengths.sum()), len(lengths)
    indices, offsets = torch.randint(0, D, (nnz,)), torch.cumsum(lengths, 0) - lengths
    values = torch.rand(M, nnz)
    values[torch.rand(M, nnz) < 0.4] = 0
    values[1, :4] = 0                                   # member 1: row 0 entirely dropped
    weight = torch.randn(D, M * H, requires_grad=True)
    out = sparse_bag(weight, indices, offsets, values, sparse=sparse)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    X = torch.zeros(M, B, D)
    X.index_put_((torch.arange(M)[:, None], torch.repeat_interleave(torch.arange(B), lengths)[None, :],
                  indices[None, :]), values, accumulate=True)
    reference = weight.detach().clone().requires_grad_(True)
    expected = torch.bmm(X, reference.view(D, M, H).transpose(0, 1))
    expected.backward(grad_out)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weight.grad.to_dense() if sparse else weight.grad, reference.grad)


@pytest.mark.parametrize("sparse", [False, True])
def test_dense_input_equals_per_member_matmul(sparse):
    g = torch.Generator().manual_seed(3)
    D, M, H, B = 11, 3, 4, 5
    x = torch.randn(M, B, D, generator=g)
    weight = torch.randn(D, M * H, generator=g)
    w = weight.clone().requires_grad_(True)
    out = dense_input(w, x, sparse=sparse)
    grad_out = torch.randn(out.shape, generator=g)
    out.backward(grad_out)
    ref_w = weight.clone().requires_grad_(True)
    ref = torch.stack([x[m] @ ref_w[:, m * H:(m + 1) * H] for m in range(M)])
    ref.backward(grad_out)
    torch.testing.assert_close(out, ref)
    assert w.grad.is_sparse == sparse
    torch.testing.assert_close(w.grad.to_dense() if sparse else w.grad, ref_w.grad)


@pytest.mark.parametrize("sparse", [False, True])
def test_tables_sharing_an_id_order_sort_once_and_get_the_same_gradients(sparse, monkeypatch):
    """Two tables over the same ids with one IdOrder (wide & deep's W and E): one sort for both
    backwards, and each table's gradient bit-equal to its own unshared one."""
    from xmlc.kernels import bag as kbag
    w1, indices, offsets, values, _ = _bag(seed=3)
    w2 = torch.randn(50, 3 * 4, generator=torch.Generator().manual_seed(4))
    alone = [_forward_backward(sparse_bag, w, indices, offsets, values, sparse)[1] for w in (w1, w2)]
    sorts, real_sort = [], torch.sort
    monkeypatch.setattr(kbag.torch, "sort", lambda *a, **k: sorts.append(1) or real_sort(*a, **k))
    order = kbag.IdOrder()
    a, b = w1.clone().requires_grad_(True), w2.clone().requires_grad_(True)
    g = torch.Generator().manual_seed(1)   # the grad_out _forward_backward drew for each table
    out_a, out_b = (sparse_bag(w, indices, offsets, values, sparse=sparse, order=order) for w in (a, b))
    (out_a * torch.randn(out_a.shape, generator=g)).sum().backward(retain_graph=True)
    g = torch.Generator().manual_seed(1)
    (out_b * torch.randn(out_b.shape, generator=g)).sum().backward()
    assert len(sorts) == 1
    for shared, own in zip((a.grad, b.grad), alone):
        assert torch.equal(shared.to_dense(), own.to_dense())


def test_id_order_sorts_again_for_other_or_changed_ids():
    order = IdOrder()
    ids = torch.tensor([4, 1, 4, 0])
    first = order.sort(ids)
    assert order.sort(ids) is first and torch.equal(first[0], torch.tensor([0, 1, 4, 4]))
    assert torch.equal(order.sort(ids.clone())[1], first[1])   # other memory, same ids: sorted again
    assert order.sort(ids.clone()) is not first
    ids[0] = 2                                                  # changed in place: stale, sorted again
    assert torch.equal(order.sort(ids)[0], torch.tensor([0, 1, 2, 4]))
    assert torch.equal(order.sort(ids[:2])[0], torch.tensor([1, 2]))   # a view of the same memory, other shape
