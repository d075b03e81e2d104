"""``convergent.solve``: the differentiable multi-head fixed-point solve.

The backward pass uses the implicit function theorem: for
``h* = φ(z*)``, ``z* = γ A h* + b`` and an upstream gradient ``ḡ = ∂L/∂h*``
it solves the adjoint fixed point ``u = D (γ Aᵀ u + ḡ)`` with
``D = diag φ'(z*)`` (``D = I`` for the linear map) — a contraction in the dual
norm — and returns ``∂L/∂b = u`` and ``∂L/∂A[t, s] = γ u_t h*_s`` on the edges.
Nothing is unrolled: memory does not grow with the number of iterations.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from convergent import _validation as check
from convergent._nonlinearity import Nonlinearity, derivative, resolve_nonlinearity
from convergent.contraction import contraction_norms
from convergent.solvers import FixedPointProblem, SolveInfo, resolve_solver
from convergent.solvers._problem import OnFailure
from convergent.sparse_map import SparseMaps


def solve(
    edge_index: Tensor,
    edge_weight: Tensor,
    bias: Tensor,
    *,
    gamma: float,
    solver: str = "auto",
    tol: float = 1e-6,
    max_iter: int | None = None,
    nonlinearity: Nonlinearity = None,
    batch: Tensor | None = None,
    on_nonconvergence: OnFailure = "raise",
) -> tuple[Tensor, SolveInfo]:
    r"""Solve ``h_m = γ A_m h_m + b_m`` (or ``h_m = φ(γ A_m h_m + b_m)``) for every head ``m``.

    ``A_m[t, s]`` is the weight of edge ``s → t`` in head ``m`` (PyG convention:
    ``edge_index[0]`` source, ``edge_index[1]`` target), so information flows
    along the edges. The map must contract: ``0 < γ < 1`` and, per head, all
    row sums or all column sums of ``A_m`` at most 1 (see
    :mod:`convergent.contraction`); then the fixed point exists and is unique.

    **Stopping rule**, applied separately to every graph ``g`` of ``batch`` and
    every head ``m``, with norms over the nodes of ``g`` in the norm head ``m``
    contracts in (∞ for row sums, 1 for column sums)::

        ‖T(h) − h‖ ≤ tol · max(‖T(0)‖, ‖T(h)‖)

    The iteration stops when every pair meets it; the returned ``T(h)`` is then
    within ``‖T(h) − h‖ / (1 − γ)`` of the exact fixed point.

    Differentiable with respect to ``edge_weight`` and ``bias`` by an adjoint
    solve (implicit function theorem) with the same solver and rule.

    Args:
        edge_index: ``[2, E]`` int32/int64.
        edge_weight: ``[E, M]`` (or ``[E]`` for one head), non-negative.
        bias: ``[N, M]`` (or ``[N]``), same dtype as ``edge_weight``.
        gamma: contraction factor in ``(0, 1)``.
        solver: ``"picard"``, ``"anderson"``, ``"direct"`` (dense LU per graph,
            small linear systems only) or ``"auto"`` (direct for small linear
            batches where LU costs less than Picard would; else Picard on CPU
            batches of 8 graphs or more with a linear map, which it runs graph by
            graph, while it needs at most 1000 steps; else Anderson for γ > 0.6
            and Picard otherwise).
        tol: relative tolerance of the stopping rule.
        max_iter: most map evaluations (default: twice what Picard provably needs, plus 20).
        nonlinearity: ``None`` (linear), ``"tanh"``, ``"relu"``, ``"leaky_relu"``,
            ``"hardtanh"``, ``"softsign"`` or an elementwise 1-Lipschitz callable.
        batch: ``[N]`` graph id of every node (PyG ``Batch.batch``); ``None`` for one graph.
        on_nonconvergence: ``"raise"`` (:class:`~convergent.solvers.ConvergenceError`),
            ``"warn"`` or ``"ignore"`` when ``max_iter`` is reached first, forward or backward.

    Returns:
        ``(h, info)``: ``h`` of the shape of ``bias``, and a :class:`SolveInfo`
        whose ``backward`` field is filled by the next backward pass.
    """
    edge_weight = check.check_tensor("edge_weight", edge_weight)
    bias = check.check_tensor("bias", bias)
    single_head = bias.dim() == 1
    if single_head:
        bias = bias.unsqueeze(-1)
    if edge_weight.dim() == 1:
        edge_weight = edge_weight.unsqueeze(-1)
    if bias.dim() != 2:
        raise ValueError(f"`bias` must have shape [N, M] or [N] (got {list(bias.shape)})")
    num_nodes, num_heads = bias.shape
    edge_index = check.check_edge_index(edge_index, num_nodes)
    if edge_weight.dim() != 2 or edge_weight.shape != (edge_index.shape[1], num_heads):
        raise ValueError(
            f"`edge_weight` must have shape [E, M] = [{edge_index.shape[1]}, {num_heads}] "
            f"to match `edge_index` and `bias` (got {list(edge_weight.shape)})"
        )
    for name, value in (("edge_weight", edge_weight), ("bias", bias)):
        check.check_floating(name, value)
        check.check_finite(name, value)
    if edge_weight.dtype != bias.dtype:
        raise ValueError(f"`edge_weight` and `bias` must share a dtype (got {edge_weight.dtype} and {bias.dtype})")
    if edge_weight.numel() and edge_weight.min() < 0:
        raise ValueError(f"`edge_weight` must be non-negative (smallest weight {edge_weight.min().item():.6g})")
    gamma = check.check_gamma(gamma)
    tol = check.check_tol(tol)
    if max_iter is not None:
        max_iter = check.check_max_iter(max_iter)
    if on_nonconvergence not in ("raise", "warn", "ignore"):
        raise ValueError(f"`on_nonconvergence` must be 'raise', 'warn' or 'ignore' (got {on_nonconvergence!r})")
    batch, num_graphs = check.check_batch(batch, num_nodes, edge_index)
    function = resolve_nonlinearity(nonlinearity)
    if function is not None:
        # Catch a steep φ before it can make the iteration diverge; checked again at the fixed point.
        derivative(function, bias.detach())

    maps, edge_order = SparseMaps.by_target(edge_index[0], edge_index[1], edge_weight.detach(), num_nodes)
    problem = FixedPointProblem(
        maps, bias.detach().contiguous(), gamma, function, batch, num_graphs, contraction_norms(maps, gamma)
    )
    chosen = resolve_solver(solver, problem, tol, max_iter)
    report: dict[str, SolveInfo] = {}
    h = _ImplicitFixedPoint.apply(edge_weight, bias, problem, edge_order, chosen, on_nonconvergence, report)
    return (h.squeeze(-1) if single_head else h), report["info"]


class _ImplicitFixedPoint(torch.autograd.Function):
    """Forward: solve the fixed point. Backward: adjoint solve with ``Aᵀ``."""

    @staticmethod
    def forward(ctx: Any, edge_weight: Tensor, bias: Tensor, problem: FixedPointProblem,
                edge_order: Tensor | None, solver: Any, on_failure: OnFailure, report: dict) -> Tensor:
        h, info = solver(problem, on_failure)
        slope = None
        if problem.post is not None:
            slope = derivative(problem.post, problem.preactivation(h))
        report["info"] = info
        ctx.problem, ctx.edge_order, ctx.solver, ctx.on_failure, ctx.info = problem, edge_order, solver, on_failure, info
        ctx.save_for_backward(h, slope)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_h: Tensor) -> tuple[Tensor | None, ...]:
        h, slope = ctx.saved_tensors
        problem: FixedPointProblem = ctx.problem
        u, ctx.info.backward = _adjoint_solve(problem, grad_h, slope, ctx.solver, ctx.on_failure)
        grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_weight = problem.maps.edge_products(u, h.detach(), problem.gamma)
            if ctx.edge_order is not None:  # back to the caller's edge order
                grad_weight = torch.empty_like(grad_weight).index_copy_(0, ctx.edge_order, grad_weight)
        grad_bias = u if ctx.needs_input_grad[1] else None
        return grad_weight, grad_bias, None, None, None, None, None


def _adjoint_solve(problem: FixedPointProblem, grad_h: Tensor, slope: Tensor | None, solver: Any,
                   on_failure: OnFailure) -> tuple[Tensor, SolveInfo]:
    """``u = D (γ Aᵀ u + ḡ)``; the transposed maps are freed on return, before the weight gradient."""
    adjoint = FixedPointProblem(
        problem.maps.transpose(), grad_h.contiguous(), problem.gamma, slope,
        problem.batch, problem.num_graphs, ~problem.inf_norm,
    )
    u, info = solver(adjoint, on_failure)
    return u.contiguous(), info
