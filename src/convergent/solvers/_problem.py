"""The fixed-point problem every solver takes, its stopping rule and its report."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Literal, Union

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from convergent import _kernels
from convergent.sparse_map import SparseMaps

#: What follows ``γ A h + b``: ``None`` (linear), a ``[N, M]`` diagonal scale
#: (the adjoint of a nonlinear map), or an elementwise 1-Lipschitz function.
Post = Union[None, Tensor, Callable[[Tensor], Tensor]]

OnFailure = Literal["raise", "warn", "ignore"]


class ConvergenceError(RuntimeError):
    """A fixed-point solve stopped at ``max_iter`` before meeting its tolerance."""


@dataclass(frozen=True)
class FixedPointProblem:
    """``h = post(γ A_m h + b_m)`` for every head ``m`` on a batch of graphs.

    Args:
        maps: the ``M`` maps ``A_m``, each with ``‖A_m‖ ≤ 1`` in the norm of ``inf_norm``.
        bias: ``[N, M]``.
        gamma: ``0 < γ < 1``.
        post: see :data:`Post`.
        batch: ``[N]`` graph id of every node, or ``None`` for one graph.
        num_graphs: ``G``.
        inf_norm: ``[M]`` bool, ``True`` where head ``m`` contracts in the ∞-norm,
            ``False`` where in the 1-norm. Residuals are measured in that norm,
            per graph and head.
    """

    maps: SparseMaps
    bias: Tensor
    gamma: float
    post: Post
    batch: Tensor | None
    num_graphs: int
    inf_norm: Tensor

    @cached_property
    def graph_starts(self) -> Tensor | None:
        """``[G + 1]`` row offsets of the graphs where the nodes are sorted by graph (a PyG
        ``Batch``), else ``None``."""
        return None if self.batch is None else _kernels.sorted_offsets(self.batch, self.num_graphs)

    @property
    def is_linear(self) -> bool:
        return self.post is None or isinstance(self.post, Tensor)

    def finish(self, z: Tensor) -> Tensor:
        if self.post is None:
            return z
        if isinstance(self.post, Tensor):
            return self.post * z
        return self.post(z)

    def preactivation(self, h: Tensor, out: Tensor | None = None) -> Tensor:
        """``z = γ A h + b``; ``[N, M] -> [N, M]``, written into ``out`` when given."""
        return self.maps.matmul(h, scale=self.gamma, bias=self.bias, out=out)

    def apply(self, h: Tensor, out: Tensor | None = None) -> Tensor:
        """``T(h) = post(γ A h + b)``; ``[N, M] -> [N, M]``, in ``out`` when given and ``post`` is linear."""
        z = self.preactivation(h, out)
        return z.mul_(self.post) if isinstance(self.post, Tensor) else self.finish(z)

    @cached_property
    def _orders(self) -> tuple[str, ...]:
        """The norms some head needs: ``"max"`` (∞-norm) and/or ``"sum"`` (1-norm)."""
        return tuple(order for order, used in (("max", self.inf_norm.any()), ("sum", (~self.inf_norm).any()))
                     if used)

    def norm(self, v: Tensor) -> Tensor:
        """``[N, M] -> [G, M]``: per-graph, per-head norm in each head's contraction norm."""
        if v.shape[0] == 0:
            return v.new_zeros(self.num_graphs, v.shape[1])
        norms = {}
        for order in self._orders:
            if self.batch is None:
                norms[order] = torch.linalg.vector_norm(v, math.inf if order == "max" else 1, dim=0, keepdim=True)
            else:
                norms[order] = scatter(v.abs(), self.batch, 0, self.num_graphs, reduce=order)
        if len(norms) == 1:
            return next(iter(norms.values()))
        return torch.where(self.inf_norm, norms["max"], norms["sum"])

    def step_norms(self, h: Tensor, mapped: Tensor) -> tuple[Tensor, Tensor]:
        """``(norm(mapped − h), norm(mapped))``, each ``[G, M]``, in one pass where the kernel applies."""
        graphs = () if self.batch is None else (self.batch,)
        if _kernels.available(*graphs, h, mapped):
            step_max, step_sum, size_max, size_sum = _kernels.step_norms(mapped, h, self.batch, self.num_graphs)
            return torch.where(self.inf_norm, step_max, step_sum), torch.where(self.inf_norm, size_max, size_sum)
        return self.norm(mapped - h), self.norm(mapped)

    def per_node(self, per_graph: Tensor) -> Tensor:
        """Broadcast a ``[G, ...]`` tensor to ``[N, ...]``."""
        if self.batch is None:
            return per_graph.expand(self.bias.shape[0], *per_graph.shape[1:])
        return per_graph[self.batch]


@dataclass
class SolveInfo:
    """Report of one fixed-point solve; all per-graph fields are ``[G, M]``.

    Attributes:
        solver: name of the solver that ran.
        iterations: ``[G, M]`` map evaluations until graph ``g``, head ``m`` met
            the stopping rule (``max_iter`` where it never did).
        residual: ``[G, M]`` final ``‖T(h) − h‖`` in each head's contraction norm.
        error_bound: ``[G, M]`` a-posteriori bound ``residual / (1 − γ)`` on the
            distance of the returned ``h`` from the exact fixed point.
        converged: ``[G, M]`` bool.
        backward: the report of the adjoint solve of the last backward pass
            through this solve, once there was one.
    """

    solver: str
    iterations: Tensor
    residual: Tensor
    error_bound: Tensor
    converged: Tensor
    backward: SolveInfo | None = field(default=None, repr=False)

    @property
    def max_iterations(self) -> int:
        return int(self.iterations.max()) if self.iterations.numel() else 0

    def summary(self) -> str:
        return (
            f"{self.solver}: {self.max_iterations} iterations, max residual "
            f"{self.residual.max().item():.3g}, max error bound {self.error_bound.max().item():.3g}, "
            f"{int(self.converged.sum())}/{self.converged.numel()} (graph, head) pairs converged"
        )


def picard_steps(gamma: float, tol: float) -> int:
    """``ceil(log(tol) / log(γ))``: Picard steps from zero the contraction guarantees for ``tol``."""
    return math.ceil(math.log(tol) / math.log(gamma))


def default_max_iter(gamma: float, tol: float) -> int:
    """Twice the Picard iterations the contraction guarantees, plus slack for rounding."""
    return 2 * picard_steps(gamma, tol) + 20


class StoppingRule:
    """Tracks, per graph and head, the rule ``‖T(h) − h‖ ≤ tol · max(‖T(0)‖, ‖T(h)‖)``.

    ``T(0) = post(b)`` is the first step from zero, so that Picard iteration from
    zero provably stops within ``ceil(log(tol) / log(γ)) + 1`` map evaluations;
    ``‖T(h)‖`` keeps the rule reachable under floating-point rounding when the
    solution is much larger than the bias (γ close to 1).
    """

    def __init__(self, problem: FixedPointProblem, tol: float):
        self.problem = problem
        self.tol = tol
        self.initial = problem.norm(problem.finish(problem.bias))
        shape = self.initial.shape
        self.iterations = torch.zeros(shape, dtype=torch.long, device=self.initial.device)
        self.converged = torch.zeros(shape, dtype=torch.bool, device=self.initial.device)
        self.residual = torch.full_like(self.initial, math.inf)
        self.evaluations = 0

    def update(self, h: Tensor, mapped: Tensor) -> bool:
        """Record the map evaluation ``mapped = T(h)``; return whether every pair has converged."""
        self.evaluations += 1
        self.residual, size = self.problem.step_norms(h, mapped)
        scale = torch.maximum(self.initial, size)
        newly = ~self.converged & (self.residual <= self.tol * scale)
        self.iterations[newly] = self.evaluations
        self.converged |= newly
        return bool(self.converged.all())

    def _advice(self, solver: str) -> str:
        if self.tol < 100 * torch.finfo(self.problem.bias.dtype).eps:
            return f"; tol={self.tol:g} is near the rounding error of {self.problem.bias.dtype}, use float64"
        if solver == "anderson":
            return "; solver='picard' converges more slowly but never stalls"
        return "; solver='anderson' needs fewer steps"

    def report(self, solver: str, on_failure: OnFailure) -> SolveInfo:
        self.iterations[~self.converged] = self.evaluations
        info = SolveInfo(
            solver=solver,
            iterations=self.iterations,
            residual=self.residual,
            error_bound=self.residual / (1.0 - self.problem.gamma),
            converged=self.converged,
        )
        if not self.converged.all():
            g, m = (int(i) for i in (~self.converged).nonzero()[0])
            message = (
                f"{solver} solve did not reach tol={self.tol:g} within max_iter="
                f"{self.evaluations}: {int((~self.converged).sum())} (graph, head) pairs left, "
                f"e.g. graph {g}, head {m} with residual {self.residual[g, m].item():.3g}. "
                f"Increase `max_iter` or loosen `tol`{self._advice(solver)}."
            )
            if on_failure == "raise":
                raise ConvergenceError(message)
            if on_failure == "warn":
                warnings.warn(message, RuntimeWarning, stacklevel=4)
        return info
