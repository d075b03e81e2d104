"""Random linear graph systems ``y = α P y + b`` (personalised-PageRank-like), for demos and tests.

Each graph has random directed edges ``s → t``; edge feature ``c_e ∈ U(0, 1)``
and node features ``x_i ∈ N(0, 1)^d`` determine the system::

    P[t, s] = Σ_{e: s → t} c_e / outdeg(s)      (column sums ≤ 1)
    b_i     = tanh(x_i · w)                      (w fixed: the same "physics" for every seed)

and the target is ``y = (I − α P)⁻¹ b``, solved by SciPy's sparse LU —
independently of :mod:`convergent`. A CGS with ``normalization="degree"``
and ``gamma = α`` can represent it exactly.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch_geometric.data import Data

#: Seed of the fixed coefficient vector ``w``, shared by all data sets.
PHYSICS_SEED = 20220425


def linear_graph_systems(num_graphs: int, *, min_nodes: int = 10, max_nodes: int = 30, in_degree: int = 3,
                         alpha: float = 0.8, num_features: int = 4, seed: int = 0) -> list[Data]:
    """Generate ``num_graphs`` systems as PyG ``Data`` with ``x [n, d]``,
    ``edge_index [2, E]``, ``edge_attr [E, 1]`` and target ``y [n, 1]`` (float32)."""
    if not 1 <= min_nodes <= max_nodes:
        raise ValueError(f"need 1 ≤ min_nodes ≤ max_nodes (got {min_nodes}, {max_nodes})")
    if not 0 < alpha < 1:
        raise ValueError(f"`alpha` must be in (0, 1) (got {alpha})")
    coefficients = np.random.default_rng(PHYSICS_SEED).normal(size=num_features)
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(num_graphs):
        n = int(rng.integers(min_nodes, max_nodes + 1))
        target = np.repeat(np.arange(n), in_degree)
        source = rng.integers(0, n, size=target.size)
        source = np.where(source == target, (source + 1) % n, source) if n > 1 else source
        strength = rng.uniform(size=target.size)
        features = rng.normal(size=(n, num_features))
        out_degree = np.bincount(source, minlength=n)
        transition = scipy.sparse.csc_matrix((strength / out_degree[source], (target, source)), shape=(n, n))
        bias = np.tanh(features @ coefficients)
        solution = scipy.sparse.linalg.spsolve(scipy.sparse.identity(n, format="csc") - alpha * transition, bias)
        graphs.append(Data(
            x=torch.tensor(features, dtype=torch.float32),
            edge_index=torch.tensor(np.stack([source, target]), dtype=torch.long),
            edge_attr=torch.tensor(strength, dtype=torch.float32).unsqueeze(-1),
            y=torch.tensor(np.atleast_1d(solution), dtype=torch.float32).unsqueeze(-1),
        ))
    return graphs
