"""Section 6 of ``speed.py``: one training update of the graph value iteration configuration,
sparse CGS (each solver) against the same model with the reference dense ``[heads, N, N]`` solve.

    python benchmarks/_gvi_update.py --graphs 64 --repeats 5   # prints the seconds as JSON

``speed.py`` runs it in its own process and again as a script under PyTorch's default
allocator: ``THP_MEM_ALLOC_ENABLE`` is read once, when torch starts, so a second setting
needs a second process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch_geometric.data import Batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dense_reference import dense_solve  # noqa: E402

import convergent  # noqa: E402
from convergent.systems.gvi import gvi_graphs  # noqa: E402

#: The paper's GVI model: 64 heads, γ = 0.5, 3 encoder layers of width 64.
GVI = dict(edge_channels=1, hidden_channels=64, num_heads=64, gamma=0.5, num_layers=3)
SOLVERS = ("auto", "picard", "anderson")


def median_time(call, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def mdp_batch(num_graphs: int, seed: int = 2) -> dict[str, torch.Tensor]:
    """``num_graphs`` MDPs of the GVI task (20–49 states, 5–9 actions each; ``gvi_graphs``) as one batch."""
    batch = Batch.from_data_list(gvi_graphs(num_graphs, seed=seed))
    return {key: batch[key] for key in ("x", "edge_index", "edge_attr", "batch", "y")}


def update_time(data: dict[str, torch.Tensor], repeats: int, solver: str = "auto", dense: bool = False) -> float:
    """Median seconds of one Adam update (MSE loss) of ``CGS(**GVI)`` on ``data``."""
    torch.manual_seed(0)
    model = convergent.CGS(1, 1, solver=solver, **GVI)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    original = convergent.models.cgs.solve
    if dense:
        convergent.models.cgs.solve = dense_solve

    def update():
        prediction = model(data["x"], data["edge_index"], data["edge_attr"], data["batch"])
        loss = torch.nn.functional.mse_loss(prediction, data["y"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    try:
        return median_time(update, repeats)
    finally:
        convergent.models.cgs.solve = original


def measure(num_graphs: int, repeats: int) -> dict[str, float]:
    """Seconds per update: every solver of convergent, then ``"dense"`` (half the repeats)."""
    data = mdp_batch(num_graphs)
    times = {solver: update_time(data, repeats, solver=solver) for solver in SOLVERS}
    times["dense"] = update_time(data, max(1, repeats // 2), dense=True)
    return times


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    print(json.dumps(measure(options.graphs, options.repeats)))
