"""Steady-state embedding (Dai et al., ICML 2018), in its deterministic form."""

from __future__ import annotations

import numbers
from typing import Callable

import torch
from torch import Tensor, nn
from torch_geometric.nn.resolver import activation_resolver
from torch_geometric.utils import scatter

from convergent.models._inputs import check_graph_inputs
from convergent.models.encoder import mlp


class SSE(nn.Module):
    r"""Steady-state embedding (Dai, Kozareva, Dai, Smola & Song, ICML 2018), all nodes every step.

    .. math::
        T_\theta(h)_t = W_2\, \sigma\Big(W_1 \Big[x_t,\ \textstyle\sum_{s \to t} [h_s, x_s, e_{st}]\Big]
                        + c_1\Big) + c_2, \qquad
        h \leftarrow (1 - \alpha)\, h + \alpha\, T_\theta(h), \qquad
        \hat y_t = g_\theta(h_t)

    with sums over the in-edges ``s → t`` (``edge_index[0]`` source, ``edge_index[1]``
    target). ``W_1`` is split into the columns acting on ``Σ h_s`` and those acting on
    the constant ``[x_t, Σ x_s, Σ e_st]``, which is computed once per call.

    **Simplifications, stated honestly.** The paper updates a random sample of nodes
    per step, keeps the embeddings between parameter updates and alternates them with
    gradient steps on the parameters. Here every call starts from ``h = 0``, makes
    ``num_steps`` damped updates of *all* nodes without gradient (the deterministic
    limit of the sampled updates), then one more damped update with gradient:
    gradients flow only through that last step, with the state before it taken as
    given — the steady-state-constraint style of training of SSE. Nothing bounds
    ``T_θ`` to contract, so ``num_steps`` is a fixed budget, not a convergence test.

    Args:
        in_channels: node feature size.
        out_channels: target size per node.
        edge_channels: edge feature size (0 for none). (default: ``0``)
        hidden_channels: width of ``T_θ`` and the decoder. (default: ``64``)
        state_channels: state size. (default: ``hidden_channels``)
        num_steps: damped updates without gradient before the last one. (default: ``20``)
        alpha: weight ``α`` in (0, 1] of ``T_θ(h)`` in the damped update. (default: ``0.5``)
        decoder_layers: depth of the decoder MLP. (default: ``2``)
        activation: ``σ`` and the activation of the decoder. (default: ``"silu"``)

    Shapes:
        x ``[N, in_channels]``, edge_index ``[2, E]``, edge_attr ``[E, edge_channels]``
        or ``None``, batch ``[N]`` or ``None`` (unused: no step mixes graphs) →
        ``[N, out_channels]``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, edge_channels: int = 0, hidden_channels: int = 64,
                 state_channels: int | None = None, num_steps: int = 20, alpha: float = 0.5,
                 decoder_layers: int = 2, activation: str = "silu"):
        super().__init__()
        if not isinstance(num_steps, numbers.Integral) or isinstance(num_steps, bool) or num_steps < 0:
            raise ValueError(f"`num_steps` must be a non-negative integer (got {num_steps!r})")
        if not isinstance(alpha, numbers.Real) or not 0.0 < alpha <= 1.0:
            raise ValueError(f"`alpha` must be in (0, 1] (got {alpha!r})")
        state_channels = hidden_channels if state_channels is None else state_channels
        self.in_channels, self.edge_channels, self.state_channels = in_channels, edge_channels, state_channels
        self.num_steps, self.alpha = int(num_steps), float(alpha)
        # W_1 and c_1 on [x_t, Σ x_s, Σ e_st], then W_1 on Σ h_s.
        self.constant_input = nn.Linear(2 * in_channels + edge_channels, hidden_channels)
        self.state_input = nn.Linear(state_channels, hidden_channels, bias=False)
        self.activation = activation_resolver(activation)
        self.output = nn.Linear(hidden_channels, state_channels)  # W_2 and c_2
        self.decoder = mlp(state_channels, hidden_channels, out_channels, decoder_layers, activation)

    def reset_parameters(self) -> None:
        for module in (self.constant_input, self.state_input, self.output, self.decoder):
            module.reset_parameters()

    def fixed_point_map(self, x: Tensor, edge_index: Tensor,
                        edge_attr: Tensor | None = None) -> Callable[[Tensor], Tensor]:
        """The operator ``T_θ`` on states ``[N, state_channels]`` for this graph."""
        return self._operator(*check_graph_inputs(x, edge_index, edge_attr, self.in_channels, self.edge_channels))

    def _operator(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Callable[[Tensor], Tensor]:
        source, target = edge_index
        num_nodes = x.shape[0]

        def sum_in(edge_values: Tensor) -> Tensor:
            return scatter(edge_values, target, 0, num_nodes, reduce="sum")

        constant = self.constant_input(torch.cat([x, sum_in(x.index_select(0, source)), sum_in(edge_attr)], dim=1))

        def operator(h: Tensor) -> Tensor:
            return self.output(self.activation(constant + self.state_input(sum_in(h.index_select(0, source)))))

        return operator

    def embed(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
              batch: Tensor | None = None) -> Tensor:
        """The state ``[N, state_channels]`` after ``num_steps + 1`` damped updates from zero."""
        operator = self.fixed_point_map(x, edge_index, edge_attr)
        h = x.new_zeros(x.shape[0], self.state_channels)
        with torch.no_grad():
            for _ in range(self.num_steps):
                h = torch.lerp(h, operator(h), self.alpha)
        return torch.lerp(h, operator(h), self.alpha)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                batch: Tensor | None = None) -> Tensor:
        return self.decoder(self.embed(x, edge_index, edge_attr, batch))

    def extra_repr(self) -> str:
        return f"state_channels={self.state_channels}, num_steps={self.num_steps}, alpha={self.alpha}"
