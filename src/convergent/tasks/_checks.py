"""The check every simulator task runs on a user's graph before evaluating it."""

from __future__ import annotations

from typing import Any

from torch_geometric.data import Data


def check_fields(graph: Data, task: Any, needed: tuple[str, ...]) -> None:
    """Refuse ``graph`` unless it has the fields in ``needed`` (what ``task``'s metrics and
    classical solver use) and ``task``'s node-feature, edge-feature and target widths.

    Raises:
        ValueError: naming the missing fields, or the widths expected and found.
    """
    missing = [name for name in needed if getattr(graph, name, None) is None]
    if missing:
        raise ValueError(f"a {task.name} graph needs {', '.join(missing)} besides x, edge_index, edge_attr and y "
                         f"(see convergent.systems.{task.name})")
    expected = (task.in_channels, task.edge_channels, task.out_channels)
    found = tuple(None if value is None else value.reshape(value.shape[0], -1).shape[1]
                  for value in (graph.x, graph.edge_attr, graph.y))
    if found != expected:
        raise ValueError(f"a {task.name} graph has {expected[0]} node features, {expected[1]} edge features and "
                         f"{expected[2]} targets (got {found[0]}, {found[1]} and {found[2]})")
