"""Power flow with pandapower: samples against fresh solves, features against the power-flow
equations written out by hand, seeding and caching, the task and its commands."""

import json
import logging
import math
import sys

import numpy as np
import pytest
import scipy.sparse
import torch
from torch_geometric.data import Batch

from convergent.systems import powerflow
from test_training import run_cli, tiny_options

pytestmark = pytest.mark.skipif(not powerflow.available(),
                                reason="pandapower is not installed (pip install -e '.[power]')")

# Radial and meshed, with taps, negative reactances (case300), phase shifters (case1354pegase)
# and a slack angle of 30° (case118).
GRIDS = ("case14", "case118", "case300", "case1354pegase")


@pytest.fixture(scope="module")
def samples():
    return {name: powerflow.sample(name, seed=(7, index)) for index, name in enumerate(GRIDS)}


def _solved_by_hand(name, graph, run):
    """pandapower's case with the sample's factors applied here, solved by ``run``, and its bus results."""
    import pandapower.networks

    net = getattr(pandapower.networks, name)()
    net.load["p_mw"] *= graph.load_scale.numpy()
    net.load["q_mvar"] *= graph.load_scale.numpy()
    net.gen["p_mw"] *= graph.gen_scale.numpy()
    net.sgen["p_mw"] *= graph.sgen_scale.numpy()
    run(net)
    slack = net.ext_grid.bus.item()
    return net.res_bus.vm_pu.to_numpy(), net.res_bus.va_degree.to_numpy() - net.res_bus.va_degree[slack]


@pytest.mark.parametrize("name", GRIDS)
def test_targets_equal_a_fresh_newton_raphson_and_dc_equals_rundcpp(samples, name):
    import pandapower as pp

    graph = samples[name]
    for factors in (graph.load_scale, graph.gen_scale, graph.sgen_scale):
        assert ((0.7 <= factors) & (factors <= 1.3)).all()
    assert graph.load_scale.std() > 0.1  # drawn per load, not one factor for all
    vm, va = _solved_by_hand(name, graph, pp.runpp)
    np.testing.assert_allclose(1 + powerflow.VM_SCALE * graph.y[:, 0].double().numpy(), vm, atol=1e-7)
    np.testing.assert_allclose(np.degrees(graph.y[:, 1].double().numpy()), va, atol=1e-5)
    _, dc_va = _solved_by_hand(name, graph, pp.rundcpp)
    assert (graph.dc_y[:, 0] == 0).all()
    np.testing.assert_allclose(np.degrees(graph.dc_y[:, 1].double().numpy()), dc_va, atol=1e-5)


def _forward_branches(graph):
    """The first half of the edges (from-bus → to-bus), with their features, in float64."""
    half = graph.edge_index.shape[1] // 2
    return graph.edge_index[:, :half].numpy(), graph.edge_attr[:half].double().numpy()


def test_dc_angles_rebuilt_from_the_features_equal_pandapowers_dc_power_flow(samples):
    """MATPOWER's DC model B θ = P − P_shift − G_shunt (``DCPowerFlow``), on one batch of every
    grid's sample, against ``pp.rundcpp``'s angles stored as ``dc_y``."""
    batch = Batch.from_data_list([samples[name] for name in GRIDS])
    angle = powerflow.DCPowerFlow(batch.x.double(), batch.edge_index, batch.edge_attr.double(), batch.batch).angles()
    np.testing.assert_allclose(angle.numpy(), batch.dc_y[:, 1].double().numpy(), atol=1e-5)
    one = samples["case14"]
    with pytest.raises(ValueError, match="odd number of edges"):
        powerflow.DCPowerFlow(one.x, one.edge_index[:, 1:], one.edge_attr[1:], torch.zeros(one.num_nodes, dtype=torch.long))
    no_slack = one.x.clone()
    no_slack[:, 5] = 0
    with pytest.raises(ValueError, match="0 slack buses"):
        powerflow.DCPowerFlow(no_slack, one.edge_index, one.edge_attr, torch.zeros(one.num_nodes, dtype=torch.long))
    island = (one.edge_index != 13).all(0)  # bus 13 (not the slack) loses its branches
    with pytest.raises(ValueError, match="no path of branches to its graph's slack"):
        powerflow.DCPowerFlow(one.x, one.edge_index[:, island], one.edge_attr[island],
                              torch.zeros(one.num_nodes, dtype=torch.long))


def test_models_learn_a_bus_power_correction_that_the_dc_power_flow_carries_to_the_angles(samples):
    """The prior's base is the DC power flow; its lift solves the DC system for the model's angle
    output taken as extra bus injections (in units of a fraction of the DC power through the bus),
    so the injections that B θ_AC asks for beyond the DC ones (B and the flows assembled here,
    densely, from the branch features) give back the AC angles."""
    from convergent.models.prior import PriorCorrection
    from convergent.tasks import get_task
    from convergent.tasks.powerflow import INJECTION_FLOOR, INJECTION_FRACTION
    from convergent.training import build_model

    task, graph = get_task("powerflow"), samples["case118"]
    x, edge_attr, batch = graph.x.double(), graph.edge_attr.double(), torch.zeros(graph.num_nodes, dtype=torch.long)
    base, lift = task.prior(x, graph.edge_index, edge_attr, batch)
    torch.testing.assert_close(base, graph.dc_y.double(), rtol=0, atol=1e-5)
    (source, target), edge = _forward_branches(graph)
    susceptance = 1 / (edge[:, 1] * np.exp(edge[:, 5]))
    matrix = np.zeros((graph.num_nodes, graph.num_nodes))
    for i, j, b in zip(source, target, susceptance):
        matrix[[i, j, i, j], [i, j, j, i]] += [b, b, -b, -b]
    dc = base[:, 1].numpy()
    flow = np.abs(susceptance * (dc[source] - dc[target] - edge[:, 6]))
    scale = INJECTION_FRACTION * (np.bincount(source, flow, graph.num_nodes) + np.bincount(target, flow, graph.num_nodes))
    extra = matrix @ (graph.y[:, 1].double().numpy() - dc)
    output = torch.stack([torch.randn(graph.num_nodes, dtype=torch.float64),
                          torch.as_tensor(extra / (scale + INJECTION_FLOOR))], 1).requires_grad_()
    predicted = base + lift(output)
    torch.testing.assert_close(predicted[:, 0], output[:, 0])
    torch.testing.assert_close(predicted[:, 1], graph.y[:, 1].double(), rtol=0, atol=1e-5)
    assert torch.autograd.gradcheck(lift, (output,))

    model = build_model("mpnn", task, {"hidden_channels": 8, "num_layers": 1})
    assert isinstance(model, PriorCorrection)
    base, lift = task.prior(graph.x, graph.edge_index, graph.edge_attr, batch)
    torch.testing.assert_close(model(graph.x, graph.edge_index, graph.edge_attr),
                               base + lift(model.model(graph.x, graph.edge_index, graph.edge_attr)))
    assert not isinstance(build_model("mpnn", task, {"hidden_channels": 8}, prior=False), PriorCorrection)


@pytest.mark.parametrize("name", GRIDS)
def test_ac_targets_satisfy_the_power_flow_equations_built_from_the_features(samples, name):
    """S = V · conj(Y V) with Y from the π models of the edge features and the bus shunts: the
    injections of PQ buses are their demand features, the active injections of PV buses
    demand plus generation; PV and slack voltages are their set-points."""
    graph = samples[name]
    (source, target), edge = _forward_branches(graph)
    x, y = graph.x.double().numpy(), graph.y.double().numpy()
    series = 1 / (edge[:, 0] + 1j * edge[:, 1])
    np.testing.assert_allclose(edge[:, 2], np.log(np.abs(series)), rtol=1e-5)
    charging = edge[:, 3] + 1j * edge[:, 4]
    tap = np.exp(edge[:, 5] + 1j * edge[:, 6])
    n = graph.num_nodes
    rows, columns = np.r_[source, source, target, target], np.r_[source, target, source, target]
    values = np.r_[(series + charging / 2) / np.abs(tap) ** 2, -series / tap.conj(), -series / tap,
                   series + charging / 2]
    admittance = scipy.sparse.csr_matrix((values, (rows, columns)), shape=(n, n))  # duplicates are summed
    admittance = admittance + scipy.sparse.diags(x[:, 6] + 1j * x[:, 7])
    magnitude = 1 + powerflow.VM_SCALE * y[:, 0]
    voltage = magnitude * np.exp(1j * y[:, 1])
    power = voltage * np.conj(admittance @ voltage)
    pq, pv, slack = (x[:, 4] == 0) & (x[:, 5] == 0), x[:, 4] == 1, x[:, 5] == 1
    assert slack.sum() == 1 and y[slack, 1] == 0
    # Within 2e-3 p.u. (0.2 MW): features and targets are stored in float32. A phase shift of the
    # wrong sign leaves mismatches of 0.4 p.u. on case1354pegase.
    np.testing.assert_allclose(power.real[pq], x[pq, 0], atol=2e-3)
    np.testing.assert_allclose(power.imag[pq], x[pq, 1], atol=2e-3)
    np.testing.assert_allclose(power.real[pv], x[pv, 0] + x[pv, 2], atol=2e-3)
    np.testing.assert_allclose(x[pv | slack, 3], y[pv | slack, 0], atol=1e-5)
    assert (x[pq, 2:4] == 0).all() and (x[slack, 2] == 0).all()
    # Losses are positive: the slack supplies more than the other buses' net demand.
    assert power.real.sum() > 0


def test_edges_come_in_both_directions_with_signed_tap_and_shift(samples):
    graph = samples["case1354pegase"]
    half = graph.edge_index.shape[1] // 2
    assert torch.equal(graph.edge_index[:, half:], graph.edge_index[:, :half].flip(0))
    torch.testing.assert_close(graph.edge_attr[half:, :5], graph.edge_attr[:half, :5])
    torch.testing.assert_close(graph.edge_attr[half:, 5:], -graph.edge_attr[:half, 5:])
    assert (graph.edge_attr[:, 6] != 0).any() and (graph.edge_attr[:, 5] != 0).any()


def test_column_indices_are_pandapowers():
    from pandapower.pypower import idx_brch, idx_bus, idx_gen

    columns = {"_PD": idx_bus.PD, "_QD": idx_bus.QD, "_GS": idx_bus.GS, "_BS": idx_bus.BS,
               "_BUS_TYPE": idx_bus.BUS_TYPE, "_BASE_KV": idx_bus.BASE_KV, "_PV": idx_bus.PV, "_REF": idx_bus.REF,
               "_GEN_BUS": idx_gen.GEN_BUS, "_PG": idx_gen.PG, "_VG": idx_gen.VG, "_GEN_STATUS": idx_gen.GEN_STATUS,
               "_F_BUS": idx_brch.F_BUS, "_T_BUS": idx_brch.T_BUS, "_BR_R": idx_brch.BR_R, "_BR_X": idx_brch.BR_X,
               "_BR_B": idx_brch.BR_B, "_TAP": idx_brch.TAP, "_SHIFT": idx_brch.SHIFT,
               "_BR_STATUS": idx_brch.BR_STATUS, "_BR_G": idx_brch.BR_G}
    assert {name: getattr(powerflow, name) for name in columns} == columns
    assert powerflow._BR_ASYMMETRIC == [idx_brch.BR_R_ASYM, idx_brch.BR_X_ASYM, idx_brch.BR_G_ASYM,
                                        idx_brch.BR_B_ASYM]


def test_a_draw_that_does_not_converge_is_replaced_and_counted(monkeypatch, caplog):
    import pandapower as pp

    first = powerflow.sample("case14", seed=3)
    assert int(first.redraws) == 0
    solve, calls = powerflow.run_ac, []

    def fail_once(net):
        calls.append(1)
        if len(calls) == 1:
            raise pp.LoadflowNotConverged("made to fail")
        solve(net)

    monkeypatch.setattr(powerflow, "run_ac", fail_once)
    with caplog.at_level(logging.WARNING, logger="convergent.systems.powerflow"):
        second = powerflow.sample("case14", seed=3)
    assert int(second.redraws) == 1 and "did not converge" in caplog.text
    assert not torch.equal(first.load_scale, second.load_scale)

    def fail(net):
        raise pp.LoadflowNotConverged("made to fail")

    monkeypatch.setattr(powerflow, "run_ac", fail)
    with pytest.raises(RuntimeError, match="did not converge on 20 draws of case14"):
        powerflow.sample("case14", seed=3)


def test_generation_is_seeded_cached_and_independent_of_processes(tmp_path, monkeypatch):
    cache = tmp_path / "samples.pt"
    grids = ("case14", "case30")
    serial = powerflow.power_flow_graphs(grids, 3, seed=4, cache=cache)
    parallel = powerflow.power_flow_graphs(grids, 3, seed=4, workers=2)
    other = powerflow.power_flow_graphs(grids, 3, seed=5)
    assert [powerflow.grid_name(g) for g in serial] == ["case14", "case30", "case14"]
    for a, b in zip(serial, parallel):
        assert torch.equal(a.y, b.y) and torch.equal(a.x, b.x) and torch.equal(a.load_scale, b.load_scale)
    assert not torch.equal(serial[0].y, other[0].y)

    def no_generation(job):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(powerflow, "_make", no_generation)
    cached = powerflow.power_flow_graphs(grids, 3, seed=4, cache=cache)
    assert all(torch.equal(a.y, b.y) and torch.equal(a.dc_y, b.dc_y) for a, b in zip(serial, cached))
    with pytest.raises(AssertionError, match="regenerated"):  # other arguments: the cache does not apply
        powerflow.power_flow_graphs(grids, 3, seed=6, cache=cache)


def test_unknown_grids_and_wrong_factors_are_refused():
    with pytest.raises(ValueError, match="unknown grid 'case7'"):
        powerflow.sample("case7", seed=0)
    with pytest.raises(ValueError, match="case14 has 11 load rows; got 2 load_scale factors"):
        powerflow.scaled_grid("case14", np.ones(2), np.ones(4), np.ones(0))


def test_metrics_against_independent_computations(samples):
    from convergent.tasks import get_task

    task = get_task("powerflow")
    batch = Batch.from_data_list([samples["case14"], samples["case118"]])
    perfect = task.metrics(batch.y, batch)
    assert perfect["vm_mae"] == 0 and perfect["va_mae"] == 0 and perfect["va_relative_error"] == 0
    shifted = task.metrics(batch.y + torch.tensor([0.2, 0.01]), batch)
    assert shifted["vm_mae"] == pytest.approx(0.2 * powerflow.VM_SCALE, rel=1e-5)
    assert shifted["va_mae"] == pytest.approx(math.degrees(0.01), rel=1e-4)
    dc = task.metrics(batch.dc_y, batch)
    assert dc["vm_mae"] == pytest.approx(perfect["dc_vm_mae"]) and dc["va_mae"] == pytest.approx(perfect["dc_va_mae"])
    vm = 1 + powerflow.VM_SCALE * batch.y[:, 0].double()
    assert perfect["dc_vm_mae"] == pytest.approx((vm - 1).abs().mean().item())
    assert task.classical_seconds(batch) > 0


def test_train_and_eval_commands(tmp_path):
    def convergent(*arguments):
        return run_cli(*arguments, cache=tmp_path / "cache")

    out, checkpoint = tmp_path / "run", str(tmp_path / "run" / "checkpoint.pt")
    tiny = tiny_options(updates=4, eval_every=2, pool_size=3, batch_size=2, validation_graphs=2, restart_period=4)
    result = convergent("train", "powerflow", *tiny, "--out", str(out), "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["va_mae"] >= 0
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl", "learning_curve.png", "parity.png"):
        assert (out / name).is_file(), name
    graphs = powerflow.power_flow_graphs(("case9",), 2, seed=9)
    torch.save(graphs, tmp_path / "mine.pt")
    result = convergent("eval", "powerflow", "--checkpoint", checkpoint, "--sets", "c", "--graphs",
                        str(tmp_path / "mine.pt"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["c"]["graphs"] == 30 and report["c"]["dc_va_mae"] > 0
    mine = report[str(tmp_path / "mine.pt")]
    assert mine["graphs"] == 2 and mine["classical_seconds"] > 0 and mine["vm_mae"] >= 0
    assert (tmp_path / "cache" / "powerflow-test-c.pt").is_file()
    assert "%|" in result.stderr, "generating set c shows a progress bar"
    (tmp_path / "cache" / "powerflow-test-c.pt").unlink()
    result = convergent("eval", "powerflow", "--checkpoint", checkpoint, "--sets", "c", "--quiet")
    assert result.returncode == 0 and "%|" not in result.stderr, result.stderr


def test_graphs_without_what_the_metrics_need_are_refused(samples):
    from convergent.tasks import get_task

    task = get_task("powerflow")
    graph = samples["case14"].clone()
    task.check_graph(graph)
    del graph.dc_y, graph.load_scale
    with pytest.raises(ValueError, match="needs dc_y, load_scale besides"):
        task.check_graph(graph)
    graph = samples["case14"].clone()
    graph.x = graph.x[:, :6]
    with pytest.raises(ValueError, match=r"9 node features.*\(got 6, 7 and 2\)"):
        task.check_graph(graph)


def test_without_pandapower_the_task_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandapower", None)  # makes `import pandapower` fail
    from convergent.tasks import get_task

    with pytest.raises(ImportError, match=r"pip install -e '\.\[power\]'"):
        get_task("powerflow")
    assert not powerflow.available()
