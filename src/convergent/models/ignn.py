"""Implicit Graph Neural Network (Gu et al., NeurIPS 2020): a well-posed ReLU fixed point."""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F
from torch_geometric.utils import scatter

from convergent import _validation as check
from convergent.models._inputs import check_graph_inputs
from convergent.models.encoder import mlp
from convergent.models.readout import READOUTS
from convergent.solvers._problem import default_max_iter

#: A map on node states, ``[N, m] -> [N, m]``.
Map = Callable[[Tensor], Tensor]


class IGNN(nn.Module):
    r"""Implicit Graph Neural Network (Gu, Chang, Zhu, Sojoudi & El Ghaoui, NeurIPS 2020).

    .. math::
        h_t = \mathrm{ReLU}\Big(W \sum_{s \to t} \hat A_{ts} h_s + b_t\Big), \qquad
        b_t = U x_t + V \sum_{s \to t} \hat A_{ts} e_{st} + c, \qquad
        \hat y_t = g_\theta(h^*_t)

    — the paper's ``X = φ(W X A + B)`` written per node, ``Â_{ts}`` weighing the message
    ``s → t`` (``edge_index[0]`` source, ``edge_index[1]`` target). ``Â`` is the
    row-normalised adjacency, ``Â_{ts} = 1 / indeg(t)`` for every edge ``s → t``
    (duplicate edges count), so both sums are means over the in-edges, and a node
    without in-edges gets ``h_t = ReLU(b_t)``. The input term takes the node's own
    features and the mean of its in-edge features (the paper propagates node features
    instead, ``B = U u A``; here edge features carry the task, and the state already
    mixes in the neighbours).

    **Well-posedness.** Every row of ``Â`` sums to 1 or 0, so the Perron–Frobenius
    eigenvalue of ``|Â|`` is at most 1 for every graph and we use ``λ_pf = 1``. With
    ``‖W‖_∞ ≤ κ / λ_pf = κ < 1`` (largest absolute row sum) the map is a
    ``κ``-contraction in the max-norm over nodes and channels: the fixed point exists,
    is unique, and Picard iteration reaches it. The map always uses the projection of
    ``W`` onto that ball (each row onto the ℓ₁ ball of radius ``κ``; the identity
    inside), so it is well-posed for any ``W``. :meth:`project` writes the projection
    into ``W``: call it after every optimiser step, as the paper does (projected
    gradient descent); then the projection in the map changes nothing.

    **Forward**: Picard iteration from zero without gradient until, for every graph
    ``g``, ``‖T(h) − h‖_g ≤ tol · max(‖T(0)‖_g, ‖T(h)‖_g)`` (max-norm over the nodes
    and channels of ``g``) or ``max_iter`` map evaluations; the output is ``T`` applied
    once more, with gradient. **Backward** (implicit function theorem, nothing
    unrolled): the upstream gradient ``ḡ`` is replaced by the solution of
    ``u = Jᵀ u + ḡ``, ``J = ∂T/∂h`` at the fixed point, found by iterating
    vector–Jacobian products under the same rule in the 1-norm (where ``Jᵀ``
    contracts); ``u`` then flows through that one application of ``T`` into the
    parameters and inputs.

    Args:
        in_channels: node feature size.
        out_channels: target size per node.
        edge_channels: edge feature size (0 for none). (default: ``0``)
        hidden_channels: decoder width. (default: ``64``)
        state_channels: state size ``m``. (default: ``hidden_channels``)
        kappa: bound ``κ`` in (0, 1) on ``‖W‖_∞ λ_pf(|Â|)``. (default: ``0.95``)
        tol: relative tolerance of the stopping rule, forward and backward. (default: ``1e-5``)
        max_iter: most map evaluations per solve. (default: twice the
            ``⌈log tol / log κ⌉`` the contraction guarantees, plus 20)
        decoder_layers: depth of the decoder MLP. (default: ``2``)
        activation: activation of the decoder. (default: ``"silu"``)

    Shapes:
        x ``[N, in_channels]``, edge_index ``[2, E]``, edge_attr ``[E, edge_channels]``
        or ``None``, batch ``[N]`` or ``None`` → ``[N, out_channels]``.
        ``model.last_iterations`` holds the forward map evaluations of the last call
        (the most over its graphs).
    """

    def __init__(self, in_channels: int, out_channels: int, *, edge_channels: int = 0, hidden_channels: int = 64,
                 state_channels: int | None = None, kappa: float = 0.95, tol: float = 1e-5,
                 max_iter: int | None = None, decoder_layers: int = 2, activation: str = "silu"):
        super().__init__()
        if not isinstance(kappa, numbers.Real) or not 0.0 < kappa < 1.0:
            raise ValueError(f"`kappa` must be in (0, 1) for the map to contract (got {kappa!r})")
        state_channels = hidden_channels if state_channels is None else state_channels
        self.in_channels, self.edge_channels, self.state_channels = in_channels, edge_channels, state_channels
        self.kappa, self.tol = float(kappa), check.check_tol(tol)
        self.max_iter = default_max_iter(self.kappa, self.tol) if max_iter is None else check.check_max_iter(max_iter)
        self.weight = nn.Parameter(torch.empty(state_channels, state_channels))
        self.node_input = nn.Linear(in_channels, state_channels)
        self.edge_input = nn.Linear(edge_channels, state_channels, bias=False) if edge_channels else None
        self.decoder = mlp(state_channels, hidden_channels, out_channels, decoder_layers, activation)
        self.last_iterations = 0
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default
        self.project()
        for module in (self.node_input, self.edge_input, self.decoder):
            if module is not None:
                module.reset_parameters()

    @torch.no_grad()
    def project(self) -> None:
        """Project ``W`` onto ``‖W‖_∞ ≤ κ / λ_pf`` in place; call after every optimiser step."""
        self.weight.copy_(project_rows_onto_l1_ball(self.weight, self.kappa))

    def fixed_point_map(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> Map:
        """The map ``T`` on states ``[N, state_channels]`` whose fixed point :meth:`embed` returns."""
        return self._map(*check_graph_inputs(x, edge_index, edge_attr, self.in_channels, self.edge_channels))

    def _map(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Map:
        source, target = edge_index
        num_nodes = x.shape[0]
        bias = self.node_input(x)
        if self.edge_input is not None:
            bias = bias + self.edge_input(scatter(edge_attr, target, 0, num_nodes, reduce="mean"))
        weight = project_rows_onto_l1_ball(self.weight, self.kappa)

        def step(h: Tensor) -> Tensor:
            neighbours = scatter(h.index_select(0, source), target, 0, num_nodes, reduce="mean")  # Â h
            return torch.relu(F.linear(neighbours, weight) + bias)

        return step

    def embed(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
              batch: Tensor | None = None) -> Tensor:
        """The fixed point ``h* [N, state_channels]``, differentiable by the implicit function theorem."""
        x, edge_index, edge_attr = check_graph_inputs(x, edge_index, edge_attr, self.in_channels, self.edge_channels)
        num_nodes = x.shape[0]
        batch, num_graphs = check.check_batch(batch, num_nodes, edge_index)
        if batch is None:
            batch = edge_index.new_zeros(num_nodes)
        picard = _PicardPerGraph(self.tol, self.max_iter, batch, num_graphs)
        step = self._map(x, edge_index, edge_attr)
        with torch.no_grad():
            h, self.last_iterations = picard(step, x.new_zeros(num_nodes, self.state_channels), "max")
        mapped = step(h)
        if not mapped.requires_grad:
            return mapped
        return _ImplicitGradient.apply(mapped, h, step, picard)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                batch: Tensor | None = None) -> Tensor:
        return self.decoder(self.embed(x, edge_index, edge_attr, batch))

    def extra_repr(self) -> str:
        return f"state_channels={self.state_channels}, kappa={self.kappa}, tol={self.tol}, max_iter={self.max_iter}"


class GraphIGNN(IGNN):
    r"""IGNN for graph-level targets: ``ŷ_G = g_θ(readout_{i ∈ G} h*_i)``.

    Args:
        readout: ``"sum"`` or ``"mean"``. (default: ``"sum"``)
        Others as in :class:`IGNN`.

    Shapes:
        as :class:`IGNN`, but → ``[G, out_channels]``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, readout: str = "sum", **options):
        if readout not in READOUTS:
            raise ValueError(f"`readout` must be one of {sorted(READOUTS)} (got {readout!r})")
        super().__init__(in_channels, out_channels, **options)
        self.readout = readout

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                batch: Tensor | None = None) -> Tensor:
        return self.decoder(READOUTS[self.readout](self.embed(x, edge_index, edge_attr, batch), batch))


def project_rows_onto_l1_ball(weight: Tensor, radius: float) -> Tensor:
    """Euclidean projection of every row of ``weight [m, n]`` onto the ℓ₁ ball of ``radius``.

    The result has ``‖W‖_∞ ≤ radius``; rows already inside are returned unchanged.
    Sort-based algorithm of Duchi et al. (ICML 2008), differentiable almost everywhere.
    """
    magnitude = weight.abs()
    ordered = magnitude.sort(dim=1, descending=True).values
    excess = ordered.cumsum(dim=1) - radius
    counts = torch.arange(1, weight.shape[1] + 1, dtype=weight.dtype, device=weight.device)
    # The entries kept are a prefix of `ordered`: those larger than the threshold they imply.
    kept = (ordered * counts > excess).sum(dim=1, keepdim=True)
    threshold = (excess.gather(1, kept - 1) / kept).clamp(min=0.0)
    return weight.sign() * (magnitude - threshold).clamp(min=0.0)


@dataclass(frozen=True)
class _PicardPerGraph:
    """Picard ``h ← T(h)`` from ``h = 0`` until, for every graph ``g``,
    ``‖T(h) − h‖_g ≤ tol · max(‖T(0)‖_g, ‖T(h)‖_g)``, with norms over the nodes and
    channels of ``g``: ``"max"`` or ``"sum"`` (1-norm).
    """

    tol: float
    max_iter: int
    batch: Tensor  # [N] graph id of every node
    num_graphs: int

    def __call__(self, step: Map, zero: Tensor, norm: str) -> tuple[Tensor, int]:
        """Return ``(T(h), map evaluations)``, warning when ``max_iter`` comes first."""
        h, initial = zero, None
        for evaluations in range(1, self.max_iter + 1):
            mapped = step(h)
            size, residual = self._norm(mapped, norm), self._norm(mapped - h, norm)
            initial = size if initial is None else initial
            h = mapped
            if bool((residual <= self.tol * torch.maximum(initial, size)).all()):
                return h, evaluations
        worst = (residual / torch.maximum(initial, size).clamp(min=torch.finfo(size.dtype).tiny)).max().item()
        warnings.warn(
            f"IGNN fixed-point iteration did not reach tol={self.tol:g} within max_iter={self.max_iter} "
            f"(largest relative residual {worst:.3g}). Increase `max_iter` or loosen `tol`.",
            RuntimeWarning, stacklevel=4,
        )
        return h, self.max_iter

    def _norm(self, v: Tensor, norm: str) -> Tensor:
        """``[N, m] -> [G]``."""
        per_node = v.abs().amax(dim=1) if norm == "max" else v.abs().sum(dim=1)
        return scatter(per_node, self.batch, 0, self.num_graphs, reduce=norm)


class _ImplicitGradient(torch.autograd.Function):
    """Identity on ``T(h*)`` forward; backward swaps ``ḡ`` for ``u = Jᵀ u + ḡ``, ``J = ∂T/∂h`` at ``h*``."""

    @staticmethod
    def forward(ctx: Any, mapped: Tensor, fixed_point: Tensor, step: Map, picard: _PicardPerGraph) -> Tensor:
        ctx.step, ctx.picard = step, picard
        ctx.save_for_backward(fixed_point)
        return mapped.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (fixed_point,) = ctx.saved_tensors
        with torch.enable_grad():
            point = fixed_point.detach().requires_grad_(True)
            mapped = ctx.step(point)

        def adjoint_step(u: Tensor) -> Tensor:
            (vjp,) = torch.autograd.grad(mapped, point, u, retain_graph=True)
            return vjp + grad

        u, _ = ctx.picard(adjoint_step, torch.zeros_like(grad), "sum")
        return u, None, None, None
