"""One place that turns ``solver="..."`` strings into solver objects."""

from __future__ import annotations

from typing import Union

from convergent.solvers._problem import FixedPointProblem, default_max_iter, picard_steps
from convergent.solvers.anderson import Anderson
from convergent.solvers.direct import Direct
from convergent.solvers.picard import Picard, runs_by_graph

Solver = Union[Picard, Anderson, Direct]

SOLVER_NAMES = ("auto", "picard", "anderson", "direct")

#: "auto" may solve directly only while the dense blocks hold at most this many
#: entries and no graph has more than DIRECT_MAX_NODES nodes.
DIRECT_MAX_ELEMENTS = 2**24
DIRECT_MAX_NODES = 64
#: "auto" accelerates with Anderson above this γ (Picard needs log(tol)/log(γ) steps)...
ANDERSON_MIN_GAMMA = 0.6
#: ...unless Picard runs graph by graph (a CPU batch of many graphs) within this many steps: a
#: step of it costs a small fraction of one of Anderson's, whose per-graph mixing is the dearer part.
BY_GRAPH_MAX_STEPS = 1000


def resolve_solver(name: str, problem: FixedPointProblem, tol: float, max_iter: int | None) -> Solver:
    """Pick the solver named ``name`` (``"auto"`` chooses from the problem's size and γ)."""
    if name not in SOLVER_NAMES:
        raise ValueError(f"`solver` must be one of {SOLVER_NAMES} (got {name!r})")
    if name == "auto":
        name = _choose(problem, tol)
    if name == "direct":
        return Direct(tol)
    max_iter = default_max_iter(problem.gamma, tol) if max_iter is None else max_iter
    return Picard(tol, max_iter) if name == "picard" else Anderson(tol, max_iter)


def _choose(problem: FixedPointProblem, tol: float) -> str:
    """Direct when its LU work (``G·n³/3`` per head) is below what Picard would spend
    (``ceil(log tol / log γ)`` products of ``E + N`` multiply-adds); else Picard where it runs
    graph by graph in at most :data:`BY_GRAPH_MAX_STEPS` steps, or for γ ≤ 0.6; else Anderson."""
    largest = _largest_graph(problem)
    block_elements = problem.num_graphs * problem.maps.num_heads * largest**2
    if problem.is_linear and largest <= DIRECT_MAX_NODES and block_elements <= DIRECT_MAX_ELEMENTS:
        lu_work = problem.num_graphs * largest**3 / 3
        picard_work = picard_steps(problem.gamma, tol) * (problem.maps.source.numel() + problem.maps.num_nodes)
        if lu_work <= picard_work:
            return "direct"
    if runs_by_graph(problem) and picard_steps(problem.gamma, tol) <= BY_GRAPH_MAX_STEPS:
        return "picard"
    return "anderson" if problem.gamma > ANDERSON_MIN_GAMMA else "picard"


def _largest_graph(problem: FixedPointProblem) -> int:
    if problem.batch is None:
        return problem.maps.num_nodes
    return int(problem.batch.bincount().max()) if problem.batch.numel() else 0
