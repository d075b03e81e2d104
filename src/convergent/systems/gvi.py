"""Random deterministic MDPs as graphs, with optimal values by value iteration (graph value iteration).

**Direction convention** (stated here only): an action of state ``s`` that leads to
state ``s'`` with reward ``r`` is the edge ``s' → s`` — ``edge_index[0]`` is the
next state, ``edge_index[1]`` the state that acts, and ``edge_attr`` holds ``r``.
Messages thus flow the way value flows (from a successor back to the state that
reaches it), the actions of ``s`` are its in-edges, and the Bellman optimality
equation reads, over the in-edges ``e = (s' → s)`` of ``s``::

    V(s) = max_e  r_e + δ · V(s')          (δ = 0.9, the system's discount)

As in the reference work: ``n_S`` states (uniform in ``[20, 50)`` by default),
every state has ``n_A`` actions (uniform in ``[5, 10)``, the same count for all
states of a graph), each to a uniformly random *other* state, rewards
``U(−1, 1)``. Node feature: the constant 1; edge feature: the reward; target
``y``: the optimal values by value iteration to ``max |ΔV| ≤ 1e-8`` in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch_geometric.data import Data

from convergent import _validation as check
from convergent.cache import load_entry, store_entry

#: The MDPs' discount δ.
DISCOUNT = 0.9
#: Value iteration stops when the largest change of a value is at most this.
VALUE_TOLERANCE = 1e-8


@dataclass(frozen=True)
class MDPBatch:
    """Many MDP graphs as one disjoint union, in the convention of this module.

    Attributes:
        edge_index: ``[2, E]`` int64, ``(next state, acting state)``.
        reward: ``[E]`` float64.
        num_states: ``[G]`` int64 states per graph; the states of graph ``g`` are
            consecutive, after those of graphs ``< g``.
        num_actions: ``[G]`` int64 actions per state in each graph.
    """

    edge_index: Tensor
    reward: Tensor
    num_states: Tensor
    num_actions: Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.num_states.sum())

    def to_data_list(self, values: Tensor) -> list[Data]:
        """One PyG ``Data`` per graph: ``x [n, 1]`` ones, ``edge_index``, ``edge_attr [E, 1]``
        rewards and ``y [n, 1]`` values (float32), with node indices local to the graph."""
        edges = self.num_states * self.num_actions
        node_offsets = torch.cumsum(self.num_states, 0) - self.num_states
        edge_offsets = torch.cumsum(edges, 0) - edges
        graphs = []
        for n, e, node_start, edge_start in zip(self.num_states.tolist(), edges.tolist(),
                                                node_offsets.tolist(), edge_offsets.tolist()):
            graphs.append(Data(
                x=torch.ones(n, 1),
                edge_index=self.edge_index[:, edge_start:edge_start + e] - node_start,
                edge_attr=self.reward[edge_start:edge_start + e, None].float(),
                y=values[node_start:node_start + n, None].float(),
            ))
        return graphs


def random_mdps(num_graphs: int, *, states: tuple[int, int] = (20, 50), actions: tuple[int, int] = (5, 10),
                seed: int = 0) -> MDPBatch:
    """Sample ``num_graphs`` random deterministic MDPs, vectorised over all graphs.

    Args:
        states: ``[low, high)`` range of the number of states per graph (``low ≥ 2``).
        actions: ``[low, high)`` range of the number of actions per state (``low ≥ 1``).
        seed: the whole batch is a function of the seed and the arguments.
    """
    if num_graphs < 1:
        raise ValueError(f"`num_graphs` must be at least 1 (got {num_graphs})")
    for name, (low, high), least in (("states", states, 2), ("actions", actions, 1)):
        if not least <= low < high:
            raise ValueError(f"`{name}` must be a range [low, high) with {least} ≤ low < high (got {(low, high)})")
    generator = torch.Generator().manual_seed(seed)
    num_states = torch.randint(*states, (num_graphs,), generator=generator)
    num_actions = torch.randint(*actions, (num_graphs,), generator=generator)
    graph_of_state = torch.repeat_interleave(torch.arange(num_graphs), num_states)
    first_state = (torch.cumsum(num_states, 0) - num_states)[graph_of_state]
    acting = torch.repeat_interleave(torch.arange(graph_of_state.numel()), num_actions[graph_of_state])
    graph = graph_of_state[acting]
    size = num_states[graph]
    # A uniformly random other state: shift the local index by 1 … n − 1, modulo n.
    shift = 1 + (torch.rand(acting.numel(), generator=generator, dtype=torch.float64) * (size - 1)).long()
    local = acting - first_state[acting]
    next_state = (local + shift) % size + first_state[acting]
    reward = torch.rand(acting.numel(), generator=generator, dtype=torch.float64) * 2 - 1
    return MDPBatch(torch.stack([next_state, acting]), reward, num_states, num_actions)


def check_mdp(edge_index: Tensor, reward: Tensor, num_nodes: int) -> Tensor:
    """Validate an MDP graph (finite rewards, one per edge, an action for every state); returns ``edge_index``."""
    edge_index = check.check_edge_index(edge_index, num_nodes)
    reward = check.check_tensor("reward", reward).reshape(-1)
    if reward.numel() != edge_index.shape[1]:
        raise ValueError(f"need one reward per edge: {edge_index.shape[1]} edges but {reward.numel()} rewards")
    check.check_finite("reward", reward)
    has_action = torch.zeros(num_nodes, dtype=torch.bool).index_fill_(0, edge_index[1], True)
    if not has_action.all():
        state = int((~has_action).nonzero()[0])
        raise ValueError(
            f"state {state} has no action (no edge with edge_index[1] == {state}); every state needs at "
            f"least one. Convention: edge_index[0] is the next state, edge_index[1] the acting state"
        )
    return edge_index


def action_values(values: Tensor, edge_index: Tensor, reward: Tensor, discount: float = DISCOUNT) -> Tensor:
    """``[E]``: ``Q(e) = r_e + δ · V(next state of e)``."""
    return reward.reshape(-1).to(values.dtype) + discount * values.reshape(-1)[edge_index[0]]


def value_iteration(edge_index: Tensor, reward: Tensor, num_nodes: int, *, discount: float = DISCOUNT,
                    tol: float = VALUE_TOLERANCE, max_iter: int = 10_000) -> tuple[Tensor, int]:
    """Optimal values ``V = max_e (r_e + δ V(s'))`` by value iteration from zero, in float64.

    Stops when ``max |V_{k+1} − V_k| ≤ tol``; the error is then at most ``tol · δ / (1 − δ)``.

    Returns:
        ``(values [N] float64, iterations)``.
    """
    edge_index = check_mdp(edge_index, reward, num_nodes)
    reward = reward.reshape(-1).double()
    acting = edge_index[1]
    if not bool((acting[1:] >= acting[:-1]).all()):  # a segment max needs the actions of a state together
        order = torch.argsort(acting, stable=True)
        edge_index, reward = edge_index[:, order], reward[order]
    actions_per_state = torch.bincount(edge_index[1], minlength=num_nodes)
    values = torch.zeros(num_nodes, dtype=torch.float64)
    for iteration in range(1, max_iter + 1):
        updated = torch.segment_reduce(action_values(values, edge_index, reward, discount), "max",
                                       lengths=actions_per_state)
        change = (updated - values).abs().max().item() if num_nodes else 0.0
        values = updated
        if change <= tol:
            return values, iteration
    raise RuntimeError(f"value iteration did not reach tol={tol:g} in {max_iter} sweeps")


def greedy_policy(values: Tensor, edge_index: Tensor, reward: Tensor, num_nodes: int,
                  discount: float = DISCOUNT) -> Tensor:
    """``[N]``: for every state, the edge id of its action with the largest ``r_e + δ V(s')``
    (the lowest edge id among exact ties)."""
    q = action_values(values, edge_index, reward, discount)
    acting = edge_index[1]
    best = torch.full((num_nodes,), -torch.inf, dtype=q.dtype).scatter_reduce_(0, acting, q, "amax")
    edge_ids = torch.arange(q.numel())
    candidates = torch.where(q == best[acting], edge_ids, q.numel())
    return torch.full((num_nodes,), q.numel(), dtype=torch.long).scatter_reduce_(0, acting, candidates, "amin")


def policy_accuracy(predicted: Tensor, true: Tensor, edge_index: Tensor, reward: Tensor) -> float:
    """Fraction of states where the greedy policy of ``predicted`` values picks the action
    the greedy policy of ``true`` values picks."""
    num_nodes = true.reshape(-1).numel()
    chosen = greedy_policy(predicted.reshape(-1).double(), edge_index, reward, num_nodes)
    optimal = greedy_policy(true.reshape(-1).double(), edge_index, reward, num_nodes)
    return (chosen == optimal).double().mean().item()


def gvi_graphs(num_graphs: int, *, states: tuple[int, int] = (20, 50), actions: tuple[int, int] = (5, 10),
               seed: int = 0, cache: Path | None = None) -> list[Data]:
    """``num_graphs`` MDPs with their optimal values as PyG ``Data`` (see the module docstring).

    With ``cache``, the generated batch is stored there (tensors only, loaded with
    ``weights_only=True``) and reused when it was made with the same arguments.
    """
    key = {"num_graphs": num_graphs, "states": list(states), "actions": list(actions), "seed": seed,
           "discount": DISCOUNT, "tol": VALUE_TOLERANCE}
    stored = load_entry(cache, key)
    if stored is not None:
        mdps = MDPBatch(stored["edge_index"], stored["reward"], stored["num_states"], stored["num_actions"])
        return mdps.to_data_list(stored["values"])
    mdps = random_mdps(num_graphs, states=states, actions=actions, seed=seed)
    values, _ = value_iteration(mdps.edge_index, mdps.reward, mdps.num_nodes)
    store_entry(cache, key, edge_index=mdps.edge_index, reward=mdps.reward, values=values,
                num_states=mdps.num_states, num_actions=mdps.num_actions)
    return mdps.to_data_list(values)
