"""Evaluate a trained model on a list of graphs: task metrics and timings beside the classical solver."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch_geometric.data import Batch, Data

from convergent.prediction import run_batches


def evaluate(model: nn.Module, task: Any, graphs: list[Data], device: torch.device | str = "cpu") -> dict[str, Any]:
    """Metrics of ``model`` (on ``device``) on ``graphs`` (all nodes pooled), and its inference
    time against the classical solver's on the same batches.

    Returns:
        ``task.metrics`` plus ``inference_seconds``, ``classical_seconds``, ``nodes``,
        ``graphs``, ``sizes`` (nodes per graph), ``prediction`` / ``target`` (``[N, out]`` tensors, for plots) and
        ``certificates`` (one per graph, see :mod:`convergent.prediction`).
    """
    if not graphs:
        raise ValueError("no graphs to evaluate")
    predictions, found, inference, classical = [], [], 0.0, 0.0
    for run in run_batches(model, graphs, device):
        predictions.append(run.output)
        found += run.certificates
        inference += run.seconds
        classical += task.classical_seconds(run.batch)
    everything = Batch.from_data_list(graphs)
    prediction = torch.cat(predictions)
    return {**task.metrics(prediction, everything), "inference_seconds": inference, "classical_seconds": classical,
            "nodes": everything.num_nodes, "graphs": len(graphs), "sizes": [g.num_nodes for g in graphs], "prediction": prediction, "target": everything.y,
            "certificates": found}
