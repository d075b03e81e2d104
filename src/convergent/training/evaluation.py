"""Evaluate a trained model on a list of graphs: task metrics and timings beside the classical solver."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch_geometric.data import Batch, Data

#: Graphs are batched up to about this many nodes for inference.
NODES_PER_BATCH = 50_000


def batches(graphs: list[Data], nodes_per_batch: int = NODES_PER_BATCH) -> list[Batch]:
    """Consecutive groups of ``graphs`` with at most ``nodes_per_batch`` nodes (at least one graph) each."""
    groups, current, size = [], [], 0
    for graph in graphs:
        if current and size + graph.num_nodes > nodes_per_batch:
            groups.append(current)
            current, size = [], 0
        current.append(graph)
        size += graph.num_nodes
    if current:
        groups.append(current)
    return [Batch.from_data_list(group) for group in groups]


@torch.no_grad()
def evaluate(model: nn.Module, task: Any, graphs: list[Data]) -> dict[str, Any]:
    """Metrics of ``model`` on ``graphs`` (all nodes pooled), and its inference time against the
    classical solver's on the same batches.

    Returns:
        ``task.metrics`` plus ``inference_seconds``, ``classical_seconds``, ``nodes``,
        ``graphs``, and ``prediction`` / ``target`` (``[N, out]`` tensors, for plots).
    """
    if not graphs:
        raise ValueError("no graphs to evaluate")
    model.eval()
    predictions, inference, classical = [], 0.0, 0.0
    grouped = batches(graphs)
    for batch in grouped:
        start = time.perf_counter()
        predictions.append(model(batch.x, batch.edge_index, batch.edge_attr, batch.batch))
        inference += time.perf_counter() - start
        classical += task.classical_seconds(batch)
    model.train()
    everything = Batch.from_data_list(graphs)
    prediction = torch.cat(predictions)
    return {**task.metrics(prediction, everything), "inference_seconds": inference, "classical_seconds": classical,
            "nodes": everything.num_nodes, "graphs": len(graphs), "prediction": prediction, "target": everything.y}
