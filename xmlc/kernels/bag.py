"""``X_m @ W_m`` for sparse rows ``X`` shared by M members, with a hand-written backward.

* Fast: :func:`sparse_bag`. The forward is one ``embedding_bag`` over the ``(D, M * H)`` table
  viewed as ``(D * M, H)``. The backward sorts the feature ids once (one stable sort), then
  computes the gradient of the touched rows only, ``(U, M * H)`` for the U distinct ids, as a
  second ``embedding_bag`` over the output gradient: no ``(nnz, M * H)`` intermediate and no
  re-coalescing. With ``sparse=True`` the gradient is a coalesced sparse COO tensor of those
  rows (what DistributedDataParallel and :class:`xmlc.optim.AdamW` take), else dense.
  :func:`dense_input` is the same product for dense ``x`` ``(M, B, D)``: one ``bmm``.
* Reference: :func:`sparse_bag_reference`, ``torch.nn.functional.embedding_bag`` with
  ``per_sample_weights`` and ``mode="sum"`` under autograd.
  ``tests/test_kernels_bag.py`` pins the forward and the gradient (sparse and dense) equal.

Used by :class:`xmlc.models.SparseLinear`. Its place is earned by the EmbeddingBag rows of
``python benchmarks/bench_train.py --cases tricks`` (forward + backward against the reference
and against one ``F.embedding_bag`` per member).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sparse_bag", "sparse_bag_reference", "dense_input", "IdOrder"]


class IdOrder:
    """The stable sort of a batch's feature ids, computed by the first backward that needs it and
    reused by the others: tables that read the same ``indices`` (the two of
    :class:`xmlc.models.WideDeep`) pass one ``IdOrder`` to :func:`sparse_bag` and sort once.

    It keeps the ids tensor it sorted, so no other tensor can take its memory meanwhile; a call
    with other ids (or these ids changed in place since) sorts afresh."""

    __slots__ = ("_ids", "_version", "_result")

    def __init__(self):
        self._ids = self._version = self._result = None

    def sort(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``torch.sort(indices, stable=True)``: (sorted ids, order)."""
        cached = self._ids
        if (cached is None or cached.data_ptr() != indices.data_ptr() or cached.shape != indices.shape
                or cached.stride() != indices.stride() or cached.device != indices.device
                or self._version != indices._version):
            self._ids, self._version, self._result = indices, indices._version, torch.sort(indices, stable=True)
        return self._result


def sparse_bag(weight: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, values: torch.Tensor, *,
               sparse: bool = False, order: IdOrder | None = None) -> torch.Tensor:
    """``X_m @ weight_m`` for M members sharing the sparse rows ``X`` (B, D) with their own values.

    Args:
        weight: (D, M * H), member m's (D, H) matrix in columns ``[m*H, (m+1)*H)``.
        indices, offsets: ``X``'s column ids (nnz,) and row starts (B,), as for ``nn.EmbeddingBag``.
        values: (M, nnz) the entries of X for each member (e.g. under per-member dropout).
        sparse: the gradient of ``weight`` as a coalesced sparse COO tensor holding only the
            rows present in ``indices`` (else a dense (D, M * H) tensor, computed the same way
            with an empty bag for every absent id).
        order: an :class:`IdOrder` shared with other tables over the same ``indices``, or None.

    Returns:
        (M, B, H).
    """
    return _SparseBag.apply(weight, indices, offsets, values, sparse, order)


def sparse_bag_reference(weight: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, values: torch.Tensor, *,
                         sparse: bool = False) -> torch.Tensor:
    """The plain algorithm of :func:`sparse_bag`: ``F.embedding_bag`` under autograd.

    Every member's bags are looked up in the whole ``(D, M * H)`` table with that member's
    values (one ``embedding_bag`` of ``M * B`` bags), and member m keeps its own columns
    ``[m*H, (m+1)*H)``; the other columns get a zero gradient. Same arguments and result;
    with ``sparse`` the gradient is ``F.embedding_bag``'s sparse one (uncoalesced: compare it
    after ``.coalesce()``).
    """
    M, nnz, B = values.shape[0], indices.shape[0], offsets.shape[0]
    H = weight.shape[1] // M
    bags = (offsets[None, :] + nnz * torch.arange(M, device=offsets.device)[:, None]).reshape(-1)
    out = F.embedding_bag(indices.repeat(M), weight, bags, mode="sum", per_sample_weights=values.reshape(-1),
                          sparse=sparse)   # (M * B, M * H)
    return torch.stack([out[m * B:(m + 1) * B, m * H:(m + 1) * H] for m in range(M)])


class _SparseBag(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, indices, offsets, values, sparse, order):
        D, M, nnz, B = weight.shape[0], values.shape[0], indices.shape[0], offsets.shape[0]
        H = weight.shape[1] // M
        member = torch.arange(M, device=indices.device)
        rows = (indices[None, :] * M + member[:, None]).reshape(-1)   # rows of the (D * M, H) view
        bags = (offsets[None, :] + member[:, None] * nnz).reshape(-1)
        out = F.embedding_bag(rows, weight.view(D * M, H), bags, mode="sum",
                              per_sample_weights=values.reshape(-1))
        ctx.save_for_backward(indices, offsets, values)
        ctx.shape, ctx.sparse, ctx.order = weight.shape, sparse, order
        return out.view(M, B, H)

    @staticmethod
    def backward(ctx, grad_out):
        indices, offsets, values = ctx.saved_tensors
        (D, MH), (M, B, H), nnz = ctx.shape, grad_out.shape, indices.shape[0]
        device = indices.device
        # the entries grouped by feature id: one stable sort (torch.unique would sort once more),
        # shared with the other tables over these ids when the caller passed an IdOrder
        sorted_ids, order = (torch.sort(indices, stable=True) if ctx.order is None else ctx.order.sort(indices))
        if ctx.sparse:   # the U distinct ids, sorted; u: each sorted entry's rank among them
            first = torch.ones(nnz, dtype=torch.bool, device=device)
            first[1:] = sorted_ids[1:] != sorted_ids[:-1]
            ids = sorted_ids[first]
            u = torch.cumsum(first, 0) - 1
            counts = torch.bincount(u, minlength=ids.shape[0])
        else:            # every id 0..D-1 (absent ones get empty bags, i.e. zero rows): the dense gradient
            u, counts = sorted_ids, torch.bincount(indices, minlength=D)
        start = torch.cumsum(counts, 0) - counts             # first entry of each id in `order`
        lengths = torch.diff(offsets, append=offsets.new_tensor([nnz]))
        row_of_entry = torch.repeat_interleave(torch.arange(B, device=device), lengths, output_size=nnz)
        member = torch.arange(M, device=device)
        # compact bag (id u, member m) = row u * M + m of the (U * M, H) = (U, M * H) gradient; its
        # entries are u's entries, reading row m * B + b of grad_out with the member's values
        pos = (M * start[u] + (torch.arange(nnz, device=device) - start[u]))[None, :] + member[:, None] * counts[u][None, :]
        src = torch.empty(M * nnz, dtype=torch.int64, device=device)
        src[pos.reshape(-1)] = (member[:, None] * B + row_of_entry[order][None, :]).reshape(-1)
        val = torch.empty(M * nnz, dtype=values.dtype, device=device)
        val[pos.reshape(-1)] = values[:, order].reshape(-1)
        bags = (M * start[:, None] + member[None, :] * counts[:, None]).reshape(-1)
        rows = F.embedding_bag(src, grad_out.reshape(M * B, H).to(values.dtype), bags, mode="sum",
                               per_sample_weights=val).view(-1, MH)
        if ctx.sparse:
            rows = torch.sparse_coo_tensor(ids[None, :], rows, (D, MH), is_coalesced=True, check_invariants=False)
        return rows, None, None, None, None, None


def dense_input(weight: torch.Tensor, x: torch.Tensor, *, sparse: bool = False) -> torch.Tensor:
    """``x_m @ weight_m`` for dense ``x`` (M, B, D) and ``weight`` (D, M * H) -> (M, B, H).

    The gradient of ``weight`` is dense or, with ``sparse``, a sparse COO tensor of all D rows
    (the layout DDP and the optimizer expect once the table is sparse).
    """
    return _DenseInput.apply(weight, x, sparse)


class _DenseInput(torch.autograd.Function):
    """``x_m @ weight_m`` for dense x (M, B, D) -> (M, B, H); the gradient of ``weight`` dense or,
    with ``sparse``, as a sparse COO tensor of all D rows (the layout DDP and the optimizer expect)."""

    @staticmethod
    def forward(ctx, weight, x, sparse):
        M, D = x.shape[0], weight.shape[0]
        ctx.save_for_backward(weight, x)
        ctx.sparse = sparse
        return torch.bmm(x, weight.view(D, M, -1).transpose(0, 1))

    @staticmethod
    def backward(ctx, grad):
        weight, x = ctx.saved_tensors
        D = weight.shape[0]
        g = torch.bmm(x.transpose(1, 2), grad.to(x.dtype)).transpose(0, 1).reshape(D, -1)
        return (g.to_sparse(1) if ctx.sparse else g), None, None
