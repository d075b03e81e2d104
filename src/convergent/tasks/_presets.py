"""Preset pieces that several tasks share: the CGS paper's porous-network configuration.

The tasks the paper did not run (PageRank, power flow, heat) take this configuration as their
``paper`` preset, and heat and power flow build their softmax presets on its model.
"""

#: The paper's porous-network model: 16 heads, γ = 0.5, 3 encoder layers of width 64.
PAPER_MODEL = {"num_heads": 16, "gamma": 0.5, "num_layers": 3, "hidden_channels": 64}

#: Its budget: 1000 updates of 32 graphs, fresh graphs every 32 updates, Adam 1e-3, one cosine cycle.
PAPER_RUN = {"model_options": PAPER_MODEL, "updates": 1000, "batch_size": 32, "pool_size": 32,
             "refresh_every": 32, "learning_rate": 1e-3, "restart_period": 1000, "eval_every": 250}

#: :data:`PAPER_MODEL` with row-stochastic maps (a softmax over each node's in-edges, the shape
#: of a weighted average of neighbours) and γ = 0.9, so boundary values travel further.
SOFTMAX_MODEL = {**PAPER_MODEL, "normalization": "softmax", "gamma": 0.9}
