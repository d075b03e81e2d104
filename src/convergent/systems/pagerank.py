"""Personalised PageRank on generated and shipped graphs, with networkx as the classical solver.

**The system.** For a graph with out-degrees ``d`` and a personalisation ``v`` (``v ≥ 0``,
``Σ v = 1``), PageRank with damping ``α`` is the fixed point

    π = α Pᵀ π + α v (Σ_{s dangling} π_s) + (1 − α) v,      P[s, t] = 1 / d_s for an edge s → t,

as ``networkx.pagerank(G, alpha, personalization=v)`` computes it (dangling nodes — no
out-edges — hand their mass out by ``v``). It is exactly of CGS form (:func:`cgs_form`): the map
``A[t, s] = 1 / d_s`` for an edge ``s → t`` plus, for every dangling ``s``, ``A[t, s] = v_t`` on the
nodes ``t`` of ``v``'s support, has column sums 1, so ``π = α A π + (1 − α) v`` with ``γ = α``.

**The graphs** (:func:`pagerank_graphs`): Barabási–Albert (``m`` uniform in 1..3), square-ish
grids, and random geometric graphs in the unit square with mean degree about 6 (largest
connected component kept), all undirected — each edge both ways, so none is dangling — with
``k`` (uniform in 1..5) seed nodes whose personalisation weights are Dirichlet(1). The graphs
networkx ships (Zachary's karate club, Les Misérables, the Florentine families, Davis'
southern women) come with the same kind of personalisations (:func:`shipped_graphs`).

**Features and scaling.** With ``k`` seeds, ``x = [k·v, log(1 + d) / 3]``
``[N, 2]``, ``edge_attr = [1 / d_source]`` ``[E, 1]`` (the random walk's step probability), and
``y = k·π`` ``[N, 1]``: the system is linear in ``v``, so ``k·π`` solves it for ``k·v`` — a seed's
own value is ``O(1)`` whatever the graph's size (``Σ y = k``). Every feature is local — none
is normalised by a graph-wide quantity such as the largest degree — so a node of a large
graph looks like one of a small graph. Damping ``α = 0.85``.
"""

from __future__ import annotations

import time
from pathlib import Path

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from convergent.cache import load_entry, store_entry

ALPHA = 0.85
KINDS = ("barabasi_albert", "grid", "random_geometric")
SHIPPED = {"karate club": nx.karate_club_graph, "Les Misérables": nx.les_miserables_graph,
           "Florentine families": nx.florentine_families_graph, "Davis southern women": nx.davis_southern_women_graph}
MAX_SEEDS = 5
#: ``log(1 + degree)`` is divided by this (about ``log(1 + 20)``), a fixed scale for every graph.
DEGREE_SCALE = 3.0
#: networkx's tolerance for the ground truth: its stopping rule is ``‖π_k − π_{k−1}‖₁ < N · tol``.
TOLERANCE = 1e-13
_FIELDS = ("x", "edge_index", "edge_attr", "y")


def generate(kind: str, num_nodes: int, rng: np.random.Generator) -> nx.Graph:
    """An undirected connected graph of about ``num_nodes`` nodes of ``kind`` (see the module doc)."""
    seed = int(rng.integers(2**31))
    if kind == "barabasi_albert":
        return nx.barabasi_albert_graph(num_nodes, int(rng.integers(1, 4)), seed=seed)
    if kind == "grid":
        rows = max(2, int(round(np.sqrt(num_nodes) * rng.uniform(0.7, 1.0))))
        return nx.convert_node_labels_to_integers(nx.grid_2d_graph(rows, max(2, num_nodes // rows)))
    if kind == "random_geometric":
        graph = nx.random_geometric_graph(num_nodes, np.sqrt(6 / (np.pi * num_nodes)), seed=seed)
        return nx.convert_node_labels_to_integers(graph.subgraph(max(nx.connected_components(graph), key=len)))
    raise ValueError(f"unknown graph kind {kind!r}; choose one of {', '.join(KINDS)}")


def personalization(num_nodes: int, rng: np.random.Generator) -> np.ndarray:
    """``v`` ``[N]``: Dirichlet(1) weights on ``k`` distinct random seed nodes, ``k`` uniform in 1..5."""
    seeds = rng.choice(num_nodes, size=min(num_nodes, int(rng.integers(1, MAX_SEEDS + 1))), replace=False)
    v = np.zeros(num_nodes)
    v[seeds] = rng.dirichlet(np.ones(len(seeds)))
    return v


def networkx_pagerank(graph: nx.Graph | nx.DiGraph, v: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """``π`` ``[N]`` by ``networkx.pagerank`` (nodes ``0..N−1``) to :data:`TOLERANCE`."""
    ranks = nx.pagerank(graph, alpha=alpha, personalization=dict(enumerate(v)), tol=TOLERANCE, max_iter=100_000)
    return np.array([ranks[node] for node in range(graph.number_of_nodes())])


def directed_edges(graph: nx.Graph | nx.DiGraph) -> Tensor:
    """``edge_index`` ``[2, E]`` of ``graph`` (nodes ``0..N−1``): both directions of an undirected edge."""
    edges = np.array(list(graph.edges()), dtype=np.int64).reshape(-1, 2).T
    if not graph.is_directed():
        edges = np.concatenate([edges, edges[::-1]], axis=1)
    return torch.from_numpy(np.ascontiguousarray(edges))


def cgs_form(edge_index: Tensor, v: Tensor, alpha: float = ALPHA) -> dict:
    """PageRank as ``π = γ A π + b``: ``edge_index`` ``[2, E']``, ``edge_weight`` ``[E', 1]``,
    ``bias`` ``[N, 1]``, ``gamma`` (arguments of :func:`convergent.solve`).

    ``A[t, s] = 1 / d_s`` for each edge ``s → t`` (parallel edges add up, as in networkx), and a
    dangling ``s`` gets edges to ``v``'s support with weights ``v_t``; ``b = (1 − α) v``.
    """
    num_nodes = v.shape[0]
    source, target = edge_index
    degree = torch.bincount(source, minlength=num_nodes).to(v.dtype)
    dangling = torch.nonzero(degree == 0).reshape(-1)
    support = torch.nonzero(v > 0).reshape(-1)
    extra_source = dangling.repeat_interleave(len(support))
    extra_target = support.repeat(len(dangling))
    weight = torch.cat([1 / degree[source], v[extra_target]])
    return {"edge_index": torch.stack([torch.cat([source, extra_source]), torch.cat([target, extra_target])]),
            "edge_weight": weight.unsqueeze(-1), "bias": ((1 - alpha) * v).unsqueeze(-1), "gamma": alpha}


def as_data(graph: nx.Graph, v: np.ndarray, ranks: np.ndarray) -> Data:
    """The learning sample of ``graph`` with personalisation ``v`` and PageRank ``ranks`` (see the module doc)."""
    edge_index = directed_edges(graph)
    num_nodes = graph.number_of_nodes()
    degree = torch.bincount(edge_index[0], minlength=num_nodes).double()
    seeds = float((v > 0).sum())
    x = torch.stack([torch.from_numpy(seeds * v), torch.log1p(degree) / DEGREE_SCALE], dim=1)
    return Data(x=x.float(), edge_index=edge_index, edge_attr=(1 / degree[edge_index[0]]).float().unsqueeze(-1),
                y=torch.from_numpy(seeds * ranks).float().unsqueeze(-1))


def _sample(graph: nx.Graph, rng: np.random.Generator) -> dict[str, Tensor]:
    v = personalization(graph.number_of_nodes(), rng)
    data = as_data(graph, v, networkx_pagerank(graph, v))
    return {field: data[field] for field in _FIELDS}


def pagerank_graphs(count: int, *, nodes: tuple[int, int] = (50, 200), seed: int = 0,
                    cache: Path | None = None) -> list[Data]:
    """``count`` samples: kinds in turn, sizes uniform in ``[nodes[0], nodes[1])``, seeded by
    ``(seed, index)``; stored in ``cache`` and reused when asked for with the same arguments."""
    if count < 1 or not 4 <= nodes[0] < nodes[1]:
        raise ValueError(f"need count ≥ 1 and 4 ≤ nodes[0] < nodes[1] (got {count}, {nodes})")
    key = {"count": count, "nodes": list(nodes), "seed": seed, "version": 2}
    stored = load_entry(cache, key)
    if stored is None:
        made = []
        for index in range(count):
            rng = np.random.default_rng((seed, index))
            made.append(_sample(generate(KINDS[index % len(KINDS)], int(rng.integers(*nodes)), rng), rng))
        store_entry(cache, key, graphs=made)
        stored = {"graphs": made}
    return [Data(**fields) for fields in stored["graphs"]]


def shipped_graphs(personalizations: int = 5, seed: int = 0) -> list[Data]:
    """Each graph networkx ships (:data:`SHIPPED`) with ``personalizations`` seeded personalisations."""
    made = []
    for number, build in enumerate(SHIPPED.values()):
        graph = nx.convert_node_labels_to_integers(nx.Graph(build()))  # weights dropped: plain structure
        for index in range(personalizations):
            made.append(Data(**_sample(graph, np.random.default_rng((seed, number, index)))))
    return made


def solve_seconds(data: Data) -> float:
    """Wall time of ``networkx.pagerank`` (to :data:`TOLERANCE`) on ``data``'s graph and personalisation."""
    graph = nx.DiGraph()
    graph.add_nodes_from(range(data.num_nodes))
    graph.add_edges_from(data.edge_index.t().tolist())
    v = data.x[:, 0].double().numpy()
    start = time.perf_counter()
    networkx_pagerank(graph, v / v.sum())
    return time.perf_counter() - start
