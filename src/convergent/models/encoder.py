"""The attention message-passing encoder of CGS (edge update, attention, node update)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.nn import MLP
from torch_geometric.nn.resolver import activation_resolver
from torch_geometric.utils import scatter, softmax


def mlp(in_channels: int, hidden_channels: int, out_channels: int, num_layers: int, activation: str) -> MLP:
    """A plain PyG ``MLP`` without normalisation layers (they would couple the graphs of a batch)."""
    return MLP(in_channels=in_channels, hidden_channels=hidden_channels, out_channels=out_channels,
               num_layers=num_layers, act=activation, norm=None)


class AttentionLayer(nn.Module):
    r"""One graph-network block with attention-weighted messages.

    .. math::
        e'_{st} = \phi_e([x_s, x_t, e_{st}]), \quad
        \alpha_{st} = \mathrm{softmax}_{s \to t}(w^\top e'_{st}), \quad
        x'_t = \phi_n([x_t, \textstyle\sum_{s \to t} \alpha_{st} e'_{st}])

    Shapes:
        x ``[N, node_channels]``, edge_attr ``[E, edge_channels]`` →
        ``([N, hidden_channels], [E, hidden_channels])``.
    """

    def __init__(self, node_channels: int, edge_channels: int, hidden_channels: int, activation: str = "silu"):
        super().__init__()
        # φ_e = edge_output ∘ edge_input; edge_input acts on [x_s, x_t, e_st] (see `forward`).
        self.node_channels = node_channels
        self.edge_input = nn.Linear(2 * node_channels + edge_channels, hidden_channels)
        self.edge_output = nn.Sequential(activation_resolver(activation), nn.Linear(hidden_channels, hidden_channels))
        self.attention = nn.Linear(hidden_channels, 1)
        self.node_update = mlp(node_channels + hidden_channels, hidden_channels, hidden_channels, 2, activation)

    def reset_parameters(self) -> None:
        self.edge_input.reset_parameters()
        self.edge_output[1].reset_parameters()
        self.attention.reset_parameters()
        self.node_update.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> tuple[Tensor, Tensor]:
        source, target = edge_index
        # The first layer of φ_e is linear in [x_s, x_t, e_st]: its node parts are computed per
        # node and gathered, which costs N rather than E rows (E ≫ N), forward and backward.
        to_source, to_target, to_edge = self.edge_input.weight.split(
            [self.node_channels, self.node_channels, edge_attr.shape[1]], dim=1)
        edge = (F.linear(x, to_source).index_select(0, source) + F.linear(x, to_target).index_select(0, target)
                + F.linear(edge_attr, to_edge, self.edge_input.bias))
        edge = self.edge_output(edge)
        weight = softmax(self.attention(edge), target, num_nodes=x.shape[0])
        message = scatter(weight * edge, target, 0, x.shape[0], reduce="sum")
        return self.node_update(torch.cat([x, message], dim=-1)), edge


class AttentionEncoder(nn.Module):
    """``num_layers`` :class:`AttentionLayer` blocks; returns node and edge embeddings.

    Shapes:
        x ``[N, in_channels]``, edge_attr ``[E, edge_channels]`` (may have 0 columns) →
        ``([N, hidden_channels], [E, hidden_channels])``.
    """

    def __init__(self, in_channels: int, edge_channels: int, hidden_channels: int, num_layers: int,
                 activation: str = "silu"):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"`num_layers` must be at least 1 (got {num_layers})")
        self.layers = nn.ModuleList(
            AttentionLayer(in_channels if i == 0 else hidden_channels,
                           edge_channels if i == 0 else hidden_channels,
                           hidden_channels, activation)
            for i in range(num_layers)
        )

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> tuple[Tensor, Tensor]:
        for layer in self.layers:
            x, edge_attr = layer(x, edge_index, edge_attr)
        return x, edge_attr
