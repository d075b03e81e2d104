"""CGS models and their building blocks."""

from convergent.models.cgs import CGS, FixedPointEmbedding, GraphCGS
from convergent.models.encoder import AttentionEncoder, AttentionLayer

__all__ = ["AttentionEncoder", "AttentionLayer", "CGS", "FixedPointEmbedding", "GraphCGS"]
