"""Picard (plain fixed-point) iteration: error shrinks by γ per step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from convergent import _kernels
from convergent.solvers._problem import FixedPointProblem, OnFailure, SolveInfo, StoppingRule

#: Picard runs graph by graph (:func:`convergent._kernels.picard_by_graph`) for batches of at
#: least this many graphs; fewer, larger graphs would leave threads idle and not fit in cache.
BY_GRAPH_MIN_GRAPHS = 8


@dataclass(frozen=True)
class Picard:
    """``h_{k+1} = T(h_k)`` from ``h_0 = 0``; one map evaluation per step.

    On a batch of many graphs (nodes sorted by graph, as in a PyG ``Batch``) with a linear
    ``post`` on CPU, the same steps run graph by graph — graphs do not interact — so that a
    graph's weights stay in cache from step to step; the result is the same.

    Args:
        tol: relative tolerance of the stopping rule (see :class:`StoppingRule`).
        max_iter: most map evaluations.
    """

    tol: float
    max_iter: int

    def __call__(self, problem: FixedPointProblem, on_failure: OnFailure = "raise") -> tuple[Tensor, SolveInfo]:
        rule = StoppingRule(problem, self.tol)
        starts = _graph_starts(problem)
        if starts is not None:
            # The same steps graph by graph in the compiled kernel: a batch of small graphs then
            # reads each graph's weights from cache on every step after the first.
            maps, post = problem.maps, problem.post
            h, rule.evaluations = _kernels.picard_by_graph(
                starts, maps.indptr, maps.source, maps.weight, problem.bias, post, problem.gamma, problem.inf_norm,
                self.tol, rule.initial, self.max_iter, rule.iterations, rule.residual, rule.converged)
            return h, rule.report("picard", on_failure)
        h = problem.bias.new_zeros(problem.bias.shape)
        spare = torch.empty_like(h)  # two buffers, swapped every step
        for _ in range(self.max_iter):
            mapped = problem.apply(h, out=spare)
            done = rule.update(h, mapped)
            h, spare = mapped, h
            if done:
                break
        return h, rule.report("picard", on_failure)


def runs_by_graph(problem: FixedPointProblem) -> bool:
    """Whether :class:`Picard` runs ``problem`` graph by graph (see there)."""
    return _graph_starts(problem) is not None


def _graph_starts(problem: FixedPointProblem) -> Tensor | None:
    """``[G + 1]`` row offsets of the graphs when the by-graph kernel can serve ``problem``
    (edges sorted by target, nodes by graph, post linear, CPU), else ``None``."""
    post = problem.post if isinstance(problem.post, Tensor) else None
    if (problem.batch is None or problem.num_graphs < BY_GRAPH_MIN_GRAPHS or problem.maps.indptr is None
            or (problem.post is not None and post is None)
            or not _kernels.available(problem.batch, *(() if post is None else (post,)), problem.maps.weight,
                                      problem.bias)):
        return None
    return problem.graph_starts
