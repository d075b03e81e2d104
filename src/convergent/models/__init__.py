"""CGS models, their building blocks, and the baselines they are compared with."""

from convergent.models.cgs import CGS, FixedPointEmbedding, GraphCGS
from convergent.models.encoder import AttentionEncoder, AttentionLayer
from convergent.models.gin import GIN
from convergent.models.ignn import IGNN, GraphIGNN
from convergent.models.mpnn import MPNN
from convergent.models.sse import SSE

__all__ = ["AttentionEncoder", "AttentionLayer", "CGS", "FixedPointEmbedding", "GIN", "GraphCGS", "GraphIGNN", "IGNN",
           "MPNN", "SSE"]
