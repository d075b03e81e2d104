"""TU Dortmund graph-classification datasets through PyG's ``TUDataset``, from a local folder.

Node features: the one-hot node labels where the dataset has them (MUTAG, PTC_MR), else the
one-hot node degree (IMDB-BINARY), as in the GIN paper. Edge labels are not used, so every
model sees the same inputs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch_geometric.datasets import TUDataset
from torch_geometric.transforms import OneHotDegree
from torch_geometric.utils import degree

from convergent.cache import cache_dir

#: The files every TU dataset has (``NAME_`` prefix); the others are optional.
REQUIRED = ("A", "graph_indicator", "graph_labels")


def default_root() -> Path:
    """``../shared/data/TU`` (from the working directory or the repository) when it exists,
    else ``$CONVERGENT_CACHE/TU`` (default ``~/.cache/convergent/TU``), where PyG downloads to."""
    repository = Path(__file__).resolve().parents[3]
    for candidate in (Path.cwd().parent / "shared" / "data" / "TU", repository.parent / "shared" / "data" / "TU"):
        if candidate.is_dir():
            return candidate
    return cache_dir() / "TU"


class _LocalTUDataset(TUDataset):
    """``TUDataset`` that reads ``root/NAME/raw`` but writes its processed file to the cache
    (one folder per root), leaving a shared data folder untouched."""

    @property
    def processed_dir(self) -> str:
        key = hashlib.sha1(str(Path(self.root).resolve()).encode()).hexdigest()[:12]
        return str(cache_dir() / "TU-processed" / key / self.name)


def load_tu(name: str, root: Path | None = None) -> tuple[list, int, int]:
    """The graphs of TU dataset ``name`` with node features, its feature size and class count.

    Reads ``root/NAME/raw/NAME_*.txt``; when ``root/NAME`` does not exist at all, PyG downloads
    the dataset there (needs a network).

    Returns:
        ``(graphs, num_features, num_classes)``: a list of PyG ``Data`` with ``x`` and ``y`` ``[1]``.

    Raises:
        ValueError: a dataset folder without one of the required files (named), or files PyG
            cannot read.
    """
    root = default_root() if root is None else Path(root)
    raw = root / name / "raw"
    if (root / name).exists():
        for part in REQUIRED:
            if not (raw / f"{name}_{part}.txt").is_file():
                raise ValueError(f"TU dataset {name!r} is incomplete: {raw / f'{name}_{part}.txt'} is missing")
    try:
        dataset = _LocalTUDataset(str(root), name)
    except Exception as error:  # PyG raises whatever its parser or downloader hits
        if not (root / name).exists():
            raise ValueError(f"TU dataset {name!r} is not in {root} and could not be downloaded "
                             f"({type(error).__name__}: {error}); put its files in {raw}") from None
        raise ValueError(f"could not read TU dataset {name!r} from {raw}: {type(error).__name__}: {error}") from None
    graphs = [dataset[i] for i in range(len(dataset))]
    if dataset.num_node_labels == 0:
        largest = max(int(degree(g.edge_index[0], g.num_nodes).max()) if g.num_edges else 0 for g in graphs)
        one_hot = OneHotDegree(largest)
        graphs = [one_hot(g) for g in graphs]
    else:
        for graph in graphs:
            graph.x = graph.x[:, :dataset.num_node_labels]
    for graph in graphs:
        graph.edge_attr = None
    num_classes = int(torch.cat([g.y for g in graphs]).max()) + 1
    return graphs, graphs[0].x.shape[1], num_classes
