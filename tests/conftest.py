"""Shared graph generators and independent oracles for the solver tests.

Everything a test compares against is computed here *without* going through
``convergent``'s own sparse code: dense maps are built as ``Tᵀ diag(w) S``
from one-hot incidence matrices (duplicates add by construction), norms are
taken graph by graph with plain loops, and SciPy provides a second solver.
The helpers are plain functions collected in the session fixture ``graphs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

import convergent

SOLVERS = ("picard", "anderson", "direct", "auto")
ITERATIVE_SOLVERS = ("picard", "anderson")
NORMALIZATIONS = ("degree", "gated")

# The test tensors are tiny: one intra-op thread is as fast, and it avoids the
# 3-10x slowdowns of OpenMP spin-waiting when the CPUs are shared or busy.
torch.set_num_threads(1)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=SOLVERS)
def solver(request) -> str:
    return request.param


@pytest.fixture(params=ITERATIVE_SOLVERS)
def iterative_solver(request) -> str:
    return request.param


@pytest.fixture(params=NORMALIZATIONS)
def normalization(request) -> str:
    return request.param


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture(scope="session")
def graphs() -> SimpleNamespace:
    """The generators and oracles below, as one namespace."""
    return SimpleNamespace(
        Problem=Problem,
        random_edges=random_edges,
        make_problem=make_problem,
        normalized_weights=normalized_weights,
        dense_maps=dense_maps,
        dense_solution=dense_solution,
        dense_picard=dense_picard,
        scipy_solution=scipy_solution,
        inf_norm_heads=inf_norm_heads,
        graph_norms=graph_norms,
        apply_map=apply_map,
        picard_bound=picard_bound,
    )


# --------------------------------------------------------------------------- generators


@dataclass
class Problem:
    """One batch of graphs with multi-head weights and biases."""

    edge_index: Tensor  # [2, E] int64
    edge_weight: Tensor  # [E, M]
    bias: Tensor  # [N, M]
    batch: Tensor | None  # [N] or None
    sizes: list[int]

    @property
    def num_nodes(self) -> int:
        return self.bias.shape[0]

    @property
    def num_graphs(self) -> int:
        return 1 if self.batch is None else int(self.batch.max()) + 1

    @property
    def num_heads(self) -> int:
        return self.bias.shape[1]


def random_edges(n: int, density: float, generator: torch.Generator, duplicates: int = 0) -> Tensor:
    """``[2, E]`` int64 edges of a random directed graph on ``n`` nodes.

    Self-loops are allowed; ``duplicates`` random edges are repeated.
    """
    mask = torch.rand(n, n, generator=generator) < density
    source, target = mask.nonzero().T
    edges = torch.stack([source, target])
    if duplicates and edges.shape[1]:
        pick = torch.randint(edges.shape[1], (duplicates,), generator=generator)
        edges = torch.cat([edges, edges[:, pick]], dim=1)
    return edges


def normalized_weights(
    edge_index: Tensor,
    num_nodes: int,
    heads: int,
    normalization: str,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    scale: float = 1.0,
    positive: bool = False,
) -> Tensor:
    """``[E, M]`` weights from random scores through a library normalisation.

    ``positive=True`` keeps every weight clearly above zero (scores in
    ``[0.2, 1]`` / gates near 1), so finite-difference perturbations stay
    non-negative; ``scale`` multiplies the result (``0.9`` leaves room for them
    below the contraction limit).
    """
    num_edges = edge_index.shape[1]
    if normalization == "degree":
        if positive:
            scores = 0.2 + 0.8 * torch.rand(num_edges, heads, generator=generator, dtype=torch.float64)
        else:  # about a third clipped to 0, a third to 1
            scores = 3.0 * torch.rand(num_edges, heads, generator=generator, dtype=torch.float64) - 1.0
        weights = convergent.degree_normalize(scores.to(dtype), edge_index, num_nodes)
    elif normalization == "gated":
        scores = torch.randn(num_edges, heads, generator=generator, dtype=torch.float64)
        gates = torch.randn(num_nodes, heads, generator=generator, dtype=torch.float64) + 3.0
        weights = convergent.gated_softmax(scores.to(dtype), gates.to(dtype), edge_index, num_nodes)
    else:
        raise AssertionError(normalization)
    return weights * scale


def make_problem(
    sizes: list[int],
    *,
    heads: int = 3,
    normalization: str = "gated",
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    density: float = 0.3,
    duplicates: int = 0,
    interleave: bool = False,
    scale: float = 1.0,
    positive: bool = False,
) -> Problem:
    """A PyG ``Batch`` of random graphs of the given sizes, with weights and bias.

    ``interleave=True`` relabels the nodes by a random permutation, so the
    graphs' nodes are mixed in ``batch`` (not sorted, not contiguous).
    """
    generator = torch.Generator().manual_seed(seed)
    data = [
        Data(edge_index=random_edges(n, density, generator, duplicates), num_nodes=n) for n in sizes
    ]
    pyg = Batch.from_data_list(data)
    edge_index, batch = pyg.edge_index, pyg.batch
    num_nodes = int(sum(sizes))
    weights = [
        normalized_weights(d.edge_index, d.num_nodes, heads, normalization, generator, dtype, scale, positive)
        for d in data
    ]
    edge_weight = torch.cat(weights) if weights else torch.zeros(0, heads, dtype=dtype)
    bias = torch.randn(num_nodes, heads, generator=generator, dtype=torch.float64).to(dtype)
    if interleave:
        permutation = torch.randperm(num_nodes, generator=generator)  # old id -> new id
        edge_index = permutation[edge_index]
        new_batch = torch.empty_like(batch)
        new_batch[permutation] = batch
        new_bias = torch.empty_like(bias)
        new_bias[permutation] = bias
        batch, bias = new_batch, new_bias
    return Problem(edge_index, edge_weight, bias, batch, list(sizes))


# --------------------------------------------------------------------------- oracles


def dense_maps(edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> Tensor:
    """``[M, N, N]`` with ``A_m[t, s] = Σ_{e: s→t} w[e, m]``, differentiable in ``edge_weight``.

    Built as ``Tᵀ diag(w_m) S`` from one-hot incidence matrices, so duplicate
    edges add up without any scatter.
    """
    weight = edge_weight if edge_weight.dim() == 2 else edge_weight.unsqueeze(-1)
    edge_index = edge_index.long()
    nodes = torch.arange(num_nodes)
    source = (edge_index[0].unsqueeze(1) == nodes).to(weight.dtype)  # [E, N]
    target = (edge_index[1].unsqueeze(1) == nodes).to(weight.dtype)  # [E, N]
    return torch.einsum("et,em,es->mts", target, weight, source)


def dense_solution(edge_index: Tensor, edge_weight: Tensor, bias: Tensor, gamma: float) -> Tensor:
    """Exact ``h`` with ``(I − γ A_m) h_m = b_m`` by ``torch.linalg.solve``, head by head (a batched
    LU above about 150 unknowns hangs in MKL on two threads, pytorch/pytorch#142815); shape of ``bias``."""
    single = bias.dim() == 1
    b = bias.unsqueeze(-1) if single else bias
    a = dense_maps(edge_index, edge_weight, b.shape[0])
    eye = torch.eye(b.shape[0], dtype=b.dtype)
    h = torch.stack([torch.linalg.solve(eye - gamma * a[m], b[:, m]) for m in range(b.shape[1])], dim=1)
    return h.squeeze(-1) if single else h


def dense_picard(edge_index, edge_weight, bias, gamma, function, steps=None) -> Tensor:
    """``h = φ(γ A h + b)`` by plain dense iteration until it stops changing."""
    single = bias.dim() == 1
    b = bias.unsqueeze(-1) if single else bias
    a = dense_maps(edge_index, edge_weight, b.shape[0])
    steps = steps or picard_bound(gamma, 1e-18) + 10
    h = torch.zeros_like(b)
    for _ in range(steps):
        h = function(gamma * torch.einsum("mts,sm->tm", a, h) + b)
    return h.squeeze(-1) if single else h


def scipy_solution(edge_index: Tensor, edge_weight: Tensor, bias: Tensor, gamma: float) -> np.ndarray:
    """Exact ``h`` by ``scipy.sparse.linalg.spsolve``, head by head (COO sums duplicates)."""
    ei = edge_index.long().numpy()
    weight = edge_weight.detach().double().numpy().reshape(ei.shape[1], -1)
    b = bias.detach().double().numpy().reshape(bias.shape[0], -1)
    n = b.shape[0]
    columns = []
    for m in range(b.shape[1]):
        a = scipy.sparse.coo_matrix((weight[:, m], (ei[1], ei[0])), shape=(n, n)).tocsc()
        system = scipy.sparse.identity(n, format="csc") - gamma * a
        columns.append(np.atleast_1d(scipy.sparse.linalg.spsolve(system, b[:, m])))
    return np.stack(columns, axis=1)


def inf_norm_heads(edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> Tensor:
    """``[M]`` bool: the head contracts in the ∞-norm (all row sums ≤ 1 + rounding)."""
    a = dense_maps(edge_index, edge_weight.detach(), num_nodes)
    limit = 1.0 + convergent.contraction.sum_tolerance(edge_weight.dtype)
    if num_nodes == 0:
        return torch.ones(a.shape[0], dtype=torch.bool)
    return a.sum(-1).amax(-1) <= limit


def graph_norms(v: Tensor, batch: Tensor | None, num_graphs: int, inf_norm: Tensor) -> Tensor:
    """``[G, M]``: per graph and head, ∞-norm where ``inf_norm`` else 1-norm; by a plain loop."""
    v = v if v.dim() == 2 else v.unsqueeze(-1)
    batch = torch.zeros(v.shape[0], dtype=torch.long) if batch is None else batch.long()
    out = torch.zeros(num_graphs, v.shape[1], dtype=v.dtype)
    for g in range(num_graphs):
        block = v[batch == g].abs()
        for m in range(v.shape[1]):
            if block.numel():
                out[g, m] = block[:, m].max() if inf_norm[m] else block[:, m].sum()
    return out


def apply_map(edge_index, edge_weight, bias, gamma, h, function=None) -> Tensor:
    """``T(h) = φ(γ A h + b)`` with dense maps."""
    b = bias if bias.dim() == 2 else bias.unsqueeze(-1)
    x = h if h.dim() == 2 else h.unsqueeze(-1)
    a = dense_maps(edge_index, edge_weight, b.shape[0])
    z = gamma * torch.einsum("mts,sm->tm", a, x) + b
    out = z if function is None else function(z)
    return out if bias.dim() == 2 else out.squeeze(-1)


def picard_bound(gamma: float, tol: float) -> int:
    """Map evaluations Picard from zero needs at most: ``ceil(log tol / log γ) + 1``."""
    return math.ceil(math.log(tol) / math.log(gamma)) + 1


@pytest.fixture(autouse=True, scope="session")
def _test_set_cache(tmp_path_factory):
    """Test sets the commands cache go to a temporary folder, not the user's ~/.cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("CONVERGENT_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()
