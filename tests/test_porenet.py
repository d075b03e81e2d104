"""Pore networks with OpenPNM: the data, the exact CGS form of Stokes flow, the task and its command."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

import convergent
from convergent.systems import porenet
from test_training import tiny_options

pytestmark = pytest.mark.skipif(not porenet.available(),
                                reason="OpenPNM is not installed (pip install -e '.[porenet]')")



@pytest.fixture(scope="module")
def networks():
    """One small network of every kind."""
    return {kind: porenet.pore_network(120, kind, seed=7) for kind in porenet.KINDS}


@pytest.mark.parametrize("kind", porenet.KINDS)
def test_hand_set_cgs_reproduces_openpnm_pressures(networks, kind):
    graph = networks[kind]
    form = porenet.cgs_form(graph.edge_index, graph.conductance, graph.inlet, graph.outlet)
    assert 0 < form["gamma"] < 1
    q, info = convergent.solve(form["edge_index"], form["edge_weight"], form["bias"], gamma=form["gamma"],
                               solver="anderson", tol=1e-12)
    pressure = q * form["scale"] * porenet.PRESSURE_DROP
    conns, conductance = porenet.throats(graph)
    reference, _ = porenet.stokes_flow(graph.pos.numpy(), conns, conductance, graph.inlet.numpy(),
                                       graph.outlet.numpy())
    error = np.abs(pressure.numpy() - reference).max() / np.abs(reference).max()
    assert error < 1e-6, f"{kind}: relative error {error:.2e} after {info.iterations.max()} iterations"


@pytest.mark.parametrize("kind", porenet.KINDS)
def test_graphs_follow_the_documented_scaling(networks, kind):
    graph = networks[kind]
    assert graph.x.shape[1] == 6 and graph.edge_attr.shape[1] == 4 and graph.y.shape == (graph.num_nodes, 1)
    assert 0 <= graph.x[:, :3].min() and graph.x[:, :3].max() <= 1
    assert graph.inlet.any() and graph.outlet.any() and not (graph.inlet & graph.outlet).any()
    assert torch.equal(graph.x[:, 3].bool(), graph.inlet) and torch.equal(graph.x[:, 5], graph.inlet.float())
    torch.testing.assert_close(graph.y[graph.inlet, 0], torch.ones(int(graph.inlet.sum())))
    torch.testing.assert_close(graph.y[graph.outlet, 0], torch.zeros(int(graph.outlet.sum())))
    assert 0 <= graph.y.min() and graph.y.max() <= 1 + 1e-6  # maximum principle
    half = graph.edge_index.shape[1] // 2
    assert torch.equal(graph.edge_index[:, half:], graph.edge_index[:, :half].flip(0))
    assert torch.equal(graph.edge_attr[half:, :3], graph.edge_attr[:half, :3])
    source, target = graph.edge_index
    step = (graph.pos[target, 0] - graph.pos[source, 0]) * graph.num_nodes ** (1 / 3) / porenet.DOMAIN
    torch.testing.assert_close(graph.edge_attr[:, 3], step.float())
    assert (graph.edge_attr[:, :2] > 0).all() and (graph.conductance > 0).all()


@pytest.mark.parametrize("kind", porenet.KINDS)
def test_pores_do_not_overlap(kind):
    network = porenet.build_network(150, kind, seed=3)
    conns, coords, diameter = network.conns, network.coords, network["pore.diameter"]
    distance = np.linalg.norm(coords[conns[:, 0]] - coords[conns[:, 1]], axis=1)
    assert (diameter[conns].sum(1) / 2 < distance).all()
    assert (network["throat.length"] > 0).all()


def test_outlet_flow_from_pressures_equals_openpnm_rate(networks):
    batch = Batch.from_data_list(list(networks.values()))
    flow = porenet.outlet_flow(batch.y, batch.edge_index, batch.conductance, batch.outlet, batch.batch,
                               batch.num_graphs)
    torch.testing.assert_close(flow, batch.flow_rate, rtol=1e-5, atol=0)  # y is stored in float32


def test_uniform_medium_is_openpnms_pressure_on_a_uniform_lattice():
    # A cubic lattice with equal conductances, held at its first and last x layers: the exact
    # pressure is linear in x between those layers, which is what the prior gives.
    shape, spacing = (6, 3, 4), porenet.DOMAIN / 6
    pos = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), -1).reshape(-1, 3) * spacing
    index = np.arange(pos.shape[0]).reshape(shape)
    conns = np.concatenate([np.stack([np.take(index, range(n - 1), axis).ravel(),
                                      np.take(index, range(1, n), axis).ravel()], 1)
                            for axis, n in enumerate(shape)])
    inlet, outlet = pos[:, 0] == 0, pos[:, 0] == pos[:, 0].max()
    pressure, _ = porenet.stokes_flow(pos, conns, np.full(len(conns), 1e-15), inlet, outlet)
    x = torch.tensor(np.column_stack([pos / porenet.DOMAIN, inlet, outlet, inlet]), dtype=torch.float32)
    uniform, pore_spacing = porenet.uniform_medium(x, torch.zeros(len(x), dtype=torch.long))
    np.testing.assert_allclose(uniform.numpy(), pressure / porenet.PRESSURE_DROP, atol=1e-6)
    torch.testing.assert_close(pore_spacing, torch.full((len(x),), len(x) ** (-1 / 3)))


def test_uniform_medium_of_a_batch_is_that_of_each_graph(networks):
    graphs = list(networks.values())
    batch = Batch.from_data_list(graphs)
    together = porenet.uniform_medium(batch.x, batch.batch)
    alone = [porenet.uniform_medium(g.x, torch.zeros(g.num_nodes, dtype=torch.long)) for g in graphs]
    for part, single in zip(together, zip(*alone)):
        torch.testing.assert_close(part, torch.cat(single))
    pressure = together[0]
    assert torch.equal(pressure[batch.inlet], torch.ones(int(batch.inlet.sum())))
    assert torch.equal(pressure[batch.outlet], torch.zeros(int(batch.outlet.sum())))
    assert 0 <= pressure.min() and pressure.max() <= 1


def test_models_learn_a_correction_to_the_uniform_medium(networks):
    from convergent.models.prior import PriorCorrection
    from convergent.tasks import get_task
    from convergent.training import build_model

    task = get_task("porenet")
    graph = networks["cubic"]
    model = build_model("cgs", task, {"num_heads": 2, "hidden_channels": 8, "num_layers": 1})
    assert isinstance(model, PriorCorrection)
    assert not isinstance(build_model("cgs", task, {"num_heads": 2}, prior=False), PriorCorrection)
    batch = torch.zeros(graph.num_nodes, dtype=torch.long)
    base, lift = task.prior(graph.x, graph.edge_index, graph.edge_attr, batch)
    inner = model.model(graph.x[:, 3:], graph.edge_index, graph.edge_attr)  # flags and imposed pressure only
    torch.testing.assert_close(model(graph.x, graph.edge_index, graph.edge_attr), base + lift(inner))
    moved = graph.x.clone()
    moved[:, 1:3] += 0.25  # y and z enter neither the uniform medium nor the correction
    torch.testing.assert_close(model(moved, graph.edge_index, graph.edge_attr), base + lift(inner))
    torch.testing.assert_close(lift(inner), porenet.uniform_medium(graph.x, batch)[1][:, None] * inner)
    assert model.last_solve is model.model.last_solve  # the wrapped model's attributes show through


def test_generation_is_seeded_cached_and_independent_of_processes(tmp_path, monkeypatch):
    cache = tmp_path / "nets.pt"
    serial = porenet.porenet_graphs(3, pores=(50, 80), seed=4, cache=cache)
    parallel = porenet.porenet_graphs(3, pores=(50, 80), seed=4, workers=2)
    other = porenet.porenet_graphs(3, pores=(50, 80), seed=5)
    for a, b in zip(serial, parallel):
        assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.y, b.y)
    assert not torch.equal(serial[0].pos, other[0].pos)

    def no_generation(arguments):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(porenet, "_make", no_generation)
    cached = porenet.porenet_graphs(3, pores=(50, 80), seed=4, cache=cache)
    assert all(torch.equal(a.y, b.y) and torch.equal(a.conductance, b.conductance) for a, b in zip(serial, cached))
    with pytest.raises(AssertionError, match="regenerated"):  # other arguments: the cache does not apply
        porenet.porenet_graphs(3, pores=(50, 80), seed=6, cache=cache)


def test_metrics_against_independent_computations(networks):
    from convergent.tasks import get_task

    task = get_task("porenet")
    batch = Batch.from_data_list(list(networks.values()))
    perfect = task.metrics(batch.y, batch)
    assert perfect["mse"] == 0 and perfect["relative_error"] == 0 and perfect["flow_error"] < 1e-5
    half = task.metrics(batch.y / 2, batch)
    assert half["relative_error"] == pytest.approx(0.5) and half["flow_error"] == pytest.approx(0.5, rel=1e-4)
    uniform, _ = task.prior(batch.x, batch.edge_index, batch.edge_attr, batch.batch)
    assert task.metrics(uniform, batch)["relative_error"] == pytest.approx(perfect["uniform_relative_error"])
    assert task.classical_seconds(batch) > 0


def test_train_and_eval_commands_on_user_graphs(tmp_path):
    out = tmp_path / "run"
    tiny = tiny_options(updates=4, eval_every=2, pool_size=4, batch_size=2, validation_graphs=2, restart_period=4)
    command = [sys.executable, "-m", "convergent"]
    result = subprocess.run([*command, "train", "porenet", *tiny, "--out", str(out), "--quiet", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["relative_error"] >= 0
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl", "learning_curve.png", "parity.png"):
        assert (out / name).is_file(), name
    graphs = porenet.porenet_graphs(2, pores=(60, 90), seed=9)
    torch.save(graphs, tmp_path / "mine.pt")
    result = subprocess.run([*command, "eval", "porenet", "--checkpoint", str(out / "checkpoint.pt"), "--sets", "",
                             "--graphs", str(tmp_path / "mine.pt"), "--json"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)[str(tmp_path / "mine.pt")]
    assert report["graphs"] == 2 and report["classical_seconds"] > 0 and 0 <= report["flow_error"]
    del graphs[1].conductance
    torch.save(graphs, tmp_path / "broken.pt")
    result = subprocess.run([*command, "eval", "porenet", "--checkpoint", str(out / "checkpoint.pt"), "--sets", "",
                             "--graphs", str(tmp_path / "broken.pt")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "conductance" in result.stderr and "Traceback" not in result.stderr


def test_without_openpnm_the_task_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "openpnm", None)  # makes `import openpnm` fail
    from convergent.tasks import get_task

    with pytest.raises(ImportError, match=r"pip install -e '\.\[porenet\]'"):
        get_task("porenet")
    assert not porenet.available()
