"""Personalised PageRank: the exact CGS form against networkx, the samples, metrics and commands."""

import json

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

import convergent
from convergent.systems import pagerank
from convergent.tasks import get_task
from test_training import TINY_MODEL, run_cli, tiny_options


def hand_set_solve(edge_index, v):
    form = pagerank.cgs_form(edge_index, torch.from_numpy(v))
    h, info = convergent.solve(form["edge_index"], form["edge_weight"], form["bias"], gamma=form["gamma"],
                               solver="picard", tol=1e-14, max_iter=2000)
    assert bool(info.converged.all())
    return h.reshape(-1).numpy()


@pytest.mark.parametrize("kind", pagerank.KINDS)
def test_hand_set_cgs_reproduces_networkx_pagerank(kind):
    rng = np.random.default_rng(7)
    graph = pagerank.generate(kind, 150, rng)
    v = pagerank.personalization(graph.number_of_nodes(), rng)
    np.testing.assert_allclose(hand_set_solve(pagerank.directed_edges(graph), v), pagerank.networkx_pagerank(graph, v),
                               rtol=0, atol=1e-8)


def test_hand_set_cgs_reproduces_networkx_on_directed_graphs_with_dangling_nodes():
    graph = nx.gnp_random_graph(120, 0.03, seed=2, directed=True)
    dangling = [node for node in graph if graph.out_degree(node) == 0]
    assert dangling, "the test needs dangling nodes"
    for v in (np.full(120, 1 / 120), pagerank.personalization(120, np.random.default_rng(3))):
        expected = pagerank.networkx_pagerank(graph, v)
        np.testing.assert_allclose(hand_set_solve(pagerank.directed_edges(graph), v), expected, rtol=0, atol=1e-8)


def test_samples_follow_the_documented_scaling():
    graphs = pagerank.pagerank_graphs(6, nodes=(50, 80), seed=1)
    for graph in graphs:
        seeds = int((graph.x[:, 0] > 0).sum())
        assert graph.y.sum().item() == pytest.approx(seeds, rel=1e-5)   # Σ k·π = k
        assert graph.x[:, 0].sum().item() == pytest.approx(seeds, rel=1e-5)
        degree = torch.bincount(graph.edge_index[0], minlength=graph.num_nodes)
        torch.testing.assert_close(graph.edge_attr.reshape(-1), 1 / degree[graph.edge_index[0]].float())
        torch.testing.assert_close(graph.x[:, 1], torch.log1p(degree.float()) / 3)
        assert bool((degree > 0).all()), "undirected connected graphs have no dangling node"


def test_generation_is_seeded_and_cached(tmp_path):
    first = pagerank.pagerank_graphs(4, seed=5, cache=tmp_path / "c.pt")
    again = pagerank.pagerank_graphs(4, seed=5, cache=tmp_path / "c.pt")
    fresh = pagerank.pagerank_graphs(4, seed=5)
    other = pagerank.pagerank_graphs(4, seed=6)
    for a, b, c in zip(first, again, fresh):
        assert torch.equal(a.y, b.y) and torch.equal(a.y, c.y) and torch.equal(a.edge_index, c.edge_index)
    assert not all(a.num_nodes == b.num_nodes and torch.equal(a.y, b.y) for a, b in zip(first, other))


def test_metrics_against_independent_computations():
    task = get_task("pagerank")
    graphs = task.graphs(3, seed=2)
    batch = Batch.from_data_list(graphs)
    exact = task.metrics(batch.y, batch)
    assert exact["relative_error"] == 0 and exact["top10_precision"] == 1
    shuffled = task.metrics(batch.y.flip(0), batch)
    y = torch.cat([g.y for g in graphs]).reshape(-1).double()
    assert shuffled["relative_error"] == pytest.approx((y.flip(0) - y).abs().sum().item() / y.sum().item())
    teleport = torch.cat([0.15 * g.x[:, 0] for g in graphs]).double()
    assert exact["teleport_relative_error"] == pytest.approx(((teleport - y).abs().sum() / y.sum()).item())
    assert task.classical_seconds(batch) > 0


def test_train_and_eval_commands(tmp_path):
    tiny = tiny_options(updates=4, eval_every=4, validation_graphs=4, restart_period=4,
                        model_options={**TINY_MODEL, "gamma": 0.85})
    result = run_cli("train", "pagerank", *tiny, "--out", str(tmp_path / "run"), "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    result = run_cli("eval", "pagerank", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--sets", "c",
                     "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["c"]
    assert report["graphs"] == 20 and 0 <= report["top10_precision"] <= 1 and report["classical_seconds"] > 0
