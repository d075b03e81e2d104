"""Anderson acceleration, with separate mixing weights for every graph and head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from convergent import _kernels
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
        mixes = bias.new_zeros(2, *bias.shape)  # the iterate, alternately in each
        graphs = () if problem.batch is None else (problem.batch,)
        compiled = _kernels.available(*graphs, bias)
        # Gram matrices of the residuals, per graph and head; float64 since
        # these tiny systems are ill-conditioned near convergence.
        gram = torch.zeros(rule.initial.shape + (self.memory, self.memory), dtype=torch.float64, device=bias.device)
        h = mixes[1]
        for k in range(self.max_iter):
            slot, filled = k % self.memory, min(k + 1, self.memory)
            mapped = problem.apply(h, out=outputs[slot])
            if rule.update(h, mapped):
                h = mapped
                break
            if mapped.data_ptr() != outputs[slot].data_ptr():  # a nonlinear φ returned a new tensor
                outputs[slot].copy_(mapped)
            torch.sub(mapped, h, out=residuals[slot])
            dots = self._graph_dots(problem, residuals[:filled], residuals[slot], compiled)  # [filled, G, M]
            gram[..., slot, :filled] = dots.movedim(0, -1)
            gram[..., :filled, slot] = dots.movedim(0, -1)
            weights = self._mixing_weights(gram[..., :filled, :filled])  # [G, M, filled]
            # Pairs that already met the rule take plain Picard steps, which can only
            # shrink their residual, while the others are still being mixed.
            h = self._mix(problem, weights, outputs[:filled], mapped, rule.converged, mixes[k % 2], compiled)
        else:
            h = mapped  # the last evaluated T(h): the one the reported residual bounds
        return h.clone(), rule.report("anderson", on_failure)

    @staticmethod
    def _graph_dots(problem: FixedPointProblem, history: Tensor, new: Tensor, compiled: bool) -> Tensor:
        """``[J, N, M] · [N, M] -> [J, G, M]`` (float64): dot products over each graph's nodes."""
        if compiled:
            return _kernels.history_dots(history, new, problem.batch, problem.num_graphs)
        if problem.batch is None:
            return torch.einsum("jnm,nm->jm", history, new).unsqueeze(1).double()
        return scatter(history * new, problem.batch, 1, problem.num_graphs, reduce="sum").double()

    @staticmethod
    def _mix(problem: FixedPointProblem, weights: Tensor, history: Tensor, mapped: Tensor, converged: Tensor,
             out: Tensor, compiled: bool) -> Tensor:
        """``Σ_j α_j[g(n), m] · history[j, n, m]`` with ``weights`` ``[G, M, J]``, history ``[J, N, M]``,
        or ``mapped`` for the ``converged`` ``[G, M]`` pairs; into ``out``."""
        if compiled:
            return _kernels.mix_history(weights, history, mapped, converged, problem.batch, out)
        weights = weights.to(history.dtype)
        if problem.batch is None:
            mixed = torch.einsum("mj,jnm->nm", weights[0], history)
        else:
            mixed = torch.einsum("nmj,jnm->nm", problem.per_node(weights), history)
        return out.copy_(torch.where(problem.per_node(converged), mapped, mixed))

    def _mixing_weights(self, gram: Tensor) -> Tensor:
        """Solve ``min αᵀ H α`` s.t. ``Σ α = 1``: ``α = H⁻¹1 / (1ᵀ H⁻¹ 1)``, batched."""
        size = gram.shape[-1]
        scale = gram.diagonal(dim1=-2, dim2=-1).amax(-1, keepdim=True).clamp_min(1e-200)  # all-zero residuals: mix evenly
        eye = torch.eye(size, dtype=gram.dtype, device=gram.device)
        regularized = gram + (self.regularization * scale).unsqueeze(-1) * eye
        ones = torch.ones(gram.shape[:-1] + (1,), dtype=gram.dtype, device=gram.device)
        solution = torch.linalg.solve(regularized, ones).squeeze(-1)
        return solution / solution.sum(-1, keepdim=True)
