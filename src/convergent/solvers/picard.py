"""Picard (plain fixed-point) iteration: error shrinks by γ per step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from convergent.solvers._problem import FixedPointProblem, OnFailure, SolveInfo, StoppingRule


@dataclass(frozen=True)
class Picard:
    """``h_{k+1} = T(h_k)`` from ``h_0 = 0``; one map evaluation per step.

    Args:
        tol: relative tolerance of the stopping rule (see :class:`StoppingRule`).
        max_iter: most map evaluations.
    """

    tol: float
    max_iter: int

    def __call__(self, problem: FixedPointProblem, on_failure: OnFailure = "raise") -> tuple[Tensor, SolveInfo]:
        rule = StoppingRule(problem, self.tol)
        h = problem.bias.new_zeros(problem.bias.shape)
        spare = torch.empty_like(h)  # two buffers, swapped every step
        for _ in range(self.max_iter):
            mapped = problem.apply(h, out=spare)
            done = rule.update(h, mapped)
            h, spare = mapped, h
            if done:
                break
        return h, rule.report("picard", on_failure)
