"""Baselines MPNN, IGNN and SSE: shapes, batching, learning, IGNN's fixed point and implicit
gradient, SSE's last-step gradient, bad input."""

import pytest
import torch
from torch.func import functional_call
from torch.nn.functional import mse_loss
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from convergent.models import IGNN, MPNN, SSE, AttentionLayer
from convergent.models.ignn import project_rows_onto_l1_ball
from convergent.systems import linear_graph_systems

BASELINES = [MPNN, IGNN, SSE]


def small_model(cls, **options):
    torch.manual_seed(0)
    defaults = dict(edge_channels=1, hidden_channels=8)
    if cls is IGNN:
        defaults["tol"] = 1e-12
    return cls(4, 2, **{**defaults, **options}).double()


def as_double(graph):
    return graph.x.double(), graph.edge_index, graph.edge_attr.double()


@pytest.fixture(scope="module")
def graphs():
    return linear_graph_systems(3, min_nodes=3, max_nodes=8, seed=3)


def dense_adjacency(edge_index, num_nodes):
    """``Â[t, s] = (number of edges s → t) / indeg(t)`` by a plain loop."""
    adjacency = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
    for source, target in edge_index.T.tolist():
        adjacency[target, source] += 1.0
    return adjacency / adjacency.sum(1, keepdim=True).clamp(min=1.0)


# --------------------------------------------------------------------------- all three


@pytest.mark.parametrize("cls", BASELINES)
def test_batch_equals_graphs_one_by_one(graphs, cls):
    model = small_model(cls)
    batch = Batch.from_data_list(graphs)
    together = model(*as_double(batch), batch.batch)
    assert together.shape == (batch.num_nodes, 2)
    alone = torch.cat([model(*as_double(g)) for g in graphs])
    torch.testing.assert_close(together, alone, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("cls", BASELINES)
def test_learns_the_sum_of_in_edge_features(cls):
    """Within 150 full-batch Adam steps the training MSE falls below a quarter of the
    target's variance, the MSE of the best constant; IGNN projects after every step."""
    data = Batch.from_data_list(linear_graph_systems(16, min_nodes=5, max_nodes=10, seed=1))
    target = scatter(data.edge_attr, data.edge_index[1], 0, data.num_nodes, reduce="sum")
    torch.manual_seed(0)
    model = cls(4, 1, edge_channels=1, hidden_channels=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = mse_loss(model(data.x, data.edge_index, data.edge_attr, data.batch), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if isinstance(model, IGNN):
            model.project()
    assert loss.item() <= target.var(unbiased=False).item() / 4


@pytest.mark.parametrize("cls", BASELINES)
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, ei, ea: (x[:, :3], ei, ea), r"`x` must have shape \[N, 4\]"),
        (lambda x, ei, ea: (x.long(), ei, ea), "`x` must be a floating-point tensor"),
        (lambda x, ei, ea: (x, ei, None), "`edge_attr` of shape"),
        (lambda x, ei, ea: (x, ei, ea.repeat(1, 2)), r"`edge_attr` must have shape \[E, edge_channels\]"),
        (lambda x, ei, ea: (x, ei + 100, ea), "`edge_index` refers to node"),
    ],
)
def test_bad_input_raises_a_clear_error(graphs, cls, change, message):
    with pytest.raises(ValueError, match=message):
        small_model(cls)(*change(*as_double(graphs[0])))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: MPNN(4, 1, num_layers=0), "`num_layers`"),
        (lambda: IGNN(4, 1, kappa=1.0), "`kappa` must be in"),
        (lambda: IGNN(4, 1, tol=0.0), "`tol`"),
        (lambda: IGNN(4, 1, max_iter=0), "`max_iter`"),
        (lambda: SSE(4, 1, alpha=0.0), "`alpha` must be in"),
        (lambda: SSE(4, 1, num_steps=-1), "`num_steps`"),
    ],
)
def test_bad_settings_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --------------------------------------------------------------------------- MPNN


def test_mpnn_adds_one_hidden_attention_layer_per_unit_of_depth():
    def count(module):
        return sum(p.numel() for p in module.parameters())

    hidden_layer = count(AttentionLayer(16, 16, 16))
    sizes = [count(MPNN(4, 1, edge_channels=1, hidden_channels=16, num_layers=depth)) for depth in (1, 3, 6, 12)]
    assert [size - sizes[0] for size in sizes] == [0, 2 * hidden_layer, 5 * hidden_layer, 11 * hidden_layer]


# --------------------------------------------------------------------------- IGNN


def test_ignn_without_edges_gives_relu_of_the_input_term(graphs):
    model = small_model(IGNN)
    x = graphs[0].x.double()
    no_edges = torch.zeros(2, 0, dtype=torch.long)
    h = model.embed(x, no_edges, torch.zeros(0, 1, dtype=torch.float64))
    torch.testing.assert_close(h, torch.relu(model.node_input(x)))
    assert model.last_iterations == 2  # T(0), then a step that changes nothing


def test_ignn_output_is_a_fixed_point(graphs):
    model = small_model(IGNN, tol=1e-5)
    batch = Batch.from_data_list(graphs)
    x, edge_index, edge_attr = as_double(batch)
    with torch.no_grad():
        h = model.embed(x, edge_index, edge_attr, batch.batch)
        step = model.fixed_point_map(x, edge_index, edge_attr)
        scale = torch.maximum(step(torch.zeros_like(h)).abs().max(), h.abs().max())
    assert 1 < model.last_iterations < model.max_iter
    assert (step(h) - h).abs().max() <= 1e-5 * scale


def test_ignn_projection_bounds_w_by_kappa_over_the_perron_frobenius_eigenvalue(graphs):
    model = small_model(IGNN, kappa=0.95)
    with torch.no_grad():
        model.weight.normal_(0.0, 3.0)
        model.weight[0] = 0.1 / model.state_channels  # a row inside the ball stays as it is
    unprojected = model.weight.detach().clone()
    x, edge_index, edge_attr = as_double(graphs[0])
    before = model(x, edge_index, edge_attr)  # the forward pass projects on the fly
    model.project()
    adjacency = dense_adjacency(edge_index, x.shape[0])
    perron_frobenius = torch.linalg.eigvals(adjacency.abs()).abs().max().item()
    assert model.weight.abs().sum(1).max() <= 0.95 / perron_frobenius + 1e-12
    torch.testing.assert_close(model.weight[0], unprojected[0], rtol=0, atol=0)
    torch.testing.assert_close(model(x, edge_index, edge_attr), before)


def test_row_projection_is_the_euclidean_projection_onto_the_l1_ball():
    weight = torch.randn(5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    projected = project_rows_onto_l1_ball(weight, 1.5)
    for row, result in zip(weight, projected):
        low, high = 0.0, row.abs().max().item()  # the threshold θ with Σ max(|w| − θ, 0) = radius
        for _ in range(200):
            middle = (low + high) / 2
            low, high = (middle, high) if (row.abs() - middle).clamp(min=0).sum() > 1.5 else (low, middle)
        torch.testing.assert_close(result, row.sign() * (row.abs() - low).clamp(min=0))


def parameter_gradients(loss, model, *inputs):
    return torch.autograd.grad(loss, [*model.parameters(), *inputs])


def test_ignn_implicit_gradient_matches_unrolled_iteration(graphs):
    model = small_model(IGNN)
    batch = Batch.from_data_list(graphs[:2])
    x, edge_index, edge_attr = as_double(batch)
    x.requires_grad_(True)
    weights = torch.randn(batch.num_nodes, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    implicit = parameter_gradients((model(x, edge_index, edge_attr, batch.batch) * weights).sum(), model, x)
    assert model.last_iterations < 100
    step = model.fixed_point_map(x, edge_index, edge_attr)
    h = torch.zeros(batch.num_nodes, model.state_channels, dtype=torch.float64)
    for _ in range(300):
        h = step(h)
    unrolled = parameter_gradients((model.decoder(h) * weights).sum(), model, x)
    for grad, reference in zip(implicit, unrolled):
        torch.testing.assert_close(grad, reference, rtol=1e-4, atol=1e-10)


def test_ignn_gradcheck_on_a_tiny_graph():
    torch.manual_seed(0)
    model = IGNN(3, 1, edge_channels=1, hidden_channels=4, state_channels=3, tol=1e-12).double()
    with torch.no_grad():
        model.weight.mul_(0.5)  # strictly inside the ball, where the projection is the identity
    edge_index = torch.tensor([[0, 1, 2, 3, 0], [1, 2, 3, 0, 2]])
    x = torch.randn(4, 3, dtype=torch.float64)
    edge_attr = torch.rand(5, 1, dtype=torch.float64)
    names = [name for name, _ in model.named_parameters()]

    def output(x, edge_attr, *parameters):
        return functional_call(model, dict(zip(names, parameters)), (x, edge_index, edge_attr))

    inputs = (x, edge_attr, *(p.detach().clone() for p in model.parameters()))
    assert torch.autograd.gradcheck(output, tuple(t.requires_grad_(True) for t in inputs))


def test_ignn_warns_when_max_iter_comes_first(graphs):
    with pytest.warns(RuntimeWarning, match="did not reach tol=1e-12 within max_iter=1"):
        small_model(IGNN, max_iter=1)(*as_double(graphs[0]))


# --------------------------------------------------------------------------- SSE


def test_sse_gradient_flows_only_through_the_last_step(graphs):
    model = small_model(SSE, num_steps=5)
    x, edge_index, edge_attr = as_double(graphs[0])
    weights = torch.randn(x.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    gradients = parameter_gradients((model(x, edge_index, edge_attr) * weights).sum(), model)
    assert all(grad.abs().sum() > 0 for grad in gradients)

    def state(steps_with_grad):
        operator = model.fixed_point_map(x, edge_index, edge_attr)
        h = torch.zeros(x.shape[0], model.state_channels, dtype=torch.float64)
        for step in range(6):
            with torch.set_grad_enabled(step >= 6 - steps_with_grad):
                h = 0.5 * h + 0.5 * operator(h)
        return h

    last_step = parameter_gradients((model.decoder(state(1)) * weights).sum(), model)
    for grad, reference in zip(gradients, last_step):
        torch.testing.assert_close(grad, reference)
    unrolled = parameter_gradients((model.decoder(state(6)) * weights).sum(), model)
    assert not all(torch.allclose(grad, reference) for grad, reference in zip(gradients, unrolled))


def test_sse_output_depends_on_the_number_of_steps(graphs):
    model = small_model(SSE)
    inputs = as_double(graphs[0])
    with torch.no_grad():
        many = model(*inputs)
        model.num_steps = 1
        few = model(*inputs)
    assert not torch.allclose(many, few)
