"""Convergent Graph Solvers (Park, Choo & Park, ICLR 2022) on PyTorch Geometric."""

from convergent.contraction import contraction_norms, degree_normalize, gated_softmax
from convergent.implicit import solve
from convergent.models import CGS, GraphCGS
from convergent.solvers import Anderson, ConvergenceError, Direct, Picard, SolveInfo
from convergent.sparse_map import SparseMaps

__version__ = "0.1.0"

__all__ = [
    "Anderson",
    "CGS",
    "ConvergenceError",
    "Direct",
    "GraphCGS",
    "Picard",
    "SolveInfo",
    "SparseMaps",
    "contraction_norms",
    "degree_normalize",
    "gated_softmax",
    "solve",
]
