"""Random MDP graphs and their ground truth, against an independent policy-evaluation solve."""

import numpy as np
import pytest
import torch

from convergent.systems import gvi


def policy_values(edge_index, reward, num_nodes, policy, discount=gvi.DISCOUNT):
    """Exact values of a deterministic policy by a dense linear solve (I − δ P_π) V = r_π."""
    transition = np.zeros((num_nodes, num_nodes))
    transition[np.arange(num_nodes), edge_index[0, policy].numpy()] = 1.0
    return np.linalg.solve(np.eye(num_nodes) - discount * transition, reward[policy].numpy())


def test_values_are_optimal_by_policy_evaluation():
    mdps = gvi.random_mdps(3, seed=5)
    values, iterations = gvi.value_iteration(mdps.edge_index, mdps.reward, mdps.num_nodes)
    policy = gvi.greedy_policy(values, mdps.edge_index, mdps.reward, mdps.num_nodes)
    exact = policy_values(mdps.edge_index, mdps.reward, mdps.num_nodes, policy)
    np.testing.assert_allclose(values.numpy(), exact, atol=1e-7)
    # No single action improves on the greedy policy anywhere (Bellman optimality).
    q = gvi.action_values(torch.from_numpy(exact), mdps.edge_index, mdps.reward)
    best = torch.full((mdps.num_nodes,), -torch.inf, dtype=q.dtype).scatter_reduce_(0, mdps.edge_index[1], q, "amax")
    np.testing.assert_allclose(best.numpy(), exact, atol=1e-9)
    assert iterations > 100  # δ = 0.9 to 1e-8 takes about log(1e-8)/log(0.9) sweeps


def test_generated_mdps_follow_the_specification():
    mdps = gvi.random_mdps(50, seed=1)
    assert ((20 <= mdps.num_states) & (mdps.num_states < 50)).all()
    assert ((5 <= mdps.num_actions) & (mdps.num_actions < 10)).all()
    graphs = mdps.to_data_list(torch.zeros(mdps.num_nodes))
    for graph, actions in zip(graphs, mdps.num_actions):
        next_state, acting = graph.edge_index
        assert torch.equal(torch.bincount(acting, minlength=graph.num_nodes), torch.full((graph.num_nodes,), actions))
        assert (next_state != acting).all() and next_state.max() < graph.num_nodes
        assert graph.edge_attr.abs().max() <= 1 and torch.equal(graph.x, torch.ones(graph.num_nodes, 1))
    # Every other state is a possible successor: the shift is uniform in 1 … n − 1.
    big = gvi.random_mdps(1, states=(4, 5), actions=(500, 501), seed=2)
    shifts = (big.edge_index[0] - big.edge_index[1]) % 4
    assert set(shifts.tolist()) == {1, 2, 3}


def test_seeded_and_reproducible():
    first, again, other = (gvi.random_mdps(4, seed=s) for s in (7, 7, 8))
    assert torch.equal(first.edge_index, again.edge_index) and torch.equal(first.reward, again.reward)
    assert not torch.equal(first.reward[:50], other.reward[:50])


def test_largest_reward_policy_is_the_weak_baseline():
    mdps = gvi.random_mdps(200, seed=3)
    values, _ = gvi.value_iteration(mdps.edge_index, mdps.reward, mdps.num_nodes)
    myopic = gvi.policy_accuracy(torch.zeros_like(values), values, mdps.edge_index, mdps.reward)
    assert 0.6 < myopic < 0.75  # the issue quotes ≈ 0.68
    assert gvi.policy_accuracy(values, values, mdps.edge_index, mdps.reward) == 1.0


def test_unsorted_edges_give_the_same_values():
    mdps = gvi.random_mdps(2, seed=4)
    values, _ = gvi.value_iteration(mdps.edge_index, mdps.reward, mdps.num_nodes)
    shuffle = torch.randperm(mdps.reward.numel(), generator=torch.Generator().manual_seed(0))
    shuffled, _ = gvi.value_iteration(mdps.edge_index[:, shuffle], mdps.reward[shuffle], mdps.num_nodes)
    torch.testing.assert_close(shuffled, values, rtol=0, atol=1e-12)


def test_a_state_without_actions_is_named():
    edge_index = torch.tensor([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="state 2 has no action"):
        gvi.value_iteration(edge_index, torch.tensor([0.5, 0.1]), 3)


def test_nan_rewards_are_refused():
    edge_index = torch.tensor([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="reward"):
        gvi.value_iteration(edge_index, torch.tensor([float("nan"), 0.1]), 2)


def test_greedy_policy_breaks_ties_by_lowest_edge():
    edge_index = torch.tensor([[1, 1, 0], [0, 0, 1]])  # two identical actions of state 0
    policy = gvi.greedy_policy(torch.zeros(2, dtype=torch.float64), edge_index, torch.tensor([0.3, 0.3, 0.0]), 2)
    assert policy.tolist() == [0, 2]


def test_cache_is_reused_and_keyed_by_arguments(tmp_path, monkeypatch):
    path = tmp_path / "train.pt"
    made = gvi.gvi_graphs(5, seed=9, cache=path)
    monkeypatch.setattr(gvi, "random_mdps", lambda *a, **k: pytest.fail("regenerated despite the cache"))
    loaded = gvi.gvi_graphs(5, seed=9, cache=path)
    for a, b in zip(made, loaded):
        assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.y, b.y)
    monkeypatch.undo()
    assert len(gvi.gvi_graphs(6, seed=9, cache=path)) == 6  # other arguments: generated anew
