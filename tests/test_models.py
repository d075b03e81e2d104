"""CGS and GraphCGS: shapes, batching, invariances, solver agreement, learning, bad input."""

import pytest
import torch
from torch.nn.functional import mse_loss
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from convergent import CGS, GraphCGS
from convergent.models import AttentionEncoder
from convergent.systems import linear_graph_systems


def small_model(cls=CGS, **options):
    torch.manual_seed(0)
    defaults = dict(edge_channels=1, hidden_channels=16, num_heads=4, gamma=0.8, tol=1e-10)
    return cls(4, 2, **{**defaults, **options}).double()


def as_double(batch):
    return batch.x.double(), batch.edge_index, batch.edge_attr.double(), batch.batch


@pytest.fixture(scope="module")
def graphs():
    return linear_graph_systems(5, min_nodes=3, max_nodes=12, seed=3)


@pytest.mark.parametrize("normalization", ["degree", "softmax"])
@pytest.mark.parametrize("nonlinearity", [None, "tanh"])
@pytest.mark.parametrize("extra", [{}, {"graph_context": True, "stages": 2}], ids=["", "graph context, 2 stages"])
def test_batch_equals_graphs_one_by_one(graphs, normalization, nonlinearity, extra):
    model = small_model(normalization=normalization, nonlinearity=nonlinearity, **extra)
    batch = Batch.from_data_list(graphs)
    together = model(*as_double(batch))
    assert model.last_solve.residual.shape == (len(graphs), 4)
    alone = torch.cat([model(g.x.double(), g.edge_index, g.edge_attr.double()) for g in graphs])
    torch.testing.assert_close(together, alone, rtol=1e-8, atol=1e-8)


def test_node_outputs_follow_a_relabelling_and_graph_outputs_do_not_change(graphs):
    graph = graphs[0]
    permutation = torch.randperm(graph.num_nodes, generator=torch.Generator().manual_seed(1))
    inverse = torch.argsort(permutation)
    x, edge_index, edge_attr = graph.x.double(), graph.edge_index, graph.edge_attr.double()
    relabelled = (x[permutation], inverse[edge_index], edge_attr)
    node_model, graph_model = small_model(), small_model(GraphCGS)
    torch.testing.assert_close(node_model(*relabelled), node_model(x, edge_index, edge_attr)[permutation])
    torch.testing.assert_close(graph_model(*relabelled), graph_model(x, edge_index, edge_attr))


@pytest.mark.parametrize("stages", [1, 2])
def test_a_source_driven_model_predicts_zero_where_no_source_reaches(graphs, stages):
    # Two graphs in one batch; only the first has a non-zero source feature (column 2).
    first, second = graphs[0].clone(), graphs[1].clone()
    second.x[:, 2] = 0.0
    batch = Batch.from_data_list([first, second])
    driven, plain = small_model(source_channel=2, stages=stages), small_model(stages=stages)
    out, alone = driven(*as_double(batch)), plain(*as_double(batch))
    unreached = batch.batch == 1
    assert torch.equal(out[unreached], torch.zeros_like(out[unreached]))
    assert out[~unreached].abs().min() > 0 and alone[unreached].abs().min() > 0
    with pytest.raises(ValueError, match="`source_channel` must be the index of an input feature, 0 to 3"):
        CGS(4, 1, source_channel=4)


@pytest.mark.parametrize("edge_channels", [3, 0])
def test_encoder_computes_its_defining_formula(edge_channels):
    # The encoder applies φ_e's last linear layer lazily and sums attention messages before it;
    # here every layer is computed as written: e' = φ_e([x_s, x_t, e]), α = softmax over in-edges
    # of w·e', x' = φ_n([x, Σ α e']), with an explicit loop over target nodes.
    torch.manual_seed(0)
    x, edge_index = torch.randn(12, 2, dtype=torch.double), torch.randint(0, 12, (2, 40))
    edge_index[1, -1] = 11  # node 11 has an in-edge, node 10 may have none
    edge_attr = torch.randn(40, edge_channels, dtype=torch.double)
    encoder = AttentionEncoder(2, edge_channels, 8, num_layers=2).double()
    node, edge = encoder(x, edge_index, edge_attr)
    expected_node, expected_edge = x, edge_attr
    for layer in encoder.layers:
        inputs = torch.cat([expected_node[edge_index[0]], expected_node[edge_index[1]], expected_edge], dim=1)
        expected_edge = layer.edge_output(layer.edge_input(inputs))
        logits = layer.attention(expected_edge).squeeze(1)
        message = torch.zeros(12, 8, dtype=torch.double)
        for t in range(12):
            into = edge_index[1] == t
            if into.any():
                message[t] = (torch.softmax(logits[into], 0).unsqueeze(1) * expected_edge[into]).sum(0)
        expected_node = layer.node_update(torch.cat([expected_node, message], dim=1))
    torch.testing.assert_close(node, expected_node)
    torch.testing.assert_close(edge.tensor(), expected_edge)
    scores = torch.nn.Linear(8, 5).double()
    torch.testing.assert_close(edge.linear(scores.weight, scores.bias), scores(expected_edge))


@pytest.mark.parametrize("readout", ["sum", "mean"])
def test_graph_model_gives_one_row_per_graph(graphs, readout):
    model = small_model(GraphCGS, readout=readout)
    out = model(*as_double(Batch.from_data_list(graphs)))
    assert out.shape == (len(graphs), 2)
    assert model(graphs[0].x.double(), graphs[0].edge_index, graphs[0].edge_attr.double()).shape == (1, 2)


def test_every_solver_gives_the_same_outputs_and_parameter_gradients(graphs):
    batch = as_double(Batch.from_data_list(graphs))
    results = {}
    for solver in ["direct", "picard", "anderson"]:
        model = small_model(solver=solver)
        model(*batch).square().sum().backward()
        assert model.last_solve.solver == solver and model.last_solve.backward.converged.all()
        results[solver] = (model(*batch), [p.grad for p in model.parameters()])
    for solver in ["picard", "anderson"]:
        torch.testing.assert_close(results[solver][0], results["direct"][0], rtol=1e-8, atol=1e-9)
        for grad, reference in zip(results[solver][1], results["direct"][1]):
            torch.testing.assert_close(grad, reference, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("stages", [1, 2])
def test_parameter_gradients_match_finite_differences(graphs, stages):
    """With two stages the first stage's gradient passes through both fixed points."""
    model = small_model(normalization="softmax", nonlinearity="tanh", solver="anderson", stages=stages)
    batch = as_double(Batch.from_data_list(graphs[:2]))
    parameter = model.embedding.edge_score.weight
    model(*batch).sum().backward()
    direction = torch.randn_like(parameter)
    step = 1e-6
    with torch.no_grad():
        parameter += step * direction
        up = model(*batch).sum()
        parameter -= 2 * step * direction
        down = model(*batch).sum()
        parameter += step * direction
    finite_difference = (up - down) / (2 * step)
    torch.testing.assert_close((parameter.grad * direction).sum(), finite_difference, rtol=1e-5, atol=1e-8)


def test_fixed_point_exists_whatever_the_parameters(graphs):
    model = small_model(normalization="degree", solver="picard")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1e4)
    out = model(*as_double(Batch.from_data_list(graphs)))
    assert torch.isfinite(out).all() and model.last_solve.converged.all()


def test_cgs_learns_a_linear_graph_system():
    """Test MSE falls at least 10× within 300 updates on unseen graphs."""
    torch.manual_seed(0)
    train = linear_graph_systems(256, alpha=0.8, seed=1)
    test = next(iter(DataLoader(linear_graph_systems(64, alpha=0.8, seed=2), batch_size=64)))
    model = CGS(4, 1, edge_channels=1, hidden_channels=32, num_heads=8, gamma=0.8)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def test_loss():
        with torch.no_grad():
            return mse_loss(model(test.x, test.edge_index, test.edge_attr, test.batch), test.y).item()

    before, steps = test_loss(), 0
    while steps < 300:
        for batch in DataLoader(train, batch_size=32, shuffle=True):
            loss = mse_loss(model(batch.x, batch.edge_index, batch.edge_attr, batch.batch), batch.y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    assert test_loss() <= before / 10


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, ei, ea: (x[:, :3], ei, ea), r"`x` must have shape \[N, 4\]"),
        (lambda x, ei, ea: (x.masked_fill(x > 1, float("nan")), ei, ea), "`x` must be finite"),
        (lambda x, ei, ea: (x, ei, None), "`edge_attr` of shape"),
        (lambda x, ei, ea: (x, ei, ea.repeat(1, 2)), r"`edge_attr` must have shape \[E, edge_channels\]"),
        (lambda x, ei, ea: (x, ei + 100, ea), "`edge_index` refers to node"),
        (lambda x, ei, ea: (x.long(), ei, ea), "`x` must be a floating-point tensor"),
    ],
)
def test_bad_model_input_raises_a_clear_error(graphs, change, message):
    g = graphs[0]
    with pytest.raises(ValueError, match=message):
        small_model()(*change(g.x.double(), g.edge_index, g.edge_attr.double()))


def test_bad_model_settings_raise():
    with pytest.raises(ValueError, match="`normalization`"):
        CGS(4, 1, normalization="l2")
    with pytest.raises(ValueError, match="`gamma`"):
        CGS(4, 1, gamma=1.0)
    with pytest.raises(ValueError, match="`readout`"):
        GraphCGS(4, 1, readout="max")
    with pytest.raises(ValueError, match="`stages`"):
        CGS(4, 1, stages=0)
    with pytest.raises(ValueError, match="`graph_context`"):
        GraphCGS(4, 1, graph_context=True)
