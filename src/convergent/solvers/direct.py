"""Direct (LU) solve of small linear systems, one dense block per graph and head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from convergent.solvers._problem import FixedPointProblem, OnFailure, SolveInfo, StoppingRule


def graph_positions(batch: Tensor | None, num_nodes: int, num_graphs: int) -> tuple[Tensor, Tensor]:
    """``(position of every node inside its graph [N], nodes per graph [G])``."""
    if batch is None:
        return torch.arange(num_nodes), torch.tensor([num_nodes])
    counts = torch.bincount(batch, minlength=num_graphs)
    order = torch.argsort(batch, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(batch)
    position[order] = torch.arange(num_nodes, device=batch.device) - starts[batch[order]]
    return position, counts


#: Batched LU on CPU (``torch.linalg.solve`` of ``[B, n, n]``) on more than one thread hangs
#: or fails in MKL for ``n`` above about 150 ("Parameter 6 was incorrect on entry to DLASWP",
#: pytorch/pytorch#142815); blocks larger than this are solved on one thread.
BATCHED_LU_MAX_THREADED = 128


def _solve_blocks(matrix: Tensor, right: Tensor) -> Tensor:
    """``torch.linalg.solve(matrix, right)`` for ``[..., n, n]`` blocks, around the MKL fault above."""
    if matrix.device.type != "cpu" or matrix.shape[-1] <= BATCHED_LU_MAX_THREADED or torch.get_num_threads() == 1:
        return torch.linalg.solve(matrix, right)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.solve(matrix, right)
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Direct:
    """Solve ``(I − γ D A_m) h = D b_m`` by LU per graph and head (``D`` = ``post`` scale or I).

    Builds dense ``[G, M, n_max, n_max]`` blocks (``n_max`` = largest graph), so
    it is only for small graphs; linear problems only.

    Args:
        tol: relative tolerance the result is checked against (see :class:`StoppingRule`).
    """

    tol: float

    def __call__(self, problem: FixedPointProblem, on_failure: OnFailure = "raise") -> tuple[Tensor, SolveInfo]:
        if not problem.is_linear:
            raise ValueError("solver='direct' solves linear maps only; use 'picard' or 'anderson' with a nonlinearity")
        maps, bias = problem.maps, problem.bias
        num_nodes, num_heads = bias.shape
        position, counts = graph_positions(problem.batch, num_nodes, problem.num_graphs)
        position, counts = position.to(bias.device), counts.to(bias.device)
        size = int(counts.max()) if counts.numel() else 0
        graph = torch.zeros_like(position) if problem.batch is None else problem.batch

        blocks = bias.new_zeros(problem.num_graphs, num_heads, size, size)
        heads = torch.arange(num_heads, device=bias.device)
        edge_graph = graph[maps.target].repeat_interleave(num_heads)
        blocks.index_put_(
            (edge_graph, heads.repeat(maps.target.numel()),
             position[maps.target].repeat_interleave(num_heads),
             position[maps.source].repeat_interleave(num_heads)),
            maps.weight.reshape(-1),
            accumulate=True,
        )
        right = bias.new_zeros(problem.num_graphs, num_heads, size)
        right[graph, :, position] = problem.finish(bias)
        scale = problem.post
        if isinstance(scale, Tensor):
            row_scale = bias.new_zeros(problem.num_graphs, num_heads, size)
            row_scale[graph, :, position] = scale
            blocks = blocks * row_scale.unsqueeze(-1)
        # Padding rows become identity rows with zero right-hand side.
        eye = torch.eye(size, dtype=bias.dtype, device=bias.device)
        solution = _solve_blocks(eye - problem.gamma * blocks, right)
        h = solution[graph, :, position]

        rule = StoppingRule(problem, self.tol)
        rule.update(h, problem.apply(h))
        return h, rule.report("direct", on_failure)
