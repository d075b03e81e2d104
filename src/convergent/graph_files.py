"""Read users' graphs from files: a ``torch.save`` of a list of PyG ``Data`` objects, loaded as data only."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch_geometric.data import Data
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import GlobalStorage

#: The PyG classes a saved ``Data`` list refers to; nothing else is unpickled.
_SAFE = [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]


def load_data_list(path: Path, *, required: tuple[str, ...] = ("x", "edge_index")) -> list[Data]:
    """Load ``torch.save([Data, ...], path)`` with ``weights_only=True`` and check every graph
    has the attributes in ``required``.

    Raises:
        ValueError: missing or unreadable file, not a list of ``Data``, or a graph without a
            required attribute (the message names the graph and the attribute).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"graph file {path} does not exist")
    try:
        with torch.serialization.safe_globals(_SAFE):
            graphs = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError) as error:
        raise ValueError(f"{path} is not a readable torch.save file of PyG Data objects: "
                         f"{str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}") from None
    if isinstance(graphs, Data):
        graphs = [graphs]
    if not isinstance(graphs, (list, tuple)) or not all(isinstance(g, Data) for g in graphs):
        raise ValueError(f"{path} must hold a list of torch_geometric.data.Data objects (got {type(graphs).__name__})")
    if not graphs:
        raise ValueError(f"{path} holds no graphs")
    for number, graph in enumerate(graphs):
        for attribute in required:
            if getattr(graph, attribute, None) is None:
                raise ValueError(f"graph {number} in {path} has no `{attribute}` (needed: {', '.join(required)})")
        if graph.num_nodes == 0:
            raise ValueError(f"graph {number} in {path} is empty (no nodes)")
    return list(graphs)
