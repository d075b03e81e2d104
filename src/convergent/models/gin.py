"""Graph Isomorphism Network for graph classification (Xu, Hu, Leskovec & Jegelka, ICLR 2019)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.nn import MLP, GINConv

from convergent.models._inputs import check_graph_inputs
from convergent.models.readout import READOUTS


class GIN(nn.Module):
    r"""GIN-0 as in its paper's graph-classification experiments.

    ``num_layers`` counts the input layer, as the paper does: ``num_layers − 1`` GIN
    convolutions ``h' = MLP((1 + ε) h + Σ_{s → t} h_s)`` (ε = 0, two-layer MLPs with batch
    norm), and the prediction sums, over the input features and every layer's output, a
    linear map of the graph's sum readout, with dropout.

    Shapes:
        x ``[N, in_channels]``, edge_index ``[2, E]``, edge_attr ignored (must be ``None``
        unless ``edge_channels``), batch ``[N]`` → ``[G, out_channels]`` (logits).
    """

    def __init__(self, in_channels: int, out_channels: int, *, edge_channels: int = 0, hidden_channels: int = 64,
                 num_layers: int = 5, dropout: float = 0.5, readout: str = "sum"):
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"`num_layers` counts the input layer and must be at least 2 (got {num_layers})")
        if readout not in READOUTS:
            raise ValueError(f"`readout` must be one of {sorted(READOUTS)} (got {readout!r})")
        self.in_channels, self.edge_channels, self.dropout, self.readout = in_channels, edge_channels, dropout, readout
        self.convolutions = nn.ModuleList(
            GINConv(MLP([in_channels if i == 0 else hidden_channels, hidden_channels, hidden_channels],
                        norm="batch_norm"), train_eps=False)
            for i in range(num_layers - 1)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden_channels) for _ in range(num_layers - 1))
        self.predictions = nn.ModuleList(
            nn.Linear(in_channels if i == 0 else hidden_channels, out_channels) for i in range(num_layers)
        )

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                batch: Tensor | None = None) -> Tensor:
        x, edge_index, _ = check_graph_inputs(x, edge_index, edge_attr, self.in_channels, self.edge_channels)
        pool = READOUTS[self.readout]
        hidden = [x]
        for convolution, norm in zip(self.convolutions, self.norms):
            hidden.append(F.relu(norm(convolution(hidden[-1], edge_index))))
        return sum(F.dropout(prediction(pool(h, batch)), self.dropout, self.training)
                   for prediction, h in zip(self.predictions, hidden))
