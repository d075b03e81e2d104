"""Convergent Graph Solver models: node-level :class:`CGS` and graph-level :class:`GraphCGS`."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from convergent import _validation as check
from convergent._nonlinearity import Nonlinearity
from convergent.contraction import degree_normalize, gated_softmax
from convergent.implicit import solve
from convergent.models._inputs import check_graph_inputs
from convergent.models.encoder import AttentionEncoder, mlp
from convergent.models.readout import READOUTS
from convergent.solvers import SolveInfo

NORMALIZATIONS = ("degree", "softmax")


class FixedPointEmbedding(nn.Module):
    r"""Encoder → ``num_heads`` contracting maps → fixed points ``H* ∈ R^{N × M}``.

    For every head ``m``: ``h_m = γ A_m h_m + b_m`` (or ``φ(γ A_m h_m + b_m)``),
    with ``A_m`` built from edge scores by :func:`~convergent.degree_normalize`
    or :func:`~convergent.gated_softmax`, so the fixed point exists and is
    unique for every parameter value and input graph.
    See :class:`CGS` for the arguments.
    """

    def __init__(self, in_channels: int, edge_channels: int = 0, hidden_channels: int = 64, num_heads: int = 16,
                 gamma: float = 0.5, num_layers: int = 2, normalization: str = "degree",
                 nonlinearity: Nonlinearity = None, solver: str = "auto", tol: float = 1e-5,
                 max_iter: int | None = None, activation: str = "silu", on_nonconvergence: str = "warn",
                 source_channel: int | None = None):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"`normalization` must be one of {NORMALIZATIONS} (got {normalization!r})")
        if source_channel is not None and not (isinstance(source_channel, int) and 0 <= source_channel < in_channels):
            raise ValueError(f"`source_channel` must be the index of an input feature, 0 to {in_channels - 1} "
                             f"(got {source_channel!r})")
        self.source_channel = source_channel
        self.in_channels, self.edge_channels = in_channels, edge_channels
        self.num_heads, self.gamma, self.normalization = num_heads, check.check_gamma(gamma), normalization
        self.solve_options = dict(gamma=self.gamma, solver=solver, tol=tol, max_iter=max_iter,
                                  nonlinearity=nonlinearity, on_nonconvergence=on_nonconvergence)
        self.encoder = AttentionEncoder(in_channels, edge_channels, hidden_channels, num_layers, activation)
        self.edge_score = nn.Linear(hidden_channels, num_heads)
        self.node_bias = nn.Linear(hidden_channels, num_heads)
        self.node_gate = nn.Linear(hidden_channels, num_heads) if normalization == "softmax" else None
        self.last_solve: SolveInfo | None = None

    def reset_parameters(self) -> None:
        for module in (self.encoder, self.edge_score, self.node_bias, self.node_gate):
            if module is not None:
                module.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                batch: Tensor | None = None) -> Tensor:
        x, edge_index, edge_attr = check_graph_inputs(x, edge_index, edge_attr, self.in_channels,
                                                      self.edge_channels)
        num_nodes = x.shape[0]
        node, edge = self.encoder(x, edge_index, edge_attr)
        scores = edge.linear(self.edge_score.weight, self.edge_score.bias)
        if self.normalization == "degree":
            weight = degree_normalize(scores, edge_index, num_nodes)
        else:
            weight = gated_softmax(scores, self.node_gate(node), edge_index, num_nodes)
        bias = self.node_bias(node)
        if self.source_channel is not None:
            bias = bias * x[:, self.source_channel:self.source_channel + 1]
        h, self.last_solve = solve(edge_index, weight, bias, batch=batch, **self.solve_options)
        return h

    def extra_repr(self) -> str:
        return (f"num_heads={self.num_heads}, gamma={self.gamma}, normalization={self.normalization!r}, "
                f"solver={self.solve_options['solver']!r}, nonlinearity={self.solve_options['nonlinearity']!r}")


class CGS(nn.Module):
    r"""Convergent Graph Solver for node-level targets (Park, Choo & Park, ICLR 2022).

    .. math::
        (b, s) = f_\theta(X, E), \qquad
        h^*_m = \gamma A_m(s) h^*_m + b_m, \qquad
        \hat y_i = g_\theta(h^*_i)

    where :math:`A_m(s)` is a non-negative map with :math:`\|A_m\| \le 1`, so
    :math:`h^*` exists and is unique for any input; gradients come from the
    implicit function theorem (:func:`convergent.solve`).

    Args:
        in_channels: node feature size.
        out_channels: target size per node.
        edge_channels: edge feature size (0 for none). (default: ``0``)
        hidden_channels: encoder and decoder width. (default: ``64``)
        num_heads: number of maps ``M``. (default: ``16``)
        gamma: contraction factor in (0, 1). (default: ``0.5``)
        num_layers: encoder depth. (default: ``2``)
        normalization: ``"degree"`` (clip and divide by out-degree, the paper's) or
            ``"softmax"`` (gated softmax over in-edges). (default: ``"degree"``)
        nonlinearity: ``None`` or a 1-Lipschitz ``φ`` (see :func:`convergent.solve`).
        solver, tol, max_iter, on_nonconvergence: passed to :func:`convergent.solve`.
            (defaults: ``"auto"``, ``1e-5``, ``None``, ``"warn"``)
        activation: activation of the MLPs. (default: ``"silu"``)
        source_channel: the input feature that drives the system, for steady states that are
            zero without a source (personalised PageRank and its seeds): every head's bias is
            that feature times a learned node coefficient, ``b_m = x_src · β_m(node)``, and the
            decoder has no bias terms (with an activation that maps 0 to 0, as SiLU does, it
            maps 0 to 0), so nodes far from every source get a fixed point and a prediction
            near 0 rather than a learned constant. (default: ``None``, ``b_m = β_m(node)``)
        decoder_layers: depth of the decoder MLP. (default: ``2``)
        graph_context: also decode the mean of ``h*`` over each node's graph, next to
            the node's own ``h*`` (a graph-level offset, e.g. of MDP values). (default: ``False``)
        stages: number of fixed-point stages. Stage ``k > 1`` has its own encoder and maps,
            and its node features are the input features next to stage ``k − 1``'s fixed
            point, so its maps can depend on the first solution — as policy iteration
            re-chooses actions from the values of the last policy. (default: ``1``)

    Shapes:
        x ``[N, in_channels]``, edge_index ``[2, E]``, edge_attr ``[E, edge_channels]``,
        batch ``[N]`` → ``[N, out_channels]``. ``model.last_solve`` holds the
        :class:`~convergent.SolveInfo` of the last forward pass.
    """

    def __init__(self, in_channels: int, out_channels: int, *, decoder_layers: int = 2, graph_context: bool = False,
                 stages: int = 1, **options):
        super().__init__()
        if not isinstance(stages, int) or stages < 1:
            raise ValueError(f"`stages` must be a positive integer (got {stages!r})")
        self.embedding = FixedPointEmbedding(in_channels, **options)
        heads = self.embedding.num_heads
        self.later_stages = nn.ModuleList(FixedPointEmbedding(in_channels + heads, **options)
                                          for _ in range(stages - 1))
        self.graph_context = bool(graph_context)
        hidden = options.get("hidden_channels", 64)
        self.decoder = mlp((2 if self.graph_context else 1) * self.embedding.num_heads, hidden, out_channels,
                           decoder_layers, options.get("activation", "silu"),
                           bias=options.get("source_channel") is None)

    @property
    def last_solve(self) -> SolveInfo | None:
        """The solve report of the last stage in the last forward pass."""
        return (self.later_stages[-1] if len(self.later_stages) else self.embedding).last_solve

    def reset_parameters(self) -> None:
        self.embedding.reset_parameters()
        for stage in self.later_stages:
            stage.reset_parameters()
        self.decoder.reset_parameters()

    def fixed_points(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                     batch: Tensor | None = None) -> Tensor:
        """``[N, num_heads]``: the last stage's fixed point ``h*``."""
        h = self.embedding(x, edge_index, edge_attr, batch)
        for stage in self.later_stages:
            h = stage(torch.cat([x, (1.0 - self.embedding.gamma) * h], dim=-1), edge_index, edge_attr, batch)
        return h

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                batch: Tensor | None = None) -> Tensor:
        h = self.fixed_points(x, edge_index, edge_attr, batch)
        if self.graph_context:
            context = h.mean(0, keepdim=True).expand_as(h) if batch is None else READOUTS["mean"](h, batch)[batch]
            h = torch.cat([h, context], dim=-1)
        return self.decoder(h)


class GraphCGS(CGS):
    r"""Convergent Graph Solver for graph-level targets: :class:`CGS` with a readout.

    .. math::
        \hat y_G = g_\theta\big(\mathrm{readout}_{i \in G}\, h^*_i\big)

    Args:
        readout: ``"sum"`` or ``"mean"``. (default: ``"sum"``)
        Others as in :class:`CGS`.

    Shapes:
        x ``[N, in_channels]``, edge_index ``[2, E]``, edge_attr ``[E, edge_channels]``,
        batch ``[N]`` → ``[G, out_channels]``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, readout: str = "sum", **options):
        if readout not in READOUTS:
            raise ValueError(f"`readout` must be one of {sorted(READOUTS)} (got {readout!r})")
        if options.get("graph_context"):
            raise ValueError("`graph_context` is for node targets (CGS); GraphCGS already decodes a graph readout")
        super().__init__(in_channels, out_channels, **options)
        self.readout = readout

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                batch: Tensor | None = None) -> Tensor:
        h = self.fixed_points(x, edge_index, edge_attr, batch)
        return self.decoder(READOUTS[self.readout](h, batch))
