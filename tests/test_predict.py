"""`convergent predict` on users' graph files and `convergent report` on a real run, rendered
by headless Chromium."""

import csv
import json

import pytest
import torch

from convergent.tasks import get_task
from convergent.training import build_model, load_checkpoint
from convergent.training import train as train_run
from test_report import dump_dom, image_sources
from test_training import TINY_MODEL, run_cli, tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train_run(get_task("gvi"), tiny_config(), out, progress=False)
    return out


@pytest.fixture(scope="module")
def graphs():
    return get_task("gvi").graphs(3, seed=11)


def read_csv(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def alone(run, graph):
    """The checkpoint's model run on one graph by itself."""
    model = build_model("cgs", get_task("gvi"), TINY_MODEL)
    model.load_state_dict(load_checkpoint(run / "checkpoint.pt")["model"])
    model.eval()
    with torch.no_grad():
        return model(graph.x, graph.edge_index, graph.edge_attr).reshape(-1)


def write_as_csv(graphs, edges, nodes):
    """The graphs as an edges CSV (reward column) and a nodes CSV (the constant feature)."""
    with open(edges, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["graph", "source", "target", "reward"])
        for g, graph in enumerate(graphs):
            for (u, v), reward in zip(graph.edge_index.t().tolist(), graph.edge_attr.reshape(-1).tolist()):
                writer.writerow([f"mdp{g}", f"s{u}", f"s{v}", repr(reward)])
    with open(nodes, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["graph", "node", "constant"])
        for g, graph in enumerate(graphs):
            writer.writerows([f"mdp{g}", f"s{i}", 1.0] for i in range(graph.num_nodes))


def test_predictions_per_node_equal_the_model_on_each_graph_alone_with_certificates(run, graphs, tmp_path):
    torch.save(graphs, tmp_path / "mdps.pt")
    result = run_cli("predict", "--checkpoint", str(run / "checkpoint.pt"), "--graphs", str(tmp_path / "mdps.pt"),
                     "--out", str(tmp_path / "out.csv"), "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["graphs"] == 3 and summary["all_converged"] and summary["max_error_bound"] < 1e-3
    rows = read_csv(tmp_path / "out.csv")
    assert len(rows) == sum(g.num_nodes for g in graphs)
    for g, graph in enumerate(graphs):
        mine = [float(r["prediction"]) for r in rows if r["graph"] == f"mdps[{g}]"]
        torch.testing.assert_close(torch.tensor(mine), alone(run, graph), rtol=1e-4, atol=1e-4)
    certificates = read_csv(tmp_path / "out.certificates.csv")
    assert [c["nodes"] for c in certificates] == [str(g.num_nodes) for g in graphs]
    for certificate in certificates:
        assert certificate["converged"] == "1" and int(certificate["iterations"]) >= 1
        gamma = TINY_MODEL.get("gamma", 0.5)
        assert float(certificate["error_bound"]) == pytest.approx(float(certificate["residual"]) / (1 - gamma),
                                                                  rel=1e-3)


def test_csv_edges_and_nodes_give_the_same_predictions_under_the_users_ids(run, graphs, tmp_path):
    torch.save(graphs, tmp_path / "mdps.pt")
    write_as_csv(graphs, tmp_path / "edges.csv", tmp_path / "nodes.csv")
    for args in (["--graphs", str(tmp_path / "mdps.pt")],
                 ["--graphs", str(tmp_path / "edges.csv"), "--nodes", str(tmp_path / "nodes.csv")]):
        result = run_cli("predict", "--checkpoint", str(run / "checkpoint.pt"), *args, "--quiet",
                         "--out", str(tmp_path / f"{args[1].rsplit('/', 1)[1]}.csv"))
        assert result.returncode == 0, result.stderr
    from_pt, from_csv = read_csv(tmp_path / "mdps.pt.csv"), read_csv(tmp_path / "edges.csv.csv")
    assert [r["node"] for r in from_csv[:3]] == ["s0", "s1", "s2"] and from_csv[0]["graph"] == "mdp0"
    assert [float(r["prediction"]) for r in from_csv] == pytest.approx([float(r["prediction"]) for r in from_pt],
                                                                       rel=1e-5, abs=1e-5)


def test_bad_graphs_give_one_message_and_leave_earlier_outputs_intact(run, graphs, tmp_path):
    checkpoint = str(run / "checkpoint.pt")
    torch.save(graphs, tmp_path / "good.pt")
    out = tmp_path / "predictions.csv"
    assert run_cli("predict", "--checkpoint", checkpoint, "--graphs", str(tmp_path / "good.pt"), "--out", str(out),
                   "--quiet").returncode == 0
    before = out.read_bytes(), out.with_name("predictions.certificates.csv").read_bytes()
    nan = [graph.clone() for graph in graphs]
    nan[1].x[2] = float("nan")
    torch.save(nan, tmp_path / "nan.pt")
    wide = [graph.clone() for graph in graphs]
    wide[0].x = torch.ones(wide[0].num_nodes, 3)
    torch.save(wide, tmp_path / "wide.pt")
    (tmp_path / "plain.edgelist").write_text("a b\nb c\nc a\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "graph.xyz").write_text("")
    cases = {
        "nan.pt": "graph mdps\\[1\\]|graph 1|NaN",
        "wide.pt": "has 3 node features; the checkpoint's model takes 1",
        "plain.edgelist": "0 edge features; the checkpoint's model takes 1",
        "missing.pt": "does not exist",
        "empty.csv": "empty.csv",
        "graph.xyz": "graph.xyz",
    }
    for name, message in cases.items():
        result = run_cli("predict", "--checkpoint", checkpoint, "--graphs", str(tmp_path / name), "--out", str(out))
        assert result.returncode == 2, (name, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert any(part in result.stderr for part in message.replace("\\", "").split("|")), (name, result.stderr)
    result = run_cli("predict", "--checkpoint", str(tmp_path / "good.pt"), "--graphs", str(tmp_path / "good.pt"))
    assert result.returncode == 2 and "not a readable convergent checkpoint" in result.stderr
    assert "Unsupported global" in result.stderr and "two options" not in result.stderr
    assert (out.read_bytes(), out.with_name("predictions.certificates.csv").read_bytes()) == before


def test_report_of_a_real_run_renders_with_every_image(run, tmp_path):
    result = run_cli("report", str(run), "--json")
    assert result.returncode == 0, result.stderr
    page = run / "report.html"
    assert json.loads(result.stdout)["report"] == str(page)
    html = page.read_text()
    assert "policy_accuracy" in html and "graphs converged; the largest error bound is" in html
    assert all((run / source).is_file() for source in image_sources(html))
    dom = dump_dom(page, tmp_path / "profile")
    count = len(image_sources(html))
    assert count >= 3 and f'data-images-loaded="{count}/{count}"' in dom
