"""AC power flow as a learning task: predict bus voltage magnitudes and angles (pandapower ground truth).

The system, its samples, units and scaling are in :mod:`convergent.systems.powerflow`. Models
train on random loadings of :data:`TRAINING_GRIDS` and are tested on held-out loadings of the
same grids and on grids they never saw. Metrics, over all buses of a set (the slack included):

* ``vm_mae``: mean |v̂m − vm| in p.u.; ``va_mae``: mean |v̂a − va| in degrees (angles relative
  to the slack's);
* ``dc_vm_mae``, ``dc_va_mae``: the same for pandapower's DC power flow on the same samples
  (``vm = 1`` everywhere), the linear approximation a model has to beat;
* ``va_relative_error`` = Σ |v̂a − va| / Σ |va| (pooled over buses), and ``dc_va_relative_error``.

Models learn a correction to the DC power flow (:meth:`PowerFlowTask.prior`, rebuilt from the
features by :class:`~convergent.systems.powerflow.DCPowerFlow`): the model's angle output is a
correction to each bus's active injection, in units of the power flowing through the bus, and
the DC system carries it to the angles; the magnitude is the model's output. ``--set
prior=false`` predicts both directly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from convergent.models.prior import Lift
from convergent.systems import powerflow
from convergent.tasks._checks import check_fields
from convergent.tasks._presets import PAPER_RUN, SOFTMAX_MODEL

#: A unit angle output adds this fraction of the DC power flowing through the bus (Σ |flow| over
#: its branches), plus :data:`INJECTION_FLOOR` per unit, to the bus's injection. What DC leaves out
#: (losses, |V| ≠ 1, sin θ ≠ θ) grows with the flows; a correction of fixed size would carry what
#: was learned on heavily loaded large grids to lightly loaded small ones (docs/powerflow.md).
INJECTION_FRACTION = 0.1
INJECTION_FLOOR = 0.01

#: Grids of the training distribution; sample ``i`` of a pool is of grid ``i mod 3``.
TRAINING_GRIDS = ("case118", "case300", "case1354pegase")


@dataclass(frozen=True)
class GridSet:
    """``num_graphs`` samples of ``grids`` (cycled), seeded by ``seed``."""

    description: str
    grids: tuple[str, ...]
    num_graphs: int
    seed: int


TEST_SETS = {
    "a": GridSet("30 held-out loadings of the training grids (case118, case300, case1354pegase)",
                 TRAINING_GRIDS, 30, 3001),
    "b": GridSet("10 loadings of case2869pegase (unseen grid)", ("case2869pegase",), 10, 3002),
    "c": GridSet("30 loadings of small unseen grids (case14, case30, case57)", ("case14", "case30", "case57"),
                 30, 3003),
}

# SOFTMAX_MODEL: a softmax over each bus's branches gives row-stochastic maps, the shape of a weighted average of
# neighbouring voltages (a Gauss–Seidel sweep of the linearised power-flow equations); γ = 0.9
# carries the slack's reference and the injections further across the grid.

#: Presets: overrides of :class:`~convergent.training.config.TrainConfig`. Samples of the three
#: training grids have 590 buses on average, so batches are small.
PRESETS = {
    # 3 min 47 s wall on 2 CPU cores busy with other jobs, the power flows included (docs/powerflow.md).
    "default": {"model_options": {**SOFTMAX_MODEL, "num_layers": 2, "hidden_channels": 32}, "updates": 300,
                "batch_size": 4, "pool_size": 96, "refresh_every": 300, "restart_period": 300, "eval_every": 150,
                "validation_graphs": 30},
    # The paper's model and optimizer, fresh samples every 64 updates: best on set a, worse on b (docs/powerflow.md).
    "paper": {**PAPER_RUN, "batch_size": 16, "pool_size": 64, "refresh_every": 64, "validation_graphs": 30},
}
# No configuration has measured better than the default yet (docs/powerflow.md).
PRESETS["best"] = PRESETS["default"]


@functools.lru_cache(maxsize=2)
def _training_samples(count: int, seed: int) -> list[Data]:
    """``count`` samples of :data:`TRAINING_GRIDS` for ``seed``.

    The last two sets asked for (a run's validation set and its pool) are kept, so that the
    methods of a benchmark, which train on the same seeds, solve every sample of a run with
    one pool (the default preset) once.
    """
    return powerflow.power_flow_graphs(TRAINING_GRIDS, count, seed=seed)


class PowerFlowTask:
    """Node regression of bus voltages (9 node features, 7 edge features, 2 targets; see the system module)."""

    name = "powerflow"
    in_channels = 9
    edge_channels = 7
    out_channels = 2
    presets = PRESETS
    test_sets = TEST_SETS
    primary_metric = "va_mae"
    columns = {"V MAE (p.u.)": "vm_mae", "θ MAE (°)": "va_mae", "DC V MAE (p.u.)": "dc_vm_mae",
               "DC θ MAE (°)": "dc_va_mae"}

    def __init__(self, cache_dir: Path | None = None):
        powerflow.pandapower()  # fail early, with the install hint
        self.cache_dir = cache_dir

    @staticmethod
    def graphs(count: int, seed: int) -> list[Data]:
        """``count`` samples of the training grids for ``seed`` (see :func:`_training_samples`)."""
        return _training_samples(count, seed)

    def test_graphs(self, name: str, progress: bool = False) -> list[Data]:
        """The fixed test set ``name`` (``"a"``, ``"b"`` or ``"c"``), cached when a cache folder is set;
        a progress bar of its generation if ``progress``."""
        spec = TEST_SETS[name]
        cache = None if self.cache_dir is None else Path(self.cache_dir) / f"powerflow-test-{name}.pt"
        return powerflow.power_flow_graphs(spec.grids, spec.num_graphs, seed=spec.seed, cache=cache, progress=progress)

    @staticmethod
    def check_graph(graph: Data) -> None:
        """Refuse a graph without what the metrics and the classical solver need, saying what is missing."""
        check_fields(graph, PowerFlowTask, ("dc_y", "grid", "load_scale", "gen_scale", "sgen_scale"))

    @staticmethod
    def prior(x: Tensor, edge_index: Tensor, edge_attr: Tensor | None, batch: Tensor) -> tuple[Tensor, Lift]:
        """``(base [N, 2], lift)``: magnitude 0 (1 p.u.) and the DC power flow's angle.

        The model's outputs are the magnitude and a correction to each bus's active injection in
        units of :data:`INJECTION_FRACTION` of the DC power flowing through the bus plus
        :data:`INJECTION_FLOOR`; ``lift`` carries that correction through the same DC system to the
        angles."""
        if edge_attr is None:
            raise ValueError("the DC power-flow prior needs the branch features `edge_attr` [E, 7]")
        dc = powerflow.DCPowerFlow(x, edge_index, edge_attr, batch)
        angle, scale = dc.angles(), INJECTION_FRACTION * dc.throughput() + INJECTION_FLOOR

        def lift(output: Tensor) -> Tensor:
            return torch.stack([output[:, 0], dc.response(scale * output[:, 1])], 1)

        return torch.stack([torch.zeros_like(angle), angle], 1), lift

    @staticmethod
    def metrics(prediction: Tensor, batch: Batch) -> dict[str, float]:
        """Voltage magnitude and angle errors of ``prediction`` ``[N, 2]`` and of the DC power flow."""
        true = batch.y.double()
        found = {}
        for prefix, guess in (("", prediction.detach().double()), ("dc_", batch.dc_y.double())):
            error = (guess - true).abs()
            found[f"{prefix}vm_mae"] = powerflow.VM_SCALE * error[:, 0].mean().item()
            found[f"{prefix}va_mae"] = math.degrees(error[:, 1].mean().item())
            found[f"{prefix}va_relative_error"] = (error[:, 1].sum() / true[:, 1].abs().sum()).item()
        return found

    @staticmethod
    def classical_seconds(batch: Batch) -> float:
        """Wall time of pandapower's ``runpp`` on every sample of the batch (rebuilt, then solved)."""
        return sum(powerflow.solve_seconds(graph) for graph in batch.to_data_list())
