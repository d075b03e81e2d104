"""Heat conduction with scikit-fem: the ground truth against independent solves, the exact CGS form
on meshes without obtuse angles, the graphs, the task and its commands."""

import json
import sys

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
import torch
from torch_geometric.data import Batch

import convergent
from convergent.systems import heat
from test_training import run_cli, tiny_options

pytestmark = pytest.mark.skipif(not heat.available(), reason="scikit-fem is not installed (pip install -e '.[heat]')")



def hand_assembled_temperature(graph):
    """P1 temperatures from a cotangent-formula assembly of ours and SciPy's sparse LU (no scikit-fem)."""
    pos, face, conductivity, source, boundary, boundary_temperature = heat.problem_arrays(graph)
    corners = pos[face.T]  # [F, 3, 2]
    opposite = np.roll(corners, -1, axis=1) - np.roll(corners, 1, axis=1)  # edge facing each corner
    area = 0.5 * np.abs(opposite[:, 0, 0] * opposite[:, 1, 1] - opposite[:, 0, 1] * opposite[:, 1, 0])
    local_stiffness = np.einsum("fid,fjd->fij", opposite, opposite) * (conductivity / (4 * area))[:, None, None]
    local_mass = (np.ones((3, 3)) + np.eye(3))[None] * (area / 12)[:, None, None]
    rows, cols = np.repeat(face.T, 3, axis=1).ravel(), np.tile(face.T, 3).ravel()
    size = len(pos)
    stiffness = scipy.sparse.csr_matrix((local_stiffness.ravel(), (rows, cols)), shape=(size, size))
    mass = scipy.sparse.csr_matrix((local_mass.ravel(), (rows, cols)), shape=(size, size))
    free, fixed = np.flatnonzero(~boundary), np.flatnonzero(boundary)
    temperature = boundary_temperature.copy()
    right = (mass @ source)[free] - stiffness[free][:, fixed] @ boundary_temperature[fixed]
    temperature[free] = scipy.sparse.linalg.splu(stiffness[free][:, free].tocsc()).solve(right)
    return temperature


@pytest.fixture(scope="module")
def problems():
    """A jittered problem on each domain."""
    return {kind: heat.heat_problem(150, kind, seed=7) for kind in heat.KINDS}


@pytest.mark.parametrize("kind", heat.KINDS)
def test_scikit_fem_temperatures_equal_a_hand_assembled_solve(problems, kind):
    graph = problems[kind]
    expected = hand_assembled_temperature(graph)
    computed = heat.solve_temperature(*heat.problem_arrays(graph))
    np.testing.assert_allclose(computed, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    torch.testing.assert_close(graph.y[:, 0], torch.as_tensor(expected, dtype=torch.float32))


def test_linear_boundary_temperatures_give_the_same_linear_field_inside():
    """Constant k, f = 0 and T = a + b·x on the boundary: P1 and the interpolation feature are exact."""
    points, triangles, boundary = heat.grid_mesh(200, "lshape", np.random.default_rng(3))
    linear = 0.5 + 2 * points[:, 0] - 3 * points[:, 1]
    boundary_temperature = np.where(boundary, linear, 0.0)
    temperature = heat.solve_temperature(points, triangles.T, np.full(len(triangles), 2.5), np.zeros(len(points)),
                                         boundary, boundary_temperature)
    np.testing.assert_allclose(temperature, linear, atol=1e-10)
    graph = heat.as_graph(points, triangles.T, np.full(len(triangles), 2.5), np.zeros(len(points)), boundary,
                          boundary_temperature, temperature)
    np.testing.assert_allclose(graph.x[:, heat.INTERPOLATION_FEATURE].numpy(), linear, atol=1e-5)


@pytest.mark.parametrize("kind", heat.KINDS)
def test_hand_set_cgs_reproduces_scikit_fem_without_obtuse_angles(kind):
    graph = heat.heat_problem(300, kind, seed=11, jitter=0.0)
    form = heat.cgs_form(graph)
    assert 0 < form["gamma"] < 1 and (form["edge_weight"] >= 0).all()
    rows = torch.zeros(graph.num_nodes, dtype=torch.float64).index_add_(0, form["edge_index"][1], form["edge_weight"])
    assert rows.max() <= 1 + 1e-12
    q, info = convergent.solve(form["edge_index"], form["edge_weight"], form["bias"], gamma=form["gamma"],
                               solver="anderson", tol=1e-12)
    reference = heat.solve_temperature(*heat.problem_arrays(graph))
    error = np.abs((q * form["scale"]).numpy() - reference).max() / np.abs(reference).max()
    assert error < 1e-6, f"{kind}: relative error {error:.2e} after {info.iterations.max()} iterations"


def test_obtuse_angles_leave_no_cgs_form(problems):
    graph = problems["square"]
    assert (graph.edge_attr[:, 2] < 0).any()  # the jitter made some Jacobi weights negative
    with pytest.raises(ValueError, match="obtuse"):
        heat.cgs_form(graph)


@pytest.mark.parametrize("kind", heat.KINDS)
def test_graphs_follow_the_documented_scaling(problems, kind):
    graph = problems[kind]
    assert graph.x.shape == (graph.num_nodes, 8) and graph.edge_attr.shape[1] == 3
    assert 0 <= graph.pos.min() and graph.pos.max() <= 1
    boundary, (x, y) = graph.boundary, graph.pos.T
    on_sides = (x == 0) | (y == 0) | (x == 1) | (y == 1)
    if kind == "lshape":
        on_sides |= ((x == 0.5) & (y >= 0.5)) | ((y == 0.5) & (x >= 0.5))
        assert not ((x > 0.5) & (y > 0.5)).any()
    assert torch.equal(boundary, on_sides)
    assert torch.equal(graph.x[:, 2].bool(), boundary) and (graph.x[~boundary, 3] == 0).all()
    torch.testing.assert_close(graph.y[boundary, 0], graph.x[boundary, 3])
    torch.testing.assert_close(graph.x[:, 5].double(), graph.source / heat.SOURCE_SCALE, check_dtype=False)
    half = graph.edge_index.shape[1] // 2
    assert torch.equal(graph.edge_index[:, half:], graph.edge_index[:, :half].flip(0))
    assert graph.edge_attr[:half, 0].mean().item() == pytest.approx(1, rel=1e-5)
    triangles = [set(corners) for corners in graph.face.T.tolist()]
    beside = [[k for k, corners in zip(graph.conductivity.tolist(), triangles) if {s, t} <= corners]
              for s, t in graph.edge_index.T.tolist()]
    assert {len(ks) for ks in beside} == {1, 2}
    torch.testing.assert_close(graph.edge_attr[:, 1], torch.tensor([np.log(np.mean(ks)) for ks in beside]),
                               check_dtype=False)
    # Rows of K sum to 0, so the Jacobi weights into every vertex sum to 1.
    into = torch.zeros(graph.num_nodes).index_add_(0, graph.edge_index[1], graph.edge_attr[:, 2])
    torch.testing.assert_close(into, torch.ones(graph.num_nodes))
    assert (graph.x[:, 6].exp() >= graph.conductivity.min() - 1e-5).all()  # a mean of the conductivities
    assert (graph.x[:, 6].exp() <= graph.conductivity.max() + 1e-5).all()


def test_finer_meshes_sample_the_same_problem():
    """Without jitter, a grid of side 2s − 1 holds the vertices of side s; the temperatures there converge."""
    coarse, fine, finest = (heat.heat_problem(side**2, "square", seed=5, jitter=0.0) for side in (9, 17, 33))

    def at_coarse_vertices(graph):
        index = {tuple(np.round(p, 9)): i for i, p in enumerate(graph.pos.numpy())}
        return graph.y[[index[tuple(np.round(p, 9))] for p in coarse.pos.numpy()], 0]

    torch.testing.assert_close(at_coarse_vertices(finest)[coarse.boundary], coarse.y[coarse.boundary, 0])
    error_coarse = (at_coarse_vertices(finest) - coarse.y[:, 0]).abs().max()
    error_fine = (at_coarse_vertices(finest) - at_coarse_vertices(fine)).abs().max()
    assert error_fine < error_coarse / 2


def test_generation_is_seeded_and_cached(tmp_path, monkeypatch):
    cache = tmp_path / "heat.pt"
    first = heat.heat_graphs(3, vertices=(50, 80), seed=4, cache=cache)
    again = heat.heat_graphs(3, vertices=(50, 80), seed=4)
    other = heat.heat_graphs(3, vertices=(50, 80), seed=5)
    for a, b in zip(first, again):
        assert torch.equal(a.pos, b.pos) and torch.equal(a.face, b.face) and torch.equal(a.y, b.y)
    assert not torch.equal(first[0].y[:5], other[0].y[:5])

    def no_generation(*arguments):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(heat, "_make", no_generation)
    cached = heat.heat_graphs(3, vertices=(50, 80), seed=4, cache=cache)
    assert all(torch.equal(a.y, b.y) and torch.equal(a.conductivity, b.conductivity) for a, b in zip(first, cached))
    with pytest.raises(AssertionError, match="regenerated"):  # other arguments: the cache does not apply
        heat.heat_graphs(3, vertices=(50, 80), seed=4, jitter=0.1, cache=cache)


def test_metrics_against_independent_computations(problems):
    from convergent.tasks import get_task

    task = get_task("heat")
    graphs = list(problems.values())
    batch = Batch.from_data_list(graphs)
    perfect = task.metrics(batch.y, batch)
    assert perfect["mse"] == 0 and perfect["relative_error"] == 0
    boundary_mean = torch.cat([torch.full((g.num_nodes, 1), g.boundary_temperature[g.boundary].mean().item())
                               for g in graphs])
    assert task.metrics(boundary_mean, batch)["relative_error"] == pytest.approx(1)
    guess = batch.x[:, heat.INTERPOLATION_FEATURE:heat.INTERPOLATION_FEATURE + 1]
    assert task.metrics(guess, batch)["relative_error"] == pytest.approx(perfect["interpolation_relative_error"])
    assert 0 < perfect["interpolation_relative_error"] < 1
    assert task.classical_seconds(batch) > 0


def test_train_and_eval_commands_on_user_graphs(tmp_path):
    out, checkpoint = tmp_path / "run", str(tmp_path / "run" / "checkpoint.pt")
    tiny = tiny_options(updates=4, eval_every=2, pool_size=4, batch_size=2, validation_graphs=2, restart_period=4)
    result = run_cli("train", "heat", *tiny, "--out", str(out), "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["relative_error"] >= 0
    assert all((out / name).is_file() for name in ("checkpoint.pt", "metrics.jsonl", "parity.png", "solves.csv"))
    graphs = heat.heat_graphs(2, vertices=(60, 90), seed=9)
    torch.save(graphs, tmp_path / "mine.pt")
    result = run_cli("eval", "heat", "--checkpoint", checkpoint, "--sets", "", "--graphs",
                                str(tmp_path / "mine.pt"), "--json")
    assert result.returncode == 0, result.stderr
    mine = json.loads(result.stdout)[str(tmp_path / "mine.pt")]
    assert mine["graphs"] == 2 and mine["classical_seconds"] > 0 and 0 < mine["interpolation_relative_error"]
    del graphs[1].conductivity
    torch.save(graphs, tmp_path / "broken.pt")
    result = run_cli("eval", "heat", "--checkpoint", checkpoint, "--sets", "", "--graphs",
                                str(tmp_path / "broken.pt"))
    assert result.returncode == 2 and "conductivity" in result.stderr and "Traceback" not in result.stderr


def test_without_scikit_fem_the_task_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "skfem", None)  # makes `import skfem` fail
    from convergent.tasks import get_task

    with pytest.raises(ImportError, match=r"pip install -e '\.\[heat\]'"):
        get_task("heat")
    assert not heat.available()
