"""Fixed-depth message passing: the baseline that CGS's fixed point replaces."""

from __future__ import annotations

from torch import Tensor, nn

from convergent.models._inputs import check_graph_inputs
from convergent.models.encoder import AttentionEncoder, mlp


class MPNN(nn.Module):
    r"""``num_layers`` attention message-passing blocks and the CGS decoder.

    .. math::
        h^{(0)} = x, \qquad
        h^{(\ell)} = \mathrm{AttentionLayer}_\ell(h^{(\ell - 1)}, e^{(\ell - 1)}), \qquad
        \hat y_i = g_\theta(h^{(L)}_i)

    The blocks are CGS's encoder layers (:class:`~convergent.models.AttentionLayer`),
    so the comparison with :class:`~convergent.CGS` isolates what the fixed point
    adds: information travels at most ``num_layers`` hops along the edges
    (``edge_index[0]`` source → ``edge_index[1]`` target).

    Args:
        in_channels: node feature size.
        out_channels: target size per node.
        edge_channels: edge feature size (0 for none). (default: ``0``)
        hidden_channels: width of the blocks and the decoder. (default: ``64``)
        num_layers: number of blocks ``L``. (default: ``3``)
        decoder_layers: depth of the decoder MLP. (default: ``2``)
        activation: activation of the MLPs. (default: ``"silu"``)

    Shapes:
        x ``[N, in_channels]``, edge_index ``[2, E]``, edge_attr ``[E, edge_channels]``
        or ``None``, batch ``[N]`` or ``None`` (unused: no step mixes graphs) →
        ``[N, out_channels]``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, edge_channels: int = 0, hidden_channels: int = 64,
                 num_layers: int = 3, decoder_layers: int = 2, activation: str = "silu"):
        super().__init__()
        self.in_channels, self.edge_channels = in_channels, edge_channels
        self.encoder = AttentionEncoder(in_channels, edge_channels, hidden_channels, num_layers, activation)
        self.decoder = mlp(hidden_channels, hidden_channels, out_channels, decoder_layers, activation)

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        self.decoder.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                batch: Tensor | None = None) -> Tensor:
        x, edge_index, edge_attr = check_graph_inputs(x, edge_index, edge_attr, self.in_channels,
                                                      self.edge_channels)
        node, _ = self.encoder(x, edge_index, edge_attr)
        return self.decoder(node)

    def extra_repr(self) -> str:
        return f"num_layers={len(self.encoder.layers)}"
