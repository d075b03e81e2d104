"""Graph systems with their classical ground-truth solvers."""

from convergent.systems.linear import linear_graph_systems

__all__ = ["linear_graph_systems"]
