"""Run a trained model on graphs: outputs per graph and the certificate of each graph's solve.

A certificate is what the fixed-point solver proves about its answer for one graph, taken
over the model's heads (the last stage's solve for multi-stage models): the iterations it
ran (the most of any head), the final residual ``‖T(h) − h‖`` (the largest), the a-posteriori
error bound ``residual / (1 − γ)`` on the distance of ``h`` from the exact fixed point (the
largest), and whether every head met the stopping rule. Models without a fixed-point solve
(message passing, SSE, IGNN) have none.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from convergent.atomic import atomic_path
from convergent.solvers import SolveInfo

#: Graphs are batched up to about this many nodes for inference.
NODES_PER_BATCH = 50_000
CERTIFICATE_FIELDS = ("iterations", "residual", "error_bound", "converged")


@dataclass
class BatchOutput:
    """One batch's run: the CPU batch, the model output ``[N, out]`` (CPU), the wall time of the
    forward pass, and one certificate (or ``None``) per graph of the batch."""

    batch: Batch
    output: Tensor
    seconds: float
    certificates: list[dict[str, Any] | None]


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


def check_inputs(graphs: list[Data], in_channels: int, edge_channels: int, source: Path | str) -> None:
    """Refuse, before anything runs, a graph the model cannot take: no nodes, a feature size
    other than the model's, or features that are not finite. Messages name the graph."""
    for number, graph in enumerate(graphs):
        where = f"graph {getattr(graph, 'name', None) or number} in {source}"
        if graph.num_nodes == 0:
            raise ValueError(f"{where} is empty (no nodes)")
        if graph.x is None or graph.x.dim() != 2 or graph.x.shape[1] != in_channels:
            got = "none" if graph.x is None else graph.x.shape[-1] if graph.x.dim() == 2 else list(graph.x.shape)
            raise ValueError(f"{where} has {got} node features; the checkpoint's model takes {in_channels}")
        edges = 0 if graph.edge_attr is None else graph.edge_attr.reshape(graph.edge_index.shape[1], -1).shape[1]
        if edges != edge_channels:
            raise ValueError(f"{where} has {edges} edge features; the checkpoint's model takes {edge_channels}")
        for name in ("x", "edge_attr"):
            value = getattr(graph, name)
            if value is not None and not torch.isfinite(value).all():
                raise ValueError(f"{where} has NaN or infinite values in `{name}`")


def certificates(info: SolveInfo | None, num_graphs: int) -> list[dict[str, Any] | None]:
    """Per graph, the certificate of a batched solve whose report is ``info`` (fields ``[G, M]``)."""
    if info is None:
        return [None] * num_graphs
    return [{"iterations": int(info.iterations[g].max()), "residual": float(info.residual[g].max()),
             "error_bound": float(info.error_bound[g].max()), "converged": bool(info.converged[g].all())}
            for g in range(num_graphs)]


@torch.no_grad()
def run_batches(model: nn.Module, graphs: list[Data], device: torch.device | str = "cpu") -> Iterator[BatchOutput]:
    """Run ``model`` (already on ``device``, put in eval mode here and back after) over ``graphs``
    in batches of about :data:`NODES_PER_BATCH` nodes."""
    was_training = model.training
    model.eval()
    try:
        for batch in batches(graphs):
            moved = batch.to(device)
            start = time.perf_counter()
            output = model(moved.x, moved.edge_index, moved.edge_attr, moved.batch)
            if output.is_cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            yield BatchOutput(batch, output.cpu(), seconds,
                              certificates(getattr(model, "last_solve", None), batch.num_graphs))
    finally:
        model.train(was_training)


def split_per_graph(output: Tensor, batch: Batch) -> list[Tensor]:
    """``output`` ``[N, out]`` (node level) or ``[G, out]`` (graph level) split into one tensor per graph."""
    if output.shape[0] == batch.num_graphs and output.shape[0] != batch.num_nodes:
        return list(output.split(1))
    return list(output.split(torch.diff(batch.ptr).tolist()))


def write_predictions(path: Path, names: list[str], node_ids: list[list[str]], values: list[Tensor]) -> None:
    """CSV ``graph,node,prediction`` (``prediction_0, …`` for several outputs), one row per node
    (``node`` empty for a graph-level output); written atomically."""
    width = values[0].shape[1] if values else 1
    header = ["graph", "node"] + (["prediction"] if width == 1 else [f"prediction_{k}" for k in range(width)])
    with atomic_path(path) as partial, open(partial, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        for name, ids, value in zip(names, node_ids, values):
            labels = ids if value.shape[0] == len(ids) else [""]
            for label, row in zip(labels, value.tolist()):
                writer.writerow([name, label, *(f"{v:.9g}" for v in row)])


def write_certificates(path: Path, names: list[str], sizes: list[int],
                       found: list[dict[str, Any] | None]) -> None:
    """CSV ``graph,nodes,iterations,residual,error_bound,converged`` (empty where a model has no
    solve); written atomically."""
    with atomic_path(path) as partial, open(partial, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["graph", "nodes", *CERTIFICATE_FIELDS])
        for name, size, certificate in zip(names, sizes, found):
            cells = [""] * len(CERTIFICATE_FIELDS) if certificate is None else [
                certificate["iterations"], f"{certificate['residual']:.3e}", f"{certificate['error_bound']:.3e}",
                int(certificate["converged"])]
            writer.writerow([name, size, *cells])
