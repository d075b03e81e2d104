"""Steady heat conduction as a learning task: predict vertex temperatures (scikit-fem ground truth).

The system, its units and scaling are in :mod:`convergent.systems.heat`. With ``T̄_g`` the
mean of the boundary temperatures of a vertex's mesh, metrics over a set (temperatures in K):

* ``mse``: mean squared temperature error over all vertices (K², the training loss);
* ``relative_error`` = Σ |T̂ − T| / Σ |T − T̄_g|, pooled over the interior vertices (the
  boundary ones are given as input): the constant guess ``T̂ = T̄_g`` scores 1;
* ``interpolation_relative_error``: ``relative_error`` of the input feature that interpolates
  the boundary temperatures inside (mean value coordinates), a guess that knows neither
  conductivity nor source — the floor a model must beat to show it used them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter

from convergent.systems import heat
from convergent.tasks._checks import check_fields
from convergent.tasks._presets import PAPER_RUN, SOFTMAX_MODEL
from convergent.tasks.test_sets import TestSet

TEST_SETS = {
    "a": TestSet("100 meshes, 100–399 vertices (training distribution)", 100, (100, 400), 3001),
    "b": TestSet("50 meshes, 400–1 599 vertices (about 4× finer)", 50, (400, 1600), 3002),
    "c": TestSet("6 meshes, 5 000–19 999 vertices (about 16–50× finer)", 6, (5000, 20_000), 3003),
}
TRAINING_VERTICES = (100, 400)

# SOFTMAX_MODEL: row-stochastic maps have the shape of the Jacobi map of the heat equation (the
# weights −K_ts / K_tt into an interior vertex sum to 1). γ = 0.99 trained no better than 0.9
# (docs/heat.md), so the cheaper 0.9.

#: Presets: overrides of :class:`~convergent.training.config.TrainConfig`.
PRESETS = {
    # Finishes within 3 minutes on 2 CPU cores (1 min 57 s measured, the mesh generation included).
    "default": {"model_options": SOFTMAX_MODEL, "updates": 500, "batch_size": 32, "pool_size": 256,
                "refresh_every": 250, "restart_period": 500, "eval_every": 250},
    # The paper's configuration: fresh meshes every 32 updates.
    "paper": PAPER_RUN,
    # The default model with the paper's budget: better than the default on set a only (docs/heat.md).
    "best": {"model_options": SOFTMAX_MODEL, "updates": 1000, "batch_size": 32, "pool_size": 256,
             "refresh_every": 250, "restart_period": 1000, "eval_every": 250},
}


class HeatTask:
    """Node regression of temperature on triangle meshes (8 node features, 3 edge features; see the system module)."""

    name = "heat"
    in_channels = 8
    edge_channels = 3
    out_channels = 1
    presets = PRESETS
    test_sets = TEST_SETS
    primary_metric = "relative_error"
    columns = {"MSE (K²)": "mse", "rel. error": "relative_error",
               "interpolation rel. error": "interpolation_relative_error"}

    def __init__(self, cache_dir: Path | None = None):
        heat.skfem()  # fail early, with the install hint
        self.cache_dir = cache_dir

    def graphs(self, count: int, seed: int) -> list[Data]:
        """``count`` training-distribution meshes (100–399 vertices) for ``seed``."""
        return heat.heat_graphs(count, vertices=TRAINING_VERTICES, seed=seed)

    def test_graphs(self, name: str, progress: bool = False) -> list[Data]:
        """The fixed test set ``name`` (``"a"``, ``"b"`` or ``"c"``), cached when a cache folder is set;
        a progress bar of its generation if ``progress``."""
        spec = TEST_SETS[name]
        cache = None if self.cache_dir is None else Path(self.cache_dir) / f"heat-test-{name}.pt"
        return heat.heat_graphs(spec.num_graphs, vertices=spec.sizes, seed=spec.seed, cache=cache, progress=progress)

    @staticmethod
    def check_graph(graph: Data) -> None:
        """Refuse a graph without what the metrics and scikit-fem need, saying what is missing."""
        check_fields(graph, HeatTask, ("pos", "face", "conductivity", "source", "boundary", "boundary_temperature"))

    @staticmethod
    def metrics(prediction: Tensor, batch: Batch) -> dict[str, float]:
        """MSE, relative error and the boundary interpolation's relative error for ``prediction`` ``[N, 1]`` (K)."""
        predicted, true = prediction.detach().reshape(-1).double(), batch.y.reshape(-1).double()
        graph = torch.zeros_like(batch.boundary, dtype=torch.long) if batch.batch is None else batch.batch
        fixed = batch.boundary
        boundary_mean = scatter(batch.boundary_temperature[fixed], graph[fixed], dim_size=batch.num_graphs,
                                reduce="mean")
        spread = (true - boundary_mean[graph]).abs()[~fixed].sum()

        def relative(guess: Tensor) -> float:
            return ((guess - true).abs()[~fixed].sum() / spread).item()

        return {"mse": ((predicted - true) ** 2).mean().item(), "relative_error": relative(predicted),
                "interpolation_relative_error": relative(batch.x[:, heat.INTERPOLATION_FEATURE].double())}

    @staticmethod
    def classical_seconds(batch: Batch) -> float:
        """Wall time of scikit-fem (assembly, ``condense``, ``solve``) on every mesh of the batch."""
        return sum(heat.solve_seconds(graph) for graph in batch.to_data_list())
