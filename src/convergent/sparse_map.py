"""Multi-head sparse linear maps that share one graph's sparsity pattern."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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
    """

    source: Tensor
    target: Tensor
    weight: Tensor
    num_nodes: int

    @property
    def num_heads(self) -> int:
        return self.weight.shape[1]

    def matmul(self, x: Tensor) -> Tensor:
        """``y[:, m] = A_m x[:, m]`` for all heads at once: ``[N, M] -> [N, M]``."""
        out = x.new_zeros(self.num_nodes, x.shape[1])
        return out.index_add_(0, self.target, self.weight * x[self.source])

    def transpose(self) -> SparseMaps:
        """The maps ``A_mᵀ`` (every edge reversed)."""
        return SparseMaps(self.target, self.source, self.weight, self.num_nodes)

    def row_sums(self) -> Tensor:
        """``[N, M]``: ``Σ_s A_m[t, s]`` for every node ``t`` (sum over in-edges)."""
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
