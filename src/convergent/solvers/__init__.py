"""Fixed-point solvers: small immutable objects whose fields are their settings.

Each solver is called as ``solver(problem, on_failure) -> (h, SolveInfo)`` on a
:class:`FixedPointProblem`; the same object serves the forward solve and the
adjoint solve of the backward pass.
"""

from convergent.solvers._problem import (
    ConvergenceError,
    FixedPointProblem,
    SolveInfo,
    StoppingRule,
    default_max_iter,
)
from convergent.solvers.anderson import Anderson
from convergent.solvers.direct import Direct
from convergent.solvers.picard import Picard
from convergent.solvers.resolver import resolve_solver

__all__ = [
    "Anderson",
    "ConvergenceError",
    "Direct",
    "FixedPointProblem",
    "Picard",
    "SolveInfo",
    "StoppingRule",
    "default_max_iter",
    "resolve_solver",
]
