"""The attention message-passing encoder of CGS (edge update, attention, node update)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.nn import MLP
from torch_geometric.nn.resolver import activation_resolver
from torch_geometric.utils import scatter, softmax


def mlp(in_channels: int, hidden_channels: int, out_channels: int, num_layers: int, activation: str,
        bias: bool = True) -> MLP:
    """A plain PyG ``MLP`` without normalisation layers (they would couple the graphs of a batch);
    without ``bias`` and with an activation that maps 0 to 0, it maps 0 to 0."""
    return MLP(in_channels=in_channels, hidden_channels=hidden_channels, out_channels=out_channels,
               num_layers=num_layers, act=activation, norm=None, bias=bias)


class EdgeEmbedding(NamedTuple):
    r"""Edge embeddings ``e = features @ weight.T + bias`` kept as the factors of their last linear layer.

    Every use of an edge embedding in CGS is itself linear (the next layer's edge input,
    the attention logits, the head scores), so ``L(e) = features @ (L.W · weight).T + ...``
    costs one ``[E, K] × [K, out]`` product instead of two: an ``[E, ·]`` product is the
    encoder's largest cost. ``weight is None`` means ``e = features`` (the raw edge features).

    Shapes:
        features ``[E, K]``, weight ``[C, K]``, bias ``[C]`` for embeddings ``[E, C]``.
    """

    features: Tensor
    weight: Tensor | None = None
    bias: Tensor | None = None

    def linear(self, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """``F.linear(e, weight, bias)`` without forming ``e``: ``[E, weight.shape[0]]``."""
        if self.weight is None:
            return F.linear(self.features, weight, bias)
        return torch.addmm(F.linear(self.bias, weight, bias), self.features, (weight @ self.weight).T)

    def tensor(self) -> Tensor:
        """The embeddings themselves, ``[E, C]``."""
        return self.features if self.weight is None else F.linear(self.features, self.weight, self.bias)


class AttentionLayer(nn.Module):
    r"""One graph-network block with attention-weighted messages.

    .. math::
        e'_{st} = \phi_e([x_s, x_t, e_{st}]), \quad
        \alpha_{st} = \mathrm{softmax}_{s \to t}(w^\top e'_{st}), \quad
        x'_t = \phi_n([x_t, \textstyle\sum_{s \to t} \alpha_{st} e'_{st}])

    φ_e is linear → activation → linear; its last linear layer is applied lazily
    (see :class:`EdgeEmbedding`), and the attention sum is taken before it:
    ``Σ α e' = (Σ α a) Wᵀ + (Σ α) b``, over ``N`` rows instead of ``E``.

    Shapes:
        x ``[N, node_channels]``, edge ``[E, edge_channels]`` as an :class:`EdgeEmbedding` →
        ``([N, hidden_channels], EdgeEmbedding of [E, hidden_channels])``.
    """

    def __init__(self, node_channels: int, edge_channels: int, hidden_channels: int, activation: str = "silu"):
        super().__init__()
        # φ_e = edge_output ∘ edge_input, edge_output = (activation, linear); edge_input acts on
        # [x_s, x_t, e_st] (see `forward`).
        self.node_channels = node_channels
        self.edge_input = nn.Linear(2 * node_channels + edge_channels, hidden_channels)
        self.edge_output = nn.Sequential(activation_resolver(activation), nn.Linear(hidden_channels, hidden_channels))
        self.attention = nn.Linear(hidden_channels, 1)
        self.node_update = mlp(node_channels + hidden_channels, hidden_channels, hidden_channels, 2, activation)

    def reset_parameters(self) -> None:
        for module in (self.edge_input, self.edge_output[1], self.attention, self.node_update):
            module.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge: EdgeEmbedding) -> tuple[Tensor, EdgeEmbedding]:
        source, target = edge_index
        num_nodes = x.shape[0]
        # The first layer of φ_e is linear in [x_s, x_t, e_st]: its node parts are computed per
        # node and gathered, which costs N rather than E rows (E ≫ N), forward and backward.
        to_source, to_target, to_edge = self.edge_input.weight.split(
            [self.node_channels, self.node_channels, self.edge_input.in_features - 2 * self.node_channels], dim=1)
        hidden = edge.linear(to_edge, self.edge_input.bias)
        hidden = hidden.add_(F.linear(x, to_source).index_select(0, source))
        hidden = hidden.add_(F.linear(x, to_target).index_select(0, target))
        activation, output = self.edge_output
        hidden = activation(hidden)
        out = EdgeEmbedding(hidden, output.weight, output.bias)
        weight = softmax(out.linear(self.attention.weight, self.attention.bias), target, num_nodes=num_nodes)
        message = F.linear(scatter(weight * hidden, target, 0, num_nodes, reduce="sum"), output.weight)
        message = message + scatter(weight, target, 0, num_nodes, reduce="sum") * output.bias
        return self.node_update(torch.cat([x, message], dim=-1)), out


class AttentionEncoder(nn.Module):
    """``num_layers`` :class:`AttentionLayer` blocks; returns node and edge embeddings.

    Shapes:
        x ``[N, in_channels]``, edge_attr ``[E, edge_channels]`` (may have 0 columns) →
        ``([N, hidden_channels], EdgeEmbedding of [E, hidden_channels])``.
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

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> tuple[Tensor, EdgeEmbedding]:
        edge = EdgeEmbedding(edge_attr)
        for layer in self.layers:
            x, edge = layer(x, edge_index, edge)
        return x, edge
