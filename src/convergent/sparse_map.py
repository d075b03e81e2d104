"""Multi-head sparse linear maps that share one graph's sparsity pattern."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from convergent import _kernels


@dataclass(frozen=True)
class SparseMaps:
    """``M`` sparse ``N × N`` maps ``A_m`` with one sparsity pattern.

    Convention (PyG): edge ``e`` goes from ``source[e]`` to ``target[e]`` and
    ``A_m[target[e], source[e]] = weight[e, m]``, so ``(A x)[t]`` sums the
    messages ``weight[e] * x[s]`` of the edges ``s → t``. Duplicate edges add up.

    Args:
        source: ``[E]`` int64 source node of every edge.
        target: ``[E]`` int64 target node of every edge.
        weight: ``[E, M]`` edge-major weights, one column per head.
        num_nodes: ``N``.
        indptr: ``[N + 1]`` offsets of the edge groups when the edges are sorted by
            target, which lets :meth:`matmul` run the compiled kernel; see :meth:`by_target`.
    """

    source: Tensor
    target: Tensor
    weight: Tensor
    num_nodes: int
    indptr: Tensor | None = None

    @classmethod
    def by_target(cls, source: Tensor, target: Tensor, weight: Tensor, num_nodes: int) -> tuple[SparseMaps, Tensor | None]:
        """The same maps with edges sorted by target (stable), where the compiled kernel can use them.

        Returns:
            ``(maps, order)``: ``order[i]`` is the input position of the ``i``-th
            edge of ``maps``, or ``None`` when nothing was reordered.
        """
        if not _kernels.available(weight):
            return cls(source, target, weight, num_nodes), None
        indptr = _kernels.sorted_offsets(target, num_nodes)
        if indptr is not None:  # already sorted: only the offsets are needed
            return cls(source, target, weight.contiguous(), num_nodes, indptr), None
        indptr, order = _kernels.group_by(target, num_nodes)
        source, target, weight = (_kernels.gather_rows(t.contiguous(), order) for t in (source, target, weight))
        return cls(source, target, weight, num_nodes, indptr), order

    @property
    def num_heads(self) -> int:
        return self.weight.shape[1]

    def matmul(self, x: Tensor, *, scale: float = 1.0, bias: Tensor | None = None,
               out: Tensor | None = None) -> Tensor:
        """``y[:, m] = scale · A_m x[:, m] + bias[:, m]`` for all heads at once: ``[N, M] -> [N, M]``.

        ``bias`` (``[N, M]``) defaults to zero; ``out`` is an optional ``[N, M]`` buffer
        for the result, which spares iterative solvers a large allocation per step.
        """
        extra = [t for t in (bias, out) if t is not None]
        if self.indptr is not None and _kernels.available(*extra, self.weight, x):
            return _kernels.csr_multihead_matmul(self.indptr, self.source, self.weight, x.contiguous(),
                                                 scale, bias, out)
        product = x.new_zeros(self.num_nodes, x.shape[1]).index_add_(0, self.target, self.weight * x[self.source])
        product = product * scale if bias is None else torch.add(bias, product, alpha=scale)
        return product if out is None else out.copy_(product)

    def edge_products(self, left: Tensor, right: Tensor, scale: float = 1.0) -> Tensor:
        """``[E, M]``: ``scale · left[target[e]] · right[source[e]]`` per edge and head
        (the gradient of ``leftᵀ A right`` with respect to the weights)."""
        if _kernels.available(self.weight, left, right):
            return _kernels.edge_outer_product(self.source, self.target, scale, left, right)
        return scale * left[self.target] * right[self.source]

    def transpose(self) -> SparseMaps:
        """The maps ``A_mᵀ`` (every edge reversed).

        Where the compiled kernel applies, the reversed edges are sorted by their new
        target, which copies the weights once: the product then reads them in order.
        """
        return SparseMaps.by_target(self.target, self.source, self.weight, self.num_nodes)[0]

    def row_sums(self) -> Tensor:
        """``[N, M]``: ``Σ_s A_m[t, s]`` for every node ``t`` (sum over in-edges)."""
        if self.indptr is not None:  # A·1, row by row
            return self.matmul(self.weight.new_ones(self.num_nodes, self.num_heads))
        return self._sum_at(self.target)

    def column_sums(self) -> Tensor:
        """``[N, M]``: ``Σ_t A_m[t, s]`` for every node ``s`` (sum over out-edges)."""
        return self._sum_at(self.source)

    def to_dense(self) -> Tensor:
        """``[M, N, N]`` dense copy, for tests and small systems only."""
        dense = self.weight.new_zeros(self.num_heads, self.num_nodes, self.num_nodes)
        heads = torch.arange(self.num_heads, device=self.weight.device)
        dense.index_put_(
            (heads.repeat(self.target.numel()),
             self.target.repeat_interleave(self.num_heads),
             self.source.repeat_interleave(self.num_heads)),
            self.weight.reshape(-1),
            accumulate=True,
        )
        return dense

    def _sum_at(self, index: Tensor) -> Tensor:
        out = self.weight.new_zeros(self.num_nodes, self.num_heads)
        return out.index_add_(0, index, self.weight)
