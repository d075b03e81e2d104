"""Tests of the contraction guarantee: normalisations, ``contraction_norms``, ``SparseMaps``.

The property test throws adversarial scores (any finite float, ±1e9, the
largest and smallest floats, all-equal scores) at both normalisations on
random small graphs and checks the guarantee the solver relies on.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convergent
from convergent import SparseMaps, contraction_norms, degree_normalize, gated_softmax
from convergent.contraction import sum_tolerance

# =========================================================================== property test


def special_values(dtype: torch.dtype) -> list[float]:
    info = torch.finfo(dtype)
    return [0.0, -0.0, 0.5, 1.0, 1.0 + info.eps, 1e9, -1e9, 1e-9, -1e-9, info.max, -info.max,
            info.tiny, -info.tiny, info.smallest_normal / 2**10, 30.0, -30.0, 100.0, -100.0]


@st.composite
def adversarial_inputs(draw):
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    width = 32 if dtype == torch.float32 else 64
    num_nodes = draw(st.integers(1, 8))
    node = st.integers(0, num_nodes - 1)
    edges = draw(st.lists(st.tuples(node, node), max_size=24))  # self-loops, duplicates, isolated nodes
    heads = draw(st.integers(1, 2))
    value = st.one_of(
        st.floats(allow_nan=False, allow_infinity=False, width=width),
        st.sampled_from(special_values(dtype)),
    )

    def table(rows: int) -> torch.Tensor:
        if draw(st.booleans()):  # all equal
            entries = [[draw(value)] * heads] * rows
        else:
            entries = draw(st.lists(st.lists(value, min_size=heads, max_size=heads), min_size=rows, max_size=rows))
        return torch.tensor(entries, dtype=dtype).reshape(rows, heads)

    edge_index = torch.tensor(edges, dtype=torch.long).reshape(-1, 2).T.contiguous()
    scores, gate_scores = table(len(edges)), table(num_nodes)
    if heads == 1 and draw(st.booleans()):
        scores, gate_scores = scores[:, 0], gate_scores[:, 0]
    gamma = draw(st.sampled_from([0.5, 0.9]))
    seed = draw(st.integers(0, 2**16))
    return edge_index, scores, gate_scores, num_nodes, gamma, seed


def independent_degree_weights(edge_index, scores):
    """``clip(s, 0, 1) / outdeg(source)`` with NumPy."""
    s = np.clip(scores.double().numpy(), 0.0, 1.0)
    out_degree = np.bincount(edge_index[0].numpy(), minlength=1)[edge_index[0].numpy()].astype(float)
    return s / (out_degree if s.ndim == 1 else out_degree[:, None])


@pytest.mark.parametrize("normalization", ["degree", "gated"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=adversarial_inputs())
def test_normalized_maps_contract_for_any_finite_scores(graphs, normalization, inputs):
    edge_index, scores, gate_scores, num_nodes, gamma, seed = inputs
    dtype = scores.dtype
    if normalization == "degree":
        weight = degree_normalize(scores, edge_index, num_nodes)
    else:
        weight = gated_softmax(scores, gate_scores, edge_index, num_nodes)
    assert weight.shape == scores.shape and weight.dtype == dtype
    assert bool(torch.isfinite(weight).all())
    assert bool((weight >= 0).all())

    a = graphs.dense_maps(edge_index, weight.double(), num_nodes)  # exact sums of the stored weights
    limit = 1.0 + sum_tolerance(dtype)
    eps = torch.finfo(dtype).eps
    if normalization == "degree":
        assert float(a.sum(1).max()) <= limit  # column sums: ‖A_m‖₁ ≤ 1
        expected = torch.from_numpy(independent_degree_weights(edge_index, scores))
        # (subnormal scores lose relative precision in the division: absolute slack of one tiny)
        torch.testing.assert_close(weight.double(), expected, rtol=4 * eps, atol=torch.finfo(dtype).tiny)
    else:
        row_sums = a.sum(2)  # [M, N]
        assert float(row_sums.max()) <= limit  # row sums: ‖A_m‖∞ ≤ 1
        # Nodes with in-edges: the softmax sums to 1, times the gate.
        has_in_edges = torch.zeros(num_nodes, dtype=torch.bool)
        has_in_edges[edge_index[1]] = True
        gates = torch.sigmoid(gate_scores.double()).reshape(num_nodes, -1).T  # [M, N]
        torch.testing.assert_close(row_sums[:, has_in_edges], gates[:, has_in_edges],
                                   rtol=64 * eps, atol=1e3 * torch.finfo(dtype).tiny)

    per_head = weight if weight.dim() == 2 else weight.unsqueeze(-1)
    inf_norm = contraction_norms(SparseMaps(edge_index[0], edge_index[1], per_head, num_nodes), gamma)
    if normalization == "gated":
        assert bool(inf_norm.all())
    for m, by_rows in enumerate(inf_norm.tolist()):  # the reported norm is one the head contracts in
        assert float((a[m].sum(1) if by_rows else a[m].sum(0)).max()) <= limit

    # Picard from zero meets the stopping rule within ceil(log tol / log γ) + 1 evaluations.
    tol = 1e-6 if dtype == torch.float64 else 1e-3
    bound = graphs.picard_bound(gamma, tol)
    bias = torch.randn(num_nodes, *weight.shape[1:], generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64).to(dtype)
    h, info = convergent.solve(edge_index, weight, bias, gamma=gamma, solver="picard", tol=tol, max_iter=bound)
    assert bool(info.converged.all())
    assert info.max_iterations <= bound
    assert bool(torch.isfinite(h).all())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["degree scores", "gated scores", "gated gate_scores"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_non_finite_scores_raise(bad, where, dtype):
    edge_index = torch.tensor([[0, 1, 2, 2], [1, 2, 0, 1]])
    scores = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=dtype)
    gate_scores = torch.zeros(3, dtype=dtype)
    name = where.split()[1]
    (scores if name == "scores" else gate_scores)[1] = bad
    with pytest.raises(ValueError, match=rf"`{name}` must be finite.*: {re.escape(str(bad))}\)"):
        if where.startswith("degree"):
            degree_normalize(scores, edge_index, 3)
        else:
            gated_softmax(scores, gate_scores, edge_index, 3)


# =========================================================================== exact values


def test_degree_normalize_values():
    # Node 0 has out-degree 3 (one edge duplicated), node 1 out-degree 1, node 2 none.
    edge_index = torch.tensor([[0, 0, 0, 1], [1, 2, 2, 0]])
    scores = torch.tensor([2.0, 0.5, -1.0, 0.3], dtype=torch.float64)
    expected = torch.tensor([1 / 3, 0.5 / 3, 0.0, 0.3], dtype=torch.float64)
    torch.testing.assert_close(degree_normalize(scores, edge_index, 3), expected, rtol=1e-15, atol=0)
    # Two heads, each normalised on its own column.
    two = torch.stack([scores, torch.tensor([0.9, 0.9, 0.9, 5.0], dtype=torch.float64)], 1)
    expected_two = torch.stack([expected, torch.tensor([0.3, 0.3, 0.3, 1.0], dtype=torch.float64)], 1)
    torch.testing.assert_close(degree_normalize(two, edge_index.int(), 3), expected_two, rtol=1e-15, atol=0)


def test_gated_softmax_values():
    # Node 2 receives two edges with scores 0 and ln 3 -> softmax 1/4, 3/4; node 1 one edge.
    edge_index = torch.tensor([[0, 1, 0], [2, 2, 1]])
    scores = torch.tensor([0.0, math.log(3.0), 7.0], dtype=torch.float64)
    gate_scores = torch.tensor([5.0, 0.0, math.log(4.0)], dtype=torch.float64)  # sigmoid: ., 1/2, 4/5
    expected = torch.tensor([0.25 * 0.8, 0.75 * 0.8, 1.0 * 0.5], dtype=torch.float64)
    torch.testing.assert_close(gated_softmax(scores, gate_scores, edge_index, 3), expected, rtol=1e-14, atol=0)


def test_gated_softmax_extreme_scores_keep_their_sum():
    """Huge negative scores must not underflow the softmax to zero."""
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 1]])
    scores = torch.tensor([-1e9, -1e9, -3e8], dtype=torch.float64)
    weight = gated_softmax(scores, torch.full((3,), 50.0, dtype=torch.float64), edge_index, 3)
    torch.testing.assert_close(weight, torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64), rtol=1e-15, atol=0)


NORMALIZE_BAD_INPUT = {
    "scores wrong length": (lambda ei: degree_normalize(torch.zeros(5), ei, 3), ["scores", "[5]"]),
    "scores 3-D": (lambda ei: degree_normalize(torch.zeros(4, 1, 1), ei, 3), ["scores", "[4, 1, 1]"]),
    "scores integer": (lambda ei: degree_normalize(torch.zeros(4, dtype=torch.long), ei, 3), ["scores", "int64"]),
    "scores list": (lambda ei: degree_normalize([0.0] * 4, ei, 3), ["scores", "list"]),
    "edge_index out of range": (lambda ei: degree_normalize(torch.zeros(4), ei, 2), ["edge_index", "2"]),
    "edge_index float": (lambda ei: degree_normalize(torch.zeros(4), ei.float(), 3), ["edge_index", "float32"]),
    "gate_scores wrong length": (lambda ei: gated_softmax(torch.zeros(4), torch.zeros(4), ei, 3), ["gate_scores", "[4]"]),
    "gate_scores heads": (lambda ei: gated_softmax(torch.zeros(4, 2), torch.zeros(3, 3), ei, 3),
                          ["gate_scores", "[3, 3]", "[4, 2]"]),
    "gated scores wrong length": (lambda ei: gated_softmax(torch.zeros(3), torch.zeros(3), ei, 3), ["scores", "[3]"]),
}


@pytest.mark.parametrize("call, fragments", list(NORMALIZE_BAD_INPUT.values()), ids=list(NORMALIZE_BAD_INPUT))
def test_normalization_bad_input(call, fragments):
    edge_index = torch.tensor([[0, 1, 2, 2], [1, 2, 0, 1]])
    with pytest.raises(ValueError) as raised:
        call(edge_index)
    for fragment in fragments:
        assert fragment in str(raised.value), f"{fragment!r} not in {str(raised.value)!r}"


# =========================================================================== contraction_norms


def test_contraction_norms_classify_each_head():
    # Edges 0→0, 1→0, 2→0, 1→2: row 0 collects three edges, column 1 two.
    edge_index = torch.tensor([[0, 1, 2, 1], [0, 0, 0, 2]])
    weight = torch.tensor(
        [
            [0.2, 0.5, 0.3, 0.9],  # head 0: rows 1.0 / 0.9, column 1 sums 1.4 -> ∞-norm
            [0.9, 0.5, 0.9, 0.5],  # head 1: row 0 sums 2.3, columns 0.9 / 1.0 / 0.9 -> 1-norm
            [0.2, 0.3, 0.3, 0.5],  # head 2: both ≤ 1 -> ∞-norm
        ],
        dtype=torch.float64,
    ).T
    maps = SparseMaps(edge_index[0], edge_index[1], weight, 3)
    assert contraction_norms(maps, 0.9).tolist() == [True, False, True]


def test_contraction_norms_reject_head_with_both_sums_above_one():
    edge_index = torch.tensor([[0, 1, 1], [1, 0, 0]])
    weight = torch.tensor([[0.5, 0.5], [0.5, 0.7], [0.5, 0.7]], dtype=torch.float64)  # head 1: row/column 1.4
    with pytest.raises(ValueError, match=r"`edge_weight`.*head 1 .*row sum 1\.4.*column sum 1\.4"):
        contraction_norms(SparseMaps(edge_index[0], edge_index[1], weight, 2), 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_contraction_norms_rounding_tolerance(dtype):
    edge_index = torch.tensor([[0, 1], [1, 0]])
    slack = sum_tolerance(dtype)
    inside = torch.tensor([[1.0 + slack / 2], [1.0 + slack / 2]], dtype=torch.float64).to(dtype)
    assert contraction_norms(SparseMaps(edge_index[0], edge_index[1], inside, 2), 0.5).tolist() == [True]
    outside = torch.tensor([[1.0 + 2 * slack], [1.0 + 2 * slack]], dtype=torch.float64).to(dtype)
    with pytest.raises(ValueError, match="contract"):
        contraction_norms(SparseMaps(edge_index[0], edge_index[1], outside, 2), 0.5)


def test_contraction_norms_of_empty_maps():
    empty = SparseMaps(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                       torch.zeros(0, 3, dtype=torch.float64), 4)
    assert contraction_norms(empty, 0.5).tolist() == [True, True, True]


# =========================================================================== SparseMaps


def test_sparse_maps_match_dense(graphs):
    gen = torch.Generator().manual_seed(21)
    edge_index = graphs.random_edges(9, 0.4, gen, duplicates=4)
    weight = torch.rand(edge_index.shape[1], 3, generator=gen, dtype=torch.float64)
    maps = SparseMaps(edge_index[0], edge_index[1], weight, 9)
    dense = graphs.dense_maps(edge_index, weight, 9)  # [M, N, N], duplicates added
    x = torch.randn(9, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(maps.to_dense(), dense, rtol=1e-15, atol=0)
    torch.testing.assert_close(maps.matmul(x), torch.einsum("mts,sm->tm", dense, x), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(maps.transpose().matmul(x), torch.einsum("mst,sm->tm", dense, x), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(maps.row_sums(), dense.sum(2).T, rtol=1e-14, atol=0)
    torch.testing.assert_close(maps.column_sums(), dense.sum(1).T, rtol=1e-14, atol=0)
    assert maps.num_heads == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_gamma_too_close_to_one_for_the_rounding_slack(dtype):
    """Sums inside the rounding slack but above 1 need γ·sum < 1 to contract."""
    edge_index = torch.tensor([[0, 1], [1, 0]])
    slack = sum_tolerance(dtype)
    weight = torch.tensor([[1.0 + slack / 2], [1.0 + slack / 2]], dtype=torch.float64).to(dtype)
    maps = SparseMaps(edge_index[0], edge_index[1], weight, 2)
    gamma = 1.0 - slack / 8  # γ · (1 + slack/2) > 1
    with pytest.raises(ValueError, match=rf"`gamma` = {re.escape(str(gamma))}.*not below 1"):
        contraction_norms(maps, gamma)
    with pytest.raises(ValueError, match="`gamma`"):
        convergent.solve(edge_index, weight, torch.ones(2, 1, dtype=dtype), gamma=gamma)
    assert contraction_norms(maps, 1.0 - 2 * slack).tolist() == [True]
