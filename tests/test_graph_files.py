"""Users' graphs read from edge lists, GraphML, node-link JSON, CSV tables and saved Data lists.

The same small graph is written by networkx's own writers (or by hand, for CSV) and read back;
every check compares with the known node and edge values, mapped through ``node_ids``.
"""

import json
import math

import networkx as nx
import pytest
import torch
from torch_geometric.data import Data

from convergent.graph_files import read_graphs

# Five nodes with two features and a target, six directed edges (a ⇄ b both ways) with a weight.
# Values are exact in float32.
NODES = {"a": {"size": 1.0, "charge": -2.0, "y": 0.5}, "b": {"size": 2.0, "charge": 0.25, "y": 1.5},
         "c": {"size": 3.0, "charge": 4.0, "y": -1.0}, "d": {"size": 0.5, "charge": 8.0, "y": 2.0},
         "e": {"size": 6.0, "charge": -0.75, "y": 0.0}}
EDGES = {("a", "b"): 1.5, ("b", "a"): 0.25, ("b", "c"): 2.0, ("c", "d"): 3.0, ("d", "e"): 4.0, ("e", "c"): 5.0}
SORTED = ["charge", "size"]  # attributes read through networkx come in sorted name order
CSV_ORDER = ["size", "charge"]  # CSV columns come in file order


def known_graph(graph: nx.Graph, edges=EDGES) -> nx.Graph:
    graph.add_nodes_from(NODES.items())
    graph.add_edges_from((u, v, {"weight": w}) for (u, v), w in edges.items())
    return graph


def nodes_csv(path, graph_column=""):
    rows = [f"{graph_column}{node},{v['size']},{v['charge']},{v['y']}" for node, v in NODES.items()]
    path.write_text("\n".join([f"{'graph,' if graph_column else ''}node,size,charge,y", *rows]) + "\n")
    return path


def write_graphml(tmp_path):
    nx.write_graphml(known_graph(nx.DiGraph()), tmp_path / "g.graphml")
    return tmp_path / "g.graphml", None, SORTED


def write_json(edges_key):
    def write(tmp_path):
        data = nx.node_link_data(known_graph(nx.DiGraph()), edges=edges_key)
        (tmp_path / "g.json").write_text(json.dumps(data))
        return tmp_path / "g.json", None, SORTED
    return write


def write_edge_list(data, suffix):
    def write(tmp_path):
        nx.write_edgelist(known_graph(nx.DiGraph()), tmp_path / f"g{suffix}", data=data)
        return tmp_path / f"g{suffix}", nodes_csv(tmp_path / "nodes.csv"), CSV_ORDER
    return write


def write_csv(tmp_path):
    rows = [f"{u},{v},{w}" for (u, v), w in EDGES.items()]
    (tmp_path / "g.csv").write_text("\n".join(["source,target,weight", *rows]) + "\n")
    return tmp_path / "g.csv", nodes_csv(tmp_path / "nodes.csv"), CSV_ORDER


WRITERS = {"graphml": write_graphml, "json-edges": write_json("edges"), "json-links": write_json("links"),
           "edgelist-dict": write_edge_list(True, ".edgelist"),
           "edgelist-columns": write_edge_list(["weight"], ".edges"), "csv": write_csv}


def edges_by_id(graph: Data) -> dict[tuple[str, str], list[float]]:
    """``(source id, target id) → edge features``; fails on a repeated edge."""
    ids = graph.node_ids
    pairs = [(ids[u], ids[v]) for u, v in graph.edge_index.T.tolist()]
    assert len(set(pairs)) == len(pairs)
    return dict(zip(pairs, graph.edge_attr.tolist()))


@pytest.mark.parametrize("writer", WRITERS.values(), ids=WRITERS.keys())
def test_every_format_reads_back_the_known_graph(tmp_path, writer):
    path, nodes, order = writer(tmp_path)
    [graph] = read_graphs(path, nodes=nodes)
    assert graph.name == "g"
    assert sorted(graph.node_ids) == sorted(NODES)
    assert graph.x.dtype == graph.edge_attr.dtype == graph.y.dtype == torch.float32
    assert graph.edge_index.dtype == torch.long
    for row, node in enumerate(graph.node_ids):
        assert graph.x[row].tolist() == [NODES[node][name] for name in order]
        assert graph.y[row].tolist() == [NODES[node]["y"]]
    assert edges_by_id(graph) == {edge: [weight] for edge, weight in EDGES.items()}


def test_plain_edge_list_has_a_column_of_ones_and_no_edge_features(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("# source target\nb a\na c\n\nc a  # back\n")
    [graph] = read_graphs(path)
    assert graph.node_ids == ["b", "a", "c"]
    assert graph.edge_index.tolist() == [[0, 1, 2], [1, 2, 1]]
    assert torch.equal(graph.x, torch.ones(3, 1))
    assert graph.edge_attr is None and graph.y is None


@pytest.mark.parametrize("suffix", [".graphml", ".json"])
def test_undirected_graph_gives_both_directions_with_the_edge_features(tmp_path, suffix):
    graph = known_graph(nx.Graph(), edges={("a", "b"): 1.5, ("c", "b"): 2.0, ("d", "d"): 3.0})
    path = tmp_path / f"u{suffix}"
    if suffix == ".graphml":
        nx.write_graphml(graph, path)
    else:
        path.write_text(json.dumps(nx.node_link_data(graph)))
    [read] = read_graphs(path)
    assert edges_by_id(read) == {("a", "b"): [1.5], ("b", "a"): [1.5], ("b", "c"): [2.0], ("c", "b"): [2.0],
                                 ("d", "d"): [3.0]}


def test_csv_graph_column_gives_one_graph_each_with_isolated_nodes_kept(tmp_path):
    edges = tmp_path / "edges.csv"
    edges.write_text("graph,source,target,weight\ng1,a,b,1\ng1,b,c,2\ng2,b,a,3\n")
    [first, second] = read_graphs(edges)
    assert (first.name, first.node_ids, first.edge_index.tolist()) == ("g1", ["a", "b", "c"], [[0, 1], [1, 2]])
    assert (second.name, second.node_ids, second.edge_attr.tolist()) == ("g2", ["b", "a"], [[3.0]])
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("graph,node,f\ng1,c,3\ng1,b,2\ng1,a,1\ng2,a,4\ng2,b,5\ng2,z,6\ng3,q,7\n")
    graphs = read_graphs(edges, nodes=nodes)
    assert [(g.name, g.node_ids, g.num_edges) for g in graphs] == [
        ("g1", ["c", "b", "a"], 2), ("g2", ["a", "b", "z"], 1), ("g3", ["q"], 0)]
    assert graphs[1].x.tolist() == [[4.0], [5.0], [6.0]]
    assert edges_by_id(graphs[0]) == {("a", "b"): [1.0], ("b", "c"): [2.0]}
    assert graphs[2].edge_attr.shape == (0, 1) and graphs[2].y is None


def test_json_list_gives_several_graphs_named_by_position(tmp_path):
    path = tmp_path / "many.json"
    with_edges, without = known_graph(nx.DiGraph()), known_graph(nx.DiGraph(), edges={})
    path.write_text(json.dumps([nx.node_link_data(with_edges), nx.node_link_data(without)]))
    graphs = read_graphs(path)
    assert [(g.name, g.num_nodes, g.num_edges) for g in graphs] == [("many[0]", 5, 6), ("many[1]", 5, 0)]
    assert graphs[1].edge_attr.shape == (0, 1)  # an edgeless graph takes the file's edge features
    path.write_text(json.dumps(nx.node_link_data(nx.path_graph(2, create_using=nx.DiGraph))))
    [graph] = read_graphs(path)
    assert graph.node_ids == ["0", "1"] and graph.edge_index.tolist() == [[0], [1]]


def test_saved_data_list_gets_node_ids_and_names(tmp_path):
    path = tmp_path / "saved.pt"
    torch.save([Data(x=torch.ones(3, 2), edge_index=torch.tensor([[0], [2]])) for _ in range(2)], path)
    graphs = read_graphs(path)
    assert [g.name for g in graphs] == ["saved[0]", "saved[1]"]
    assert graphs[0].node_ids == ["0", "1", "2"]


def graphml(graph: nx.Graph) -> str:
    return "\n".join(nx.generate_graphml(graph))


def labelled() -> nx.Graph:
    graph = nx.DiGraph([("a", "b")])
    graph.nodes["a"]["label"] = "red"
    graph.nodes["b"]["label"] = "blue"
    return graph


def infinite() -> dict:
    graph = nx.DiGraph([("a", "b")])
    nx.set_node_attributes(graph, {"a": math.inf, "b": 1.0}, "f")
    return nx.node_link_data(graph)


BAD = {
    "missing file": ({}, "gone.csv", None, r"gone\.csv does not exist"),
    "missing nodes file": ({"e.csv": "source,target\na,b\n"}, "e.csv", "gone.csv", r"gone\.csv does not exist"),
    "unknown extension": ({"g.xlsx": "?"}, "g.xlsx", None, r"g\.xlsx: unknown .*'\.xlsx'; supported: .*\.graphml"),
    "nodes with graphml": ({"g.graphml": graphml(labelled()), "n.csv": "node\na\n"}, "g.graphml", "n.csv",
                           r"not .*g\.graphml .*drop `nodes`"),
    "broken graphml": ({"g.graphml": "<graphml><node"}, "g.graphml", None,
                       r"g\.graphml is not a readable GraphML file: unclosed token"),
    "broken json": ({"g.json": "{nodes: "}, "g.json", None, r"g\.json is not a readable JSON file"),
    "not node-link": ({"g.json": '{"a": 1}'}, "g.json", None, r"g\.json: graph 'g' is not a node-link object"),
    "empty json list": ({"g.json": "[]"}, "g.json", None, r"g\.json holds no graphs"),
    "broken edge dict": ({"g.edgelist": "a b {'w': }\n"}, "g.edgelist", None,
                         r"g\.edgelist is not a readable edge list: Failed to convert"),
    "ragged edge list": ({"g.edges": "a b 1\nb c 1 2\n"}, "g.edges", None,
                         r"g\.edges is not a readable edge list: Edge data .* not the same length"),
    "non-numeric csv": ({"g.csv": "source,target,weight\na,b,heavy\n"}, "g.csv", None,
                        r"g\.csv: edge \('a', 'b'\) of graph 'g': `weight` is not a number \(got 'heavy'\)"),
    "non-numeric graphml": ({"g.graphml": graphml(labelled())}, "g.graphml", None,
                            r"g\.graphml: node 'a' of graph 'g': `label` is not a number \(got 'red'\)"),
    "nan feature": ({"e.csv": "source,target\na,b\n", "n.csv": "node,f\na,nan\nb,1\n"}, "e.csv", "n.csv",
                    r"n\.csv: node 'a' of graph 'e': `f` is nan"),
    "infinite feature": ({"g.json": json.dumps(infinite())}, "g.json", None,
                         r"g\.json: node 'a' of graph 'g': `f` is inf"),
    "missing attribute": ({"g.graphml": graphml(nx.DiGraph([("a", "b", {"w": 1.0}), ("b", "a")]))}, "g.graphml", None,
                          r"g\.graphml: edge \('b', 'a'\) of graph 'g': `w` is missing"),
    "empty edge list": ({"g.edgelist": "# no edges\n"}, "g.edgelist", None, r"graph 'g' in .*g\.edgelist has no nodes"),
    "empty csv": ({"g.csv": "source,target\n"}, "g.csv", None, r"graph 'g' in .*g\.csv has no nodes"),
    "different features": ({"g.json": json.dumps([nx.node_link_data(nx.DiGraph([("a", "b")])), infinite()])}, "g.json",
                           None, r"g\.json: graphs 'g\[0\]' and 'g\[1\]' have different node attributes \(none vs f\)"),
    "graph column in edges only": ({"e.csv": "graph,source,target\ng1,a,b\n", "n.csv": "node\na\nb\n"}, "e.csv",
                                   "n.csv", r"e\.csv has a `graph` column but .*n\.csv has none"),
    "graph column in nodes only": ({"e.csv": "source,target\na,b\n", "n.csv": "graph,node\ng1,a\n"}, "e.csv", "n.csv",
                                   r"n\.csv has a `graph` column but .*e\.csv has none"),
    "no source column": ({"e.csv": "from,target\na,b\n"}, "e.csv", None, r"e\.csv has no `source` column"),
    "no node column": ({"e.csv": "source,target\na,b\n", "n.csv": "id,f\na,1\n"}, "e.csv", "n.csv",
                       r"n\.csv has no `node` column \(its columns: id, f\)"),
    "ragged csv": ({"e.csv": "source,target,w\na,b\n"}, "e.csv", None, r"e\.csv, line 2: the number of fields"),
    "node listed twice": ({"e.csv": "source,target\na,b\n", "n.csv": "node\na\nb\na\n"}, "e.csv", "n.csv",
                          r"n\.csv, line 4: node 'a' is listed twice"),
    "csv edge to unlisted node": ({"e.csv": "source,target\na,b\nb,z\n", "n.csv": "node\na\nb\n"}, "e.csv", "n.csv",
                                  r"e\.csv, line 3: edge \('b', 'z'\) of graph 'e' names node 'z', "
                                  r"which is not in the nodes file .*n\.csv"),
    "edge list to unlisted node": ({"e.txt": "a b\nz a\n", "n.csv": "node\na\nb\n"}, "e.txt", "n.csv",
                                   r"e\.txt: edge \('z', 'a'\) names node 'z', which is not in the nodes file "
                                   r".*n\.csv"),
}


@pytest.mark.parametrize("files, path, nodes, message", BAD.values(), ids=BAD.keys())
def test_bad_input_raises_one_clear_value_error(tmp_path, files, path, nodes, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message) as raised:
        read_graphs(tmp_path / path, nodes=None if nodes is None else tmp_path / nodes)
    assert raised.value.__suppress_context__ or raised.value.__context__ is None  # no library traceback chained
