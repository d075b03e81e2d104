"""Anderson acceleration, with separate mixing weights for every graph and head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from convergent.solvers._problem import FixedPointProblem, OnFailure, SolveInfo, StoppingRule


@dataclass(frozen=True)
class Anderson:
    """Anderson acceleration (type II, Walker & Ni 2011) of ``h = T(h)``.

    Each graph ``g`` and head ``m`` is its own system: the mixing weights
    ``α`` minimise ``‖Σ_j α_j f_j‖₂`` over that graph's nodes subject to
    ``Σ_j α_j = 1``, where ``f_j = T(h_j) − h_j`` are the last ``memory``
    residuals, and the next iterate is ``Σ_j α_j T(h_j)``. The history costs
    ``2 · memory · N · M`` numbers, independent of the number of iterations.

    Args:
        tol: relative tolerance of the stopping rule (see :class:`StoppingRule`).
        max_iter: most map evaluations.
        memory: how many past iterates are mixed.
        regularization: Tikhonov term, relative to the Gram matrix's diagonal.
    """

    tol: float
    max_iter: int
    memory: int = 5
    regularization: float = 1e-8

    def __call__(self, problem: FixedPointProblem, on_failure: OnFailure = "raise") -> tuple[Tensor, SolveInfo]:
        rule = StoppingRule(problem, self.tol)
        bias = problem.bias
        residuals = bias.new_zeros(self.memory, *bias.shape)  # T(h_j) − h_j
        outputs = bias.new_zeros(self.memory, *bias.shape)  # T(h_j)
        # Gram matrices of the residuals, per graph and head; float64 since
        # these tiny systems are ill-conditioned near convergence.
        gram = torch.zeros(rule.initial.shape + (self.memory, self.memory), dtype=torch.float64, device=bias.device)
        h = bias.new_zeros(bias.shape)
        for k in range(self.max_iter):
            mapped = problem.apply(h)
            if rule.update(h, mapped):
                h = mapped
                break
            slot, filled = k % self.memory, min(k + 1, self.memory)
            outputs[slot] = mapped
            torch.sub(mapped, h, out=residuals[slot])
            dots = self._graph_dots(problem, residuals[:filled], residuals[slot]).double()  # [filled, G, M]
            gram[..., slot, :filled] = dots.movedim(0, -1)
            gram[..., :filled, slot] = dots.movedim(0, -1)
            weights = self._mixing_weights(gram[..., :filled, :filled])  # [G, M, filled]
            mixed = self._mix(problem, weights.to(bias.dtype), outputs[:filled])
            # Pairs that already met the rule take plain Picard steps, which can only
            # shrink their residual, while the others are still being mixed.
            h = torch.where(problem.per_node(rule.converged), mapped, mixed)
        else:
            h = mapped  # the last evaluated T(h): the one the reported residual bounds
        return h, rule.report("anderson", on_failure)

    @staticmethod
    def _graph_dots(problem: FixedPointProblem, history: Tensor, new: Tensor) -> Tensor:
        """``[J, N, M] · [N, M] -> [J, G, M]``: dot products over each graph's nodes."""
        if problem.batch is None:
            return torch.einsum("jnm,nm->jm", history, new).unsqueeze(1)
        return scatter(history * new, problem.batch, 1, problem.num_graphs, reduce="sum")

    @staticmethod
    def _mix(problem: FixedPointProblem, weights: Tensor, history: Tensor) -> Tensor:
        """``Σ_j α_j[g(n), m] · history[j, n, m]`` with ``weights`` ``[G, M, J]``, history ``[J, N, M]``."""
        if problem.batch is None:
            return torch.einsum("mj,jnm->nm", weights[0], history)
        return torch.einsum("nmj,jnm->nm", problem.per_node(weights), history)

    def _mixing_weights(self, gram: Tensor) -> Tensor:
        """Solve ``min αᵀ H α`` s.t. ``Σ α = 1``: ``α = H⁻¹1 / (1ᵀ H⁻¹ 1)``, batched."""
        size = gram.shape[-1]
        scale = gram.diagonal(dim1=-2, dim2=-1).amax(-1, keepdim=True).clamp_min(1e-200)  # all-zero residuals: mix evenly
        eye = torch.eye(size, dtype=gram.dtype, device=gram.device)
        regularized = gram + (self.regularization * scale).unsqueeze(-1) * eye
        ones = torch.ones(gram.shape[:-1] + (1,), dtype=gram.dtype, device=gram.device)
        solution = torch.linalg.solve(regularized, ones).squeeze(-1)
        return solution / solution.sum(-1, keepdim=True)
