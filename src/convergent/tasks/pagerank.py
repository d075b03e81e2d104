"""Personalised PageRank as a learning task: predict ``k·π`` from the seeds and the graph.

The system, its features and scaling are in :mod:`convergent.systems.pagerank`. Metrics, over
a set:

* ``relative_error`` = Σ |ŷ − y| / Σ |y| over all nodes (each graph's ``Σ y`` is its seed count);
* ``top10_precision``: per graph, the share of the 10 highest-ranked nodes (all nodes of a
  smaller graph) that the prediction also ranks in its top 10, averaged over graphs;
* ``teleport_relative_error``: ``relative_error`` of the guess ``y = (1 − α)·k·v`` (the
  teleport term alone, no walk), the floor a model has to beat.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from convergent.systems import pagerank
from convergent.tasks._presets import PAPER_RUN
from convergent.tasks.test_sets import TestSet

TEST_SETS = {
    "a": TestSet("200 graphs, 50–199 nodes (training distribution)", 200, (50, 200), 3001),
    "b": TestSet("50 graphs, 500–1999 nodes (10× larger)", 50, (500, 2000), 3002),
    "c": TestSet("the 4 graphs networkx ships, 5 personalisations each", 20, (15, 78), 3003),
    "d": TestSet("4 graphs, 20 000–49 999 nodes (100× larger and more)", 4, (20_000, 50_000), 3004),
}

# γ = α: the maps can be the walk itself. Degree normalisation (the paper's) divides by the
# out-degree, as the walk does. The seeds (feature 0, k·v) drive the system: with them as the
# source channel the bias is zero away from them, as the teleport term (1 − α)·v is, so the
# prediction decays to zero far from every seed instead of settling on a learned constant.
_MODEL = {"num_heads": 16, "gamma": pagerank.ALPHA, "num_layers": 2, "hidden_channels": 64, "source_channel": 0}

#: Presets: overrides of :class:`~convergent.training.config.TrainConfig`.
_DEFAULT = {"model_options": _MODEL, "updates": 600, "batch_size": 32, "pool_size": 256, "refresh_every": 200,
            "restart_period": 600, "eval_every": 200}
PRESETS = {
    # About 1.5–2 minutes on 2 CPU cores.
    "default": _DEFAULT,
    # The paper's porous-network configuration: γ = 0.5, fresh graphs every 32 updates.
    "paper": PAPER_RUN,
    # The best measured so far (README) is the default.
    "best": _DEFAULT,
}


class PageRankTask:
    """Node regression of personalised PageRank (2 node features, 1 edge feature)."""

    name = "pagerank"
    in_channels = 2
    edge_channels = 1
    out_channels = 1
    presets = PRESETS
    test_sets = TEST_SETS
    primary_metric = "relative_error"
    columns = {"rel. error": "relative_error", "top-10 precision": "top10_precision",
               "teleport-only rel. error": "teleport_relative_error"}

    def __init__(self, cache_dir: Path | None = None):
        self.cache_dir = cache_dir

    def graphs(self, count: int, seed: int) -> list[Data]:
        """``count`` training-distribution samples (50–199 nodes) for ``seed``."""
        return pagerank.pagerank_graphs(count, nodes=(50, 200), seed=seed)

    def test_graphs(self, name: str, progress: bool = False) -> list[Data]:
        """The fixed test set ``name`` (``"a"`` … ``"d"``), cached when a cache folder is set.

        Quick to make: ``progress`` (a bar where a task's sets take minutes) shows nothing here.
        """
        spec = TEST_SETS[name]
        if name == "c":
            return pagerank.shipped_graphs(personalizations=5, seed=spec.seed)
        cache = None if self.cache_dir is None else Path(self.cache_dir) / f"pagerank-test-{name}.pt"
        return pagerank.pagerank_graphs(spec.num_graphs, nodes=spec.sizes, seed=spec.seed, cache=cache)

    @staticmethod
    def check_graph(graph: Data) -> None:
        """Refuse a graph whose features are not this task's, saying what they must be."""
        if graph.x is None or graph.x.dim() != 2 or graph.x.shape[1] != 2:
            raise ValueError("a pagerank graph has x [N, 2]: k·v (seed count × personalisation) and "
                             "log(1 + out-degree) / 3")
        if graph.edge_attr is None or graph.edge_attr.numel() != graph.edge_index.shape[1]:
            raise ValueError("a pagerank graph has edge_attr [E, 1]: 1 / out-degree of the edge's source")
        if graph.y is None:
            raise ValueError("a pagerank graph needs y [N, 1] = k·π to be evaluated")

    @staticmethod
    def metrics(prediction: Tensor, batch: Batch) -> dict[str, float]:
        """Pooled relative error, top-10 precision and the teleport-only error of ``prediction`` ``[N, 1]``."""
        predicted, true = prediction.detach().reshape(-1).double(), batch.y.reshape(-1).double()
        teleport = (1 - pagerank.ALPHA) * batch.x[:, 0].double()
        precision = []
        for start, end in zip(batch.ptr[:-1].tolist(), batch.ptr[1:].tolist()):
            top = min(10, end - start)
            mine = set(predicted[start:end].topk(top).indices.tolist())
            precision.append(len(mine & set(true[start:end].topk(top).indices.tolist())) / top)
        return {
            "relative_error": ((predicted - true).abs().sum() / true.abs().sum()).item(),
            "top10_precision": sum(precision) / len(precision),
            "teleport_relative_error": ((teleport - true).abs().sum() / true.abs().sum()).item(),
        }

    @staticmethod
    def classical_seconds(batch: Batch) -> float:
        """Wall time of ``networkx.pagerank`` on every graph of the batch."""
        return sum(pagerank.solve_seconds(graph) for graph in batch.to_data_list())
