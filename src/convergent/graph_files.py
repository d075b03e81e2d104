"""Read users' graphs from files into PyG ``Data``: saved ``Data`` lists, edge lists, GraphML,
node-link JSON and CSV tables.

:func:`read_graphs` picks the reader by the file's extension:

- ``.pt``, ``.pth``: ``torch.save`` of a list of ``Data``, loaded as data only (no code runs);
  the graphs are kept as saved, given ``node_ids`` ``"0"``, ``"1"``, ... and a ``name`` where
  they have none.
- ``.edgelist``, ``.edges``, ``.txt``: ``nx.read_edgelist``, one edge ``u v`` a line separated
  by white space, followed by nothing, by a Python dict of edge attributes (what
  ``nx.write_edgelist(data=True)`` writes) or by numeric columns (``data=["weight", ...]``),
  named ``column 3``, ``column 4``, ... after their place in the line; the first edge line
  sets the form for all. ``#`` starts a comment. Its nodes are those its edges name.
- ``.graphml``: ``nx.read_graphml``.
- ``.json``: node-link JSON as ``nx.node_link_data`` writes it (edges under ``"edges"``, as
  networkx 3.4+ writes, or ``"links"``, as older releases do; ``directed`` and ``multigraph``
  default as in ``nx.node_link_graph``), or a JSON list of such objects, one a graph.
- ``.csv``: an edges table with columns ``source``, ``target``, optionally ``graph`` (several
  graphs in one file) and numeric edge-feature columns.

With edge lists and CSV edges, ``nodes`` names a nodes CSV: a ``node`` column, ``graph`` exactly
when the edges have one, numeric node-feature columns and an optional target ``y``. It fixes
the nodes (in its order, isolated ones included); every node an edge names must be in it.

Conventions, the same for every format:

- An edge ``u → v`` is column ``(u, v)`` of ``edge_index``: row 0 the source, row 1 the target.
  Edge lists and CSV tables are directed. An undirected GraphML or JSON graph gives both
  ``(u, v)`` and ``(v, u)``, each with the edge's features (a self-loop once). Parallel edges
  stay separate columns.
- Every node attribute but ``y`` is a node feature and every edge attribute (``weight``
  included) an edge feature: in column order for CSV and edge-list columns, in sorted name
  order for attributes read by networkx (edge-list dicts, GraphML, JSON). A feature value is
  anything ``float()`` takes (a bool, an int, a float or a numeric string) and must be finite;
  every node (edge) must have every node (edge) feature of its graph.
- ``x`` is float32 ``[N, F]``, a column of ones ``[N, 1]`` when the nodes have no features;
  ``edge_index`` int64 ``[2, E]``; ``edge_attr`` float32 ``[E, D]``, or ``None`` without edge
  features; ``y`` float32 ``[N, 1]`` when the nodes carry ``y``, else ``None``.
- All graphs of one file have the same features (an edgeless graph's edge features are unknown
  and not compared).
- Node order is the nodes CSV's order, else the order networkx reads the nodes in (first
  appearance in the file). ``graph.node_ids`` lists the user's node ids as strings in that
  order (ints as ``str(i)``);
  ``graph.name`` is the ``graph`` column's value, the file's stem for a file of one graph, or
  ``f"{stem}[{i}]"`` for graph ``i`` of several.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import pickle
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import networkx as nx
import torch
from torch_geometric.data import Data
from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
from torch_geometric.data.storage import GlobalStorage

from convergent._errors import reason

#: The PyG classes a saved ``Data`` list refers to; nothing else is unpickled.
_SAFE = [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]

#: What the parsers raise on a malformed file; caught only around the parser calls.
_PARSER_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, SyntaxError, csv.Error, nx.NetworkXException)

#: networkx 3.4 renamed ``node_link_graph``'s ``link=`` keyword to ``edges=``.
_EDGES_KEYWORD = "edges" if "edges" in inspect.signature(nx.node_link_graph).parameters else "link"

#: Node-feature names, edge-feature names, and whether the nodes carry a target ``y``.
_Features = tuple[list[str], list[str], bool]


def read_graphs(path: Path, *, nodes: Path | None = None) -> list[Data]:
    """Read the graphs in ``path``, with node features from the nodes CSV ``nodes`` for edge-list
    and CSV edge files; the formats and conventions are in this module's docstring.

    Raises:
        ValueError: a missing file, an unknown extension, an unparsable file, a non-numeric,
            NaN or infinite feature, a graph without nodes, graphs with different features,
            missing CSV columns, or an edge naming a node that ``nodes`` lacks. The message
            names the file and, where it helps, the line, column, graph or node.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"graph file {path} does not exist")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unknown graph file extension {path.suffix!r}; supported: {', '.join(_READERS)}")
    if nodes is None:
        return reader(path, None)
    nodes = Path(nodes)
    if reader not in (_read_edge_list, _read_csv_graphs):
        raise ValueError(f"a nodes file goes with edge-list or CSV edges files, not {path} (its nodes carry their "
                         f"own features); drop `nodes`")
    if not nodes.is_file():
        raise ValueError(f"nodes file {nodes} does not exist")
    return reader(path, nodes)


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
        raise ValueError(f"{path} is not a readable torch.save file of PyG Data objects: {reason(error)}") from None
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


def _read_torch(path: Path, nodes: None) -> list[Data]:
    graphs = load_data_list(path, required=("x", "edge_index"))
    for graph, name in zip(graphs, _names(path, len(graphs))):
        if getattr(graph, "node_ids", None) is None:
            graph.node_ids = [str(i) for i in range(graph.num_nodes)]
        if getattr(graph, "name", None) is None:
            graph.name = name
    return graphs


def _read_edge_list(path: Path, nodes: Path | None) -> list[Data]:
    columns = _first_edge_line(path).split()[2:]
    if not columns:
        edge_data, edge_features = False, []
    elif columns[0].startswith("{"):
        edge_data, edge_features = True, None
    else:
        edge_features = [f"column {number}" for number in range(3, 3 + len(columns))]
        edge_data = [(name, str) for name in edge_features]
    with _parsing(path, "edge list"):
        edges = nx.read_edgelist(path, create_using=nx.MultiDiGraph, data=edge_data)
    edge_features = _attribute_names(d for *_, d in edges.edges(data=True)) if edge_features is None else edge_features
    if nodes is None:
        return _to_data_list([(path.stem, edges)], ([], edge_features, False), path, path)
    graphs, node_features, has_y = _read_nodes_csv(nodes, grouped=False, name=path.stem, edges_file=path)
    graph = graphs.setdefault(path.stem, nx.MultiDiGraph())
    for source, target, attributes in edges.edges(data=True):
        for node in (source, target):
            _check_listed(graph, node, f"{path}: edge ({source!r}, {target!r})", nodes)
        graph.add_edge(source, target, **attributes)
    return _to_data_list(list(graphs.items()), (node_features, edge_features, has_y), nodes, path)


def _read_graphml(path: Path, nodes: None) -> list[Data]:
    with _parsing(path, "GraphML file"):
        graph = nx.read_graphml(path)
    return _from_networkx([(path.stem, graph)], path)


def _read_node_link_json(path: Path, nodes: None) -> list[Data]:
    with _parsing(path, "JSON file"):
        content = json.loads(path.read_text(encoding="utf-8"))
    items = content if isinstance(content, list) else [content]
    if not items:
        raise ValueError(f"{path} holds no graphs (an empty JSON list)")
    graphs = []
    for name, item in zip(_names(path, len(items)), items):
        edges = "edges" if isinstance(item, dict) and "edges" in item else "links"
        if not isinstance(item, dict) or "nodes" not in item or edges not in item:
            raise ValueError(f"{path}: graph {name!r} is not a node-link object (a JSON object with `nodes` and "
                             f"`edges` or `links` lists, as nx.node_link_data writes)")
        with _parsing(path, "node-link JSON file"):
            graphs.append((name, nx.node_link_graph(item, **{_EDGES_KEYWORD: edges})))
    return _from_networkx(graphs, path)


def _read_csv_graphs(path: Path, nodes: Path | None) -> list[Data]:
    header, rows = _read_csv(path, ("source", "target"))
    grouped = "graph" in header
    edge_features = [column for column in header if column not in ("source", "target", "graph")]
    if nodes is None:
        graphs, node_features, has_y = ({} if grouped else {path.stem: nx.MultiDiGraph()}), [], False
    else:
        graphs, node_features, has_y = _read_nodes_csv(nodes, grouped=grouped, name=path.stem, edges_file=path)
    for line, row in rows:
        name = row["graph"] if grouped else path.stem
        source, target = row["source"], row["target"]
        if nodes is None:
            graph = graphs.setdefault(name, nx.MultiDiGraph())
        else:
            graph = graphs.get(name, nx.MultiDiGraph())
            for node in (source, target):
                _check_listed(graph, node, f"{path}, line {line}: edge ({source!r}, {target!r}) of graph {name!r}",
                              nodes)
        graph.add_edge(source, target, **{column: row[column] for column in edge_features})
    if not graphs:
        raise ValueError(f"{path} holds no graphs (no rows)")
    return _to_data_list(list(graphs.items()), (node_features, edge_features, has_y), nodes or path, path)


def _read_nodes_csv(path: Path, *, grouped: bool, name: str,
                    edges_file: Path) -> tuple[dict[str, nx.MultiDiGraph], list[str], bool]:
    """The nodes CSV ``path`` as edgeless graphs keyed by name (``name`` when not ``grouped``),
    the node-feature columns in file order, and whether it has a ``y`` column."""
    header, rows = _read_csv(path, ("node",))
    if ("graph" in header) != grouped:
        having, lacking = (edges_file, path) if grouped else (path, edges_file)
        raise ValueError(f"{having} has a `graph` column but {lacking} has none; give both files one, or neither")
    features = [column for column in header if column not in ("node", "graph", "y")]
    graphs: dict[str, nx.MultiDiGraph] = {}
    for line, row in rows:
        graph = graphs.setdefault(row["graph"] if grouped else name, nx.MultiDiGraph())
        if row["node"] in graph:
            raise ValueError(f"{path}, line {line}: node {row['node']!r} is listed twice")
        graph.add_node(row["node"], **{column: row[column] for column in header if column not in ("node", "graph")})
    return graphs, features, "y" in header


def _read_csv(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header of the CSV file ``path`` and its rows, each with its line number."""
    with _parsing(path, "CSV file"), path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file, skipinitialspace=True)
        header = list(reader.fieldnames or [])
        rows = [(reader.line_num, row) for row in reader]
    missing = [column for column in required if column not in header]
    if missing:
        raise ValueError(f"{path} has no {', '.join(f'`{c}`' for c in missing)} column (its columns: "
                         f"{', '.join(header) or 'none'}); the first line must name the columns")
    if len(set(header)) != len(header):
        raise ValueError(f"{path} names a column twice: {', '.join(header)}")
    for line, row in rows:
        if None in row or None in row.values():
            raise ValueError(f"{path}, line {line}: the number of fields differs from the header's {len(header)}")
    return header, rows


def _first_edge_line(path: Path) -> str:
    """The first line of the edge list ``path`` that holds an edge (comments and blanks skipped)."""
    with _parsing(path, "edge list"), path.open(encoding="utf-8") as file:
        return next((line for line in (raw.split("#")[0].strip() for raw in file) if line), "")


def _check_listed(graph: nx.Graph, node: str, edge: str, nodes: Path) -> None:
    if node not in graph:
        raise ValueError(f"{edge} names node {node!r}, which is not in the nodes file {nodes}; add it there")


def _from_networkx(graphs: list[tuple[str, nx.Graph]], path: Path) -> list[Data]:
    """``Data`` of the named networkx ``graphs`` read from ``path``, features in sorted name order."""
    node_names = _shared_names(graphs, "nodes", path)
    features = ([name for name in node_names if name != "y"], _shared_names(graphs, "edges", path), "y" in node_names)
    return _to_data_list(graphs, features, path, path)


def _shared_names(graphs: list[tuple[str, nx.Graph]], kind: str, path: Path) -> list[str]:
    """The sorted attribute names of the ``kind`` (``"nodes"`` or ``"edges"``) of ``graphs``,
    the same in every graph that has any such items."""
    named = [(name, _attribute_names(d for *_, d in getattr(graph, kind)(data=True)))
             for name, graph in graphs if len(getattr(graph, kind))]
    for name, names in named[1:]:
        if names != named[0][1]:
            raise ValueError(f"{path}: graphs {named[0][0]!r} and {name!r} have different {kind[:-1]} attributes "
                             f"({', '.join(named[0][1]) or 'none'} vs {', '.join(names) or 'none'}); "
                             f"give every graph the same")
    return named[0][1] if named else []


def _to_data_list(graphs: list[tuple[str, nx.Graph]], features: _Features, node_file: Path,
                  edge_file: Path) -> list[Data]:
    """``Data`` of the named networkx ``graphs`` with the given ``features``; errors name the
    file the nodes (``node_file``) or the edges (``edge_file``) came from."""
    node_features, edge_features, has_y = features
    data_list = []
    for name, graph in graphs:
        if graph.number_of_nodes() == 0:
            raise ValueError(f"graph {name!r} in {node_file} has no nodes")
        if not graph.is_directed():
            graph = graph.to_directed()
        index = {node: number for number, node in enumerate(graph.nodes)}
        nodes, edges = list(graph.nodes(data=True)), list(graph.edges(data=True))
        data = Data(x=_table(nodes, node_features, node_file, name) if node_features else torch.ones(len(nodes), 1),
                    edge_index=torch.tensor([[index[u] for u, _, _ in edges], [index[v] for _, v, _ in edges]],
                                            dtype=torch.long).reshape(2, len(edges)))
        if edge_features:
            data.edge_attr = _table(edges, edge_features, edge_file, name)
        if has_y:
            data.y = _table(nodes, ["y"], node_file, name)
        data.node_ids = [str(node) for node in index]
        data.name = name
        data_list.append(data)
    return data_list


def _table(items: list[tuple], names: list[str], file: Path, graph: str) -> torch.Tensor:
    """Float32 ``[len(items), len(names)]``: the attributes ``names`` of networkx's ``(node, dict)``
    or ``(source, target, dict)`` items of ``graph`` read from ``file``."""
    rows = []
    for *item, attributes in items:
        try:
            rows.append([_number(attributes, name) for name in names])
        except ValueError as problem:
            what = f"node {item[0]!r}" if len(item) == 1 else f"edge ({item[0]!r}, {item[1]!r})"
            raise ValueError(f"{file}: {what} of graph {graph!r}: {problem}") from None
    return torch.tensor(rows, dtype=torch.float32).reshape(len(items), len(names))


def _number(attributes: dict, name: str) -> float:
    if name not in attributes:
        raise ValueError(f"`{name}` is missing (others have it); give every one a value")
    value = attributes[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` is not a number (got {value!r}); features must be numeric") from None
    if not math.isfinite(number):
        raise ValueError(f"`{name}` is {number} (got {value!r}); features must be finite")
    return number


def _attribute_names(attribute_dicts: Iterable[dict]) -> list[str]:
    return sorted({name for attributes in attribute_dicts for name in attributes})


def _names(path: Path, count: int) -> list[str]:
    """Graph names: the file's stem for one graph, ``stem[i]`` for several."""
    return [path.stem] if count == 1 else [f"{path.stem}[{i}]" for i in range(count)]


@contextmanager
def _parsing(path: Path, kind: str) -> Iterator[None]:
    """Turn a parser's exception into a ``ValueError`` naming ``path`` and the parser's message."""
    try:
        yield
    except _PARSER_ERRORS as error:
        raise ValueError(f"{path} is not a readable {kind}: {reason(error)}") from None



_READERS: dict[str, Callable[[Path, Path | None], list[Data]]] = {
    ".pt": _read_torch, ".pth": _read_torch,
    ".edgelist": _read_edge_list, ".edges": _read_edge_list, ".txt": _read_edge_list,
    ".graphml": _read_graphml,
    ".json": _read_node_link_json,
    ".csv": _read_csv_graphs,
}
