"""Pore-network Stokes flow as a learning task: predict pore pressures (OpenPNM ground truth).

The system, its units and scaling are in :mod:`convergent.systems.porenet`. Metrics, over
all pores of a set (pressures in bar):

* ``mse``: mean squared pressure error (bar²);
* ``relative_error`` = Σ |p̂ − p| / Σ |p| (pooled over pores: a per-pore ratio would divide
  by the zero pressure of the outlet pores);
* ``flow_error``: mean over networks of |Q̂ − Q| / |Q|, with ``Q`` OpenPNM's flow into the
  outlet pores and ``Q̂`` the same flow computed from the predicted pressures;
* ``uniform_relative_error``: ``relative_error`` of a uniform medium between the inlet and
  outlet pores (:func:`~convergent.systems.porenet.uniform_medium`), the floor any model has to beat.

Every model learns a correction to that uniform medium in units of the mean pore spacing
(:meth:`PorenetTask.prior`; ``--set prior=false`` predicts the pressure directly). Pressure
deviates from the uniform medium by about the drop across a pore or two, and that drop
shrinks as ``n^(-1/3)`` with the number of pores ``n``: in these units the correction has the
same size on small and large networks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from convergent.models.prior import Lift
from convergent.systems import porenet
from convergent.tasks._checks import check_fields
from convergent.tasks._presets import PAPER_MODEL, PAPER_RUN
from convergent.tasks.test_sets import TestSet


TEST_SETS = {
    "a": TestSet("100 networks, 50–199 pores (training distribution)", 100, (50, 200), 2001),
    "b": TestSet("50 networks, 200–499 pores", 50, (200, 500), 2002),
    "c": TestSet("4 networks, about 5 000 pores", 4, (5000, 5001), 2003),
    "d": TestSet("2 networks, about 50 000 pores", 2, (50_000, 50_001), 2004),
}

#: Presets: overrides of :class:`~convergent.training.config.TrainConfig`.
PRESETS = {
    # Finishes within 5 minutes on 2 CPU cores.
    "default": {"model_options": PAPER_MODEL, "updates": 500, "batch_size": 32, "pool_size": 256,
                "refresh_every": 250, "restart_period": 500, "eval_every": 250},
    # The paper's configuration: fresh networks every 32 updates.
    "paper": PAPER_RUN,
    # The best measured (README) is the paper's: softmax maps with γ = 0.9 (SOFTMAX_MODEL) fit
    # the training sizes better but generalised to 5 000 and 50 000 pores well for one seed and
    # badly for another, while γ = 0.5 keeps the learned correction local and did well for both.
    "best": PAPER_RUN,
}


class PorenetTask:
    """Node regression of pore pressure (6 node features, 4 edge features; see the system module)."""

    name = "porenet"
    in_channels = 6
    edge_channels = 4
    out_channels = 1
    presets = PRESETS
    test_sets = TEST_SETS
    primary_metric = "relative_error"
    columns = {"MSE (bar²)": "mse", "rel. error": "relative_error", "flow rel. error": "flow_error",
               "uniform medium rel. error": "uniform_relative_error"}

    #: With the prior, the model sees the boundary flags and the imposed pressure, not the
    #: coordinates: position enters through the uniform medium, and the correction is learned
    #: from the network around each pore, so it carries over to networks where a pore at a
    #: given x lies many more pores from the faces (README, "Flow through porous networks").
    prior_features = (3, 4, 5)

    #: Most training networks kept in memory for reuse (about 40 kB each).
    MEMORY = 20_000

    def __init__(self, cache_dir: Path | None = None):
        porenet.openpnm()  # fail early, with the install hint
        self.cache_dir = cache_dir
        self._made: dict[tuple[int, int], list[Data]] = {}

    def graphs(self, count: int, seed: int) -> list[Data]:
        """``count`` training-distribution networks (50–199 pores) for ``seed``.

        Kept in memory, so that the methods of a benchmark, which train on the same seeds,
        simulate every network once.
        """
        if (count, seed) not in self._made:
            if sum(map(len, self._made.values())) + count > self.MEMORY:
                self._made.clear()
            self._made[count, seed] = porenet.porenet_graphs(count, pores=(50, 200), seed=seed)
        return self._made[count, seed]

    def test_graphs(self, name: str, progress: bool = False) -> list[Data]:
        """The fixed test set ``name`` (``"a"`` … ``"d"``), cached when a cache folder is set;
        a progress bar of its generation if ``progress``."""
        spec = TEST_SETS[name]
        cache = None if self.cache_dir is None else Path(self.cache_dir) / f"porenet-test-{name}.pt"
        return porenet.porenet_graphs(spec.num_graphs, pores=spec.sizes, seed=spec.seed, cache=cache, progress=progress)

    @staticmethod
    def check_graph(graph: Data) -> None:
        """Refuse a graph without what the metrics and OpenPNM need, saying what is missing."""
        check_fields(graph, PorenetTask, ("pos", "conductance", "inlet", "outlet", "flow_rate"))

    @staticmethod
    def prior(x: Tensor, edge_index: Tensor, edge_attr: Tensor | None, batch: Tensor) -> tuple[Tensor, Lift]:
        """``(uniform-medium pressure [N, 1] in bar, lift)`` from ``x`` ``[N, 6]`` (the edges are not
        needed): the model's output is the deviation in units of the mean pore spacing / 1 mm."""
        pressure, spacing = porenet.uniform_medium(x, batch)
        return pressure[:, None], lambda output: spacing[:, None] * output

    @staticmethod
    def metrics(prediction: Tensor, batch: Batch) -> dict[str, float]:
        """MSE, pooled relative error and outlet-flow error of ``prediction`` ``[N, 1]`` (bar)."""
        predicted, true = prediction.detach().reshape(-1).double(), batch.y.reshape(-1).double()
        flow = porenet.outlet_flow(predicted, batch.edge_index, batch.conductance, batch.outlet, batch.batch,
                                   batch.num_graphs)
        uniform = porenet.uniform_medium(batch.x, batch.batch)[0].double()
        return {
            "mse": ((predicted - true) ** 2).mean().item(),
            "relative_error": ((predicted - true).abs().sum() / true.abs().sum()).item(),
            "flow_error": ((flow - batch.flow_rate).abs() / batch.flow_rate.abs()).mean().item(),
            "uniform_relative_error": ((uniform - true).abs().sum() / true.abs().sum()).item(),
        }

    @staticmethod
    def classical_seconds(batch: Batch) -> float:
        """Wall time of OpenPNM's ``StokesFlow`` on every network of the batch."""
        return sum(porenet.solve_seconds(graph) for graph in batch.to_data_list())
