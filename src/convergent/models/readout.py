"""Graph readouts: node embeddings ``[N, C]`` and ``batch`` ``[N]`` → graph embeddings ``[G, C]``."""

from torch_geometric.nn import global_add_pool, global_mean_pool

READOUTS = {"sum": global_add_pool, "mean": global_mean_pool}
