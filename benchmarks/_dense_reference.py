"""The reference CGS code's dense formulation, for side-by-side benchmarks.

Park et al.'s code fills a dense ``[heads, N, N]`` tensor from the edge
weights of the whole batch, iterates ``h ← γ A h + b`` with batched matmul
without autograd, takes one more step on the autograd tape, and replaces the
incoming gradient by the solution of the dense adjoint ``y = γ Aᵀ y + g`` in a
hook. :func:`dense_solve` does the same behind ``convergent.solve``'s
signature, so a model can swap it in; it uses convergent's stopping rule per
head (relative, in the contracting norm) so both solve to the same accuracy.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor

from convergent.solvers import default_max_iter


def dense_picard(A: Tensor, b: Tensor, gamma: float, tol: float, inf_norm: Tensor,
                 max_iter: int) -> tuple[Tensor, int]:
    """``h = γ A h + b`` by batched matmul, ``A`` [M, N, N], ``b`` [M, N, 1], until every head
    meets convergent's rule ``‖T(h) − h‖ ≤ tol · max(‖b‖, ‖T(h)‖)`` (∞- or 1-norm per head)."""
    def norm(v):
        v = v.abs().squeeze(-1)
        return torch.where(inf_norm, v.amax(1), v.sum(1))

    initial, h = norm(b), torch.zeros_like(b)
    for iteration in range(1, max_iter + 1):
        mapped = gamma * torch.bmm(A, h) + b
        done = bool((norm(mapped - h) <= tol * torch.maximum(initial, norm(mapped))).all())
        h = mapped
        if done:
            return h, iteration
    raise RuntimeError(f"dense iteration did not converge in {max_iter} steps")


def dense_solve(edge_index: Tensor, edge_weight: Tensor, bias: Tensor, *, gamma: float, tol: float = 1e-6,
                **_ignored) -> tuple[Tensor, SimpleNamespace]:
    """Dense stand-in for :func:`convergent.solve` (linear map; ``batch`` and solver choice ignored)."""
    num_nodes, heads = bias.shape
    source, target = edge_index
    row_sums = edge_weight.detach().new_zeros(num_nodes, heads).index_add_(0, target, edge_weight.detach())
    inf_norm = row_sums.amax(0) <= 1 + 1e3 * torch.finfo(edge_weight.dtype).eps
    A = edge_weight.new_zeros(heads, num_nodes, num_nodes)
    A = A.index_put((torch.arange(heads).unsqueeze(1), target.unsqueeze(0), source.unsqueeze(0)),
                    edge_weight.T, accumulate=True)
    b = bias.T.unsqueeze(-1)
    info = SimpleNamespace(backward=None)
    with torch.no_grad():
        h, info.iterations = dense_picard(A, b, gamma, tol, inf_norm, default_max_iter(gamma, tol))
    z = gamma * torch.bmm(A, h) + b  # the extra step that puts A and b on the autograd tape
    if z.requires_grad:
        transposed = A.detach().transpose(1, 2).contiguous()

        def adjoint(grad: Tensor) -> Tensor:
            y, info.backward = dense_picard(transposed, grad, gamma, tol, ~inf_norm, default_max_iter(gamma, tol))
            return y

        z.register_hook(adjoint)
    return z.squeeze(-1).T, info
