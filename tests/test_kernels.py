"""The compiled product gives what the pure-PyTorch path gives: forward, gradients, threads."""

import pytest
import torch
from torch_geometric.utils import scatter

import convergent
from convergent import _kernels
from convergent.solvers import picard
from convergent.sparse_map import SparseMaps

pytestmark = pytest.mark.skipif(_kernels.numba is None, reason="numba is not installed")


def random_maps(num_nodes, num_edges, num_heads, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=generator)
    edge_index[1, :3] = 0  # a row with several edges; others stay empty
    scores = torch.rand(num_edges, num_heads, generator=generator, dtype=dtype)
    weight = convergent.degree_normalize(scores, edge_index, num_nodes)
    bias = torch.randn(num_nodes, num_heads, generator=generator, dtype=dtype)
    return edge_index, weight, bias


def index_add_product(edge_index, weight, x):
    return torch.zeros_like(x).index_add_(0, edge_index[1], weight * x[edge_index[0]])


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_edges", [50, 40_000], ids=["serial size", "parallel size"])
def test_sorted_product_equals_index_add(dtype, num_edges, threads):
    edge_index, weight, _ = random_maps(5_000, num_edges, 16, dtype)
    x = torch.randn(5_000, 16, dtype=dtype)
    maps, order = SparseMaps.by_target(edge_index[0], edge_index[1], weight, 5_000)
    assert maps.indptr is not None and order is not None
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(maps.matmul(x), index_add_product(edge_index, weight, x), **tolerance)
    transposed = maps.transpose()
    torch.testing.assert_close(transposed.matmul(x), index_add_product(edge_index.flip(0), weight, x), **tolerance)


def test_already_sorted_edges_are_not_copied():
    edge_index, weight, _ = random_maps(100, 400, 2, torch.float64)
    order = torch.argsort(edge_index[1], stable=True)
    edge_index, weight = edge_index[:, order], weight[order].contiguous()
    maps, reordering = SparseMaps.by_target(edge_index[0], edge_index[1], weight, 100)
    assert reordering is None and maps.weight.data_ptr() == weight.data_ptr()


@pytest.mark.parametrize("solver", ["picard", "anderson"])
@pytest.mark.parametrize("nonlinearity", [None, "tanh"])
def test_solve_and_gradients_equal_the_pure_pytorch_path(solver, nonlinearity, threads, monkeypatch):
    edge_index, weight, bias = random_maps(3_000, 30_000, 16, torch.float64, seed=1)
    upstream = torch.randn_like(bias)

    def run():
        w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
        h, _ = convergent.solve(edge_index, w, b, gamma=0.9, solver=solver, tol=1e-12, nonlinearity=nonlinearity)
        (h * upstream).sum().backward()
        return h, w.grad, b.grad

    compiled = run()
    monkeypatch.setattr(_kernels, "numba", None)
    reference = run()
    for got, expected in zip(compiled, reference):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)


def test_lapack_stays_correct_after_the_parallel_kernel(threads):
    """numba's OpenMP layer beside PyTorch's once made torch.linalg.solve return garbage."""
    edge_index, weight, _ = random_maps(5_000, 40_000, 16, torch.float64)
    maps, _ = SparseMaps.by_target(edge_index[0], edge_index[1], weight, 5_000)
    maps.matmul(torch.randn(5_000, 16, dtype=torch.float64))
    matrix = torch.eye(300, dtype=torch.float64) + 0.1 * torch.randn(300, 300, dtype=torch.float64)
    right = torch.randn(300, 4, dtype=torch.float64)
    solution = torch.linalg.solve(matrix, right)
    torch.testing.assert_close(matrix @ solution, right, rtol=1e-10, atol=1e-10)


def test_group_by_is_a_stable_sort():
    index = torch.randint(0, 50, (2_000,), generator=torch.Generator().manual_seed(3))
    indptr, order = _kernels.group_by(index, 60)
    torch.testing.assert_close(order, torch.argsort(index, stable=True), rtol=0, atol=0)
    torch.testing.assert_close(indptr[1:] - indptr[:-1], torch.bincount(index, minlength=60), rtol=0, atol=0)


@pytest.mark.parametrize("rows", [torch.rand(300_000, 16), torch.arange(300_000) * 7, torch.rand(5, 3).double()],
                         ids=["float32 [E, M]", "int64 [E]", "float64 small"])
def test_gather_rows_equals_index_select(rows, threads):
    order = torch.randint(0, rows.shape[0], (rows.shape[0] + 3,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(_kernels.gather_rows(rows, order), torch.index_select(rows, 0, order))


@pytest.mark.parametrize("num_edges", [50, 40_000], ids=["serial size", "parallel size"])
def test_affine_product_into_a_buffer_equals_the_pure_pytorch_path(num_edges, threads):
    edge_index, weight, bias = random_maps(5_000, num_edges, 16, torch.float64)
    x = torch.randn(5_000, 16, dtype=torch.float64)
    maps, _ = SparseMaps.by_target(edge_index[0], edge_index[1], weight, 5_000)
    buffer = torch.full_like(x, float("nan"))  # stale contents must not leak into the result
    result = maps.matmul(x, scale=0.7, bias=bias, out=buffer)
    assert result.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(result, bias + 0.7 * index_add_product(edge_index, weight, x), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(maps.matmul(x, scale=0.3), 0.3 * index_add_product(edge_index, weight, x),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("shuffled", [False, True], ids=["sorted batch", "unsorted batch"])
def test_step_norms_equal_per_graph_norms(shuffled, threads):
    generator = torch.Generator().manual_seed(4)
    batch = torch.arange(7).repeat_interleave(torch.randint(1, 9_000, (7,), generator=generator))
    if shuffled:
        batch = batch[torch.randperm(batch.numel(), generator=generator)]
    new, old = torch.randn(2, batch.numel(), 5, dtype=torch.float64, generator=generator)
    got = _kernels.step_norms(new, old, batch, 8)  # graph 7 has no nodes: zeros
    for which, (reduce, v) in enumerate([("max", new - old), ("sum", new - old), ("max", new), ("sum", new)]):
        expected = scatter(v.abs(), batch, 0, 8, reduce=reduce)
        torch.testing.assert_close(got[which], expected, rtol=1e-12, atol=0)
    single = _kernels.step_norms(new, old, None, 1)
    torch.testing.assert_close(single[1, 0], (new - old).abs().sum(0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("shuffled", [False, True], ids=["one graph", "batch"])
def test_anderson_history_kernels_equal_the_pure_pytorch_path(shuffled, threads):
    generator = torch.Generator().manual_seed(5)
    num_nodes, heads, count, graphs = 30_000, 8, 4, 3
    history = torch.randn(count, num_nodes, heads, generator=generator)
    new, mapped = torch.randn(num_nodes, heads, generator=generator), torch.randn(num_nodes, heads, generator=generator)
    batch = torch.randint(0, graphs, (num_nodes,), generator=generator) if shuffled else None
    groups = graphs if shuffled else 1
    index = batch if shuffled else torch.zeros(num_nodes, dtype=torch.long)
    expected = scatter((history * new).double(), index, 1, groups, reduce="sum")
    torch.testing.assert_close(_kernels.history_dots(history, new, batch, groups), expected, rtol=1e-5, atol=1e-6)
    weights = torch.rand(groups, heads, count, generator=generator, dtype=torch.float64)
    converged = torch.rand(groups, heads, generator=generator) < 0.3
    mixed = torch.einsum("nmj,jnm->nm", weights[index].float(), history)
    expected = torch.where(converged[index], mapped, mixed)
    out = _kernels.mix_history(weights, history, mapped, converged, batch, torch.empty_like(mapped))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("normalization", ["degree", "gated"], ids=["1-norm maps", "∞-norm maps"])
@pytest.mark.parametrize("nonlinearity", [None, "tanh"])
def test_picard_graph_by_graph_equals_picard_on_the_whole_batch(graphs, normalization, nonlinearity, threads,
                                                                monkeypatch):
    """Picard on a batch of many graphs runs graph by graph (in cache) the steps of Picard on the
    whole batch: the same values, step by step (each entry is the same sum in the same order), so
    the same solution, gradients and convergence report, and the dense solve's solution."""
    sizes = [1, 0, 9, 23, 40, 5, 17, 2, 31, 12, 8, 26]  # 0: an unused graph id
    problem = graphs.make_problem(sizes, heads=4, normalization=normalization, seed=21)
    upstream = torch.randn_like(problem.bias)
    by_graph_runs = []
    monkeypatch.setattr(_kernels, "picard_by_graph", _counting(_kernels.picard_by_graph, by_graph_runs))

    def run():
        weight, bias = problem.edge_weight.clone().requires_grad_(), problem.bias.clone().requires_grad_()
        h, info = convergent.solve(problem.edge_index, weight, bias, gamma=0.9, solver="picard", tol=1e-12,
                                   batch=problem.batch, nonlinearity=nonlinearity)
        (h * upstream).sum().backward()
        return h, weight.grad, bias.grad, info

    *by_graph, by_graph_info = run()
    assert len(by_graph_runs) == (2 if nonlinearity is None else 1)  # a callable φ: forward on the whole batch
    monkeypatch.setattr(picard, "BY_GRAPH_MIN_GRAPHS", 10**9)
    *whole, whole_info = run()
    assert len(by_graph_runs) == (2 if nonlinearity is None else 1)
    for got, expected in zip(by_graph, whole, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    for got, expected in ((by_graph_info, whole_info), (by_graph_info.backward, whole_info.backward)):
        assert bool(got.converged.all()) and got.iterations.shape == (len(sizes), 4)
        assert torch.equal(got.iterations, expected.iterations)
        torch.testing.assert_close(got.residual, expected.residual, rtol=1e-12, atol=0)  # sums split by thread
    if nonlinearity is None:
        dense = graphs.dense_solution(problem.edge_index, problem.edge_weight, problem.bias, 0.9)
        torch.testing.assert_close(by_graph[0], dense, rtol=1e-8, atol=1e-9)


def _counting(function, calls):
    def counted(*args):
        calls.append(None)
        return function(*args)
    return counted
