"""Unconstrained scores → non-negative multi-head maps with ``‖A_m‖ ≤ 1``.

This module is where the fixed-point guarantee lives. Both normalisations hold
for *any* finite scores (±1e9 included) by construction:

* :func:`degree_normalize` (the reference CGS normalisation): clip to
  ``[0, 1]`` and divide by the source node's out-degree, so every column sum
  is ``≤ 1`` (``‖A_m‖₁ ≤ 1``).
* :func:`gated_softmax`: softmax over each node's in-edges times a gate in
  ``[0, 1]``, so every row sum is ``≤ 1`` (``‖A_m‖∞ ≤ 1``).

:func:`contraction_norms` checks a given map and tells which of the two norms
each head contracts in.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch_geometric.utils import degree, softmax

from convergent._validation import check_edge_index, check_finite, check_floating, check_tensor
from convergent.sparse_map import SparseMaps


def _check_scores(name: str, scores: object, rows: int) -> Tensor:
    scores = check_tensor(name, scores)
    check_floating(name, scores)
    if scores.dim() not in (1, 2) or scores.shape[0] != rows:
        raise ValueError(f"`{name}` must have shape [{rows}] or [{rows}, M] (got {list(scores.shape)})")
    check_finite(name, scores)
    return scores


def degree_normalize(scores: Tensor, edge_index: Tensor, num_nodes: int) -> Tensor:
    """Reference normalisation: ``clip(s_e, 0, 1) / outdeg(source[e])``.

    Args:
        scores: ``[E]`` or ``[E, M]`` finite edge scores.
        edge_index: ``[2, E]``, row 0 source, row 1 target.
        num_nodes: ``N``.

    Returns:
        Edge weights of the same shape with every column sum ``Σ_t A[t, s] ≤ 1``.
    """
    edge_index = check_edge_index(edge_index, num_nodes)
    scores = _check_scores("scores", scores, edge_index.shape[1])
    out_degree = degree(edge_index[0], num_nodes, dtype=scores.dtype)[edge_index[0]]
    if scores.dim() == 2:
        out_degree = out_degree.unsqueeze(-1)
    return scores.clamp(0.0, 1.0) / out_degree


def gated_softmax(scores: Tensor, gate_scores: Tensor, edge_index: Tensor, num_nodes: int) -> Tensor:
    """``sigmoid(gate_scores[t]) · softmax_{e → t}(scores)`` over each node's in-edges.

    Args:
        scores: ``[E]`` or ``[E, M]`` finite edge scores.
        gate_scores: ``[N]`` or ``[N, M]`` finite node scores; the gate of node ``t``
            scales all of its in-edges.
        edge_index: ``[2, E]``, row 0 source, row 1 target.
        num_nodes: ``N``.

    Returns:
        Edge weights of the shape of ``scores`` with every row sum
        ``Σ_s A[t, s] = gate_t ≤ 1``.
    """
    edge_index = check_edge_index(edge_index, num_nodes)
    scores = _check_scores("scores", scores, edge_index.shape[1])
    gate_scores = _check_scores("gate_scores", gate_scores, num_nodes)
    if gate_scores.shape[1:] != scores.shape[1:]:
        raise ValueError(
            f"`gate_scores` must have one column per head like `scores` "
            f"(got {list(gate_scores.shape)} and {list(scores.shape)})"
        )
    target = edge_index[1]
    return softmax(scores, target, num_nodes=num_nodes) * torch.sigmoid(gate_scores)[target]


def sum_tolerance(dtype: torch.dtype) -> float:
    """How far above 1 a row or column sum may be from rounding alone."""
    return 1e3 * torch.finfo(dtype).eps


def contraction_norms(maps: SparseMaps, gamma: float) -> Tensor:
    """Check that ``h ↦ γ A_m h + b`` contracts for every head.

    Returns:
        ``[M]`` bool: ``True`` where head ``m`` contracts in the ∞-norm (all row
        sums ``≤ 1``), ``False`` where it contracts in the 1-norm (all column
        sums ``≤ 1``).

    Raises:
        ValueError: a head whose row sums and column sums both exceed 1.
    """
    if maps.num_nodes == 0 or maps.weight.shape[0] == 0:
        return torch.ones(maps.num_heads, dtype=torch.bool, device=maps.weight.device)
    limit = 1.0 + sum_tolerance(maps.weight.dtype)
    max_row = torch.linalg.vector_norm(maps.row_sums(), math.inf, dim=0)  # sums are ≥ 0
    max_column = torch.linalg.vector_norm(maps.column_sums(), math.inf, dim=0)
    by_rows = max_row <= limit
    bad = ~(by_rows | (max_column <= limit))
    if bad.any():
        m = int(bad.nonzero()[0])
        raise ValueError(
            f"`edge_weight` does not define a contracting map: head {m} has largest row "
            f"sum {max_row[m].item():.6g} and largest column sum {max_column[m].item():.6g}, "
            f"but one of them must be ≤ 1 for γ·A to contract. Build the weights with "
            f"convergent.degree_normalize or convergent.gated_softmax."
        )
    bound = torch.where(by_rows, max_row, max_column).max().item()
    if gamma * bound >= 1.0:
        raise ValueError(
            f"`gamma` = {gamma} times the largest normalised sum {bound:.9g} is not below 1; "
            f"take `gamma` further from 1"
        )
    return by_rows
