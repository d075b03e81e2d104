"""The input check every node-level model runs first: ``x``, ``edge_index`` and ``edge_attr``."""

from __future__ import annotations

from torch import Tensor

from convergent import _validation as check


def check_graph_inputs(x: Tensor, edge_index: Tensor, edge_attr: Tensor | None, in_channels: int,
                       edge_channels: int) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(x, edge_index, edge_attr)`` checked, or raise ``ValueError`` saying what is wrong.

    Shapes:
        x ``[N, in_channels]`` floating and finite; edge_index ``[2, E]`` (row 0
        source, row 1 target), returned as int64; edge_attr ``[E, edge_channels]``
        (``[E]`` when ``edge_channels == 1``, ``None`` when it is 0), returned as
        ``[E, edge_channels]`` in the dtype of ``x`` (``[E, 0]`` for ``None``).
    """
    x = check.check_tensor("x", x)
    if x.dim() != 2 or x.shape[1] != in_channels:
        raise ValueError(f"`x` must have shape [N, {in_channels}] (got {list(x.shape)})")
    check.check_floating("x", x)
    check.check_finite("x", x)
    edge_index = check.check_edge_index(edge_index, x.shape[0])
    num_edges = edge_index.shape[1]
    if edge_attr is None:
        if edge_channels:
            raise ValueError(f"`edge_attr` of shape [E, {edge_channels}] is required by this model")
        return x, edge_index, x.new_zeros(num_edges, 0)
    edge_attr = check.check_tensor("edge_attr", edge_attr)
    if edge_attr.dim() == 1:
        edge_attr = edge_attr.unsqueeze(-1)
    if edge_attr.shape != (num_edges, edge_channels):
        raise ValueError(
            f"`edge_attr` must have shape [E, edge_channels] = [{num_edges}, {edge_channels}] "
            f"(got {list(edge_attr.shape)})"
        )
    check.check_finite("edge_attr", edge_attr)
    return x, edge_index, edge_attr.to(x.dtype)
