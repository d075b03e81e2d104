"""Compiled CPU kernels (numba) for the multi-head sparse product.

Only :mod:`convergent.sparse_map` calls these; it falls back to pure PyTorch
(``index_add_``) on other devices, when numba is missing, or under autograd.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

try:
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None


#: Below this many multiply-adds one thread does the product: waking the
#: thread pool costs more than it saves.
PARALLEL_MIN_WORK = 1 << 18


def _product_row(indptr, columns, weight, x, scale, bias, post, row, acc, slot, out):  # pragma: no cover - compiled
    # out[row] = post[row] · (bias[row] + scale · Σ_e weight[e] · x[columns[e]]) over the row's edges,
    # summed in acc[slot] (a buffer, or out itself with slot = row); `bias` and `post` may be None
    # (0 and 1): numba decides at compile time and prunes the branch.
    num_heads = out.shape[1]
    for head in range(num_heads):
        acc[slot, head] = 0.0
    for edge in range(indptr[row], indptr[row + 1]):
        column = columns[edge]
        for head in range(num_heads):
            acc[slot, head] += weight[edge, head] * x[column, head]
    for head in range(num_heads):
        value = scale * acc[slot, head]
        if bias is not None:
            value += bias[row, head]
        if post is not None:
            value *= post[row, head]
        out[row, head] = value


def _add_row_norms(new, old, row, graph, out):  # pragma: no cover - compiled
    # out[0..3, graph, m] take row `row` in: max |new − old|, Σ |new − old|, max |new|, Σ |new|.
    for head in range(new.shape[1]):
        step, size = abs(new[row, head] - old[row, head]), abs(new[row, head])
        out[0, graph, head] = max(out[0, graph, head], step)
        out[1, graph, head] += step
        out[2, graph, head] = max(out[2, graph, head], size)
        out[3, graph, head] += size


def _csr_multihead_matmul(indptr, columns, weight, x, scale, bias, out):  # pragma: no cover - compiled
    for row in numba.prange(out.shape[0]):
        _product_row(indptr, columns, weight, x, scale, bias, None, row, out, row, out)


def _graph_step(first, last, indptr, columns, weight, bias, post, scale, h, spare, acc, norms):  # pragma: no cover - compiled
    # One Picard step h ← T(h) on rows first..last (one graph), with norms[0..3, 0, m] = max and Σ
    # of |T(h) − h|, then max and Σ of |T(h)|, over those rows.
    norms[:] = 0.0
    for row in range(first, last):
        _product_row(indptr, columns, weight, h, scale, bias, post, row, acc, 0, spare)
        _add_row_norms(spare, h, row, 0, norms)
    for row in range(first, last):
        for head in range(h.shape[1]):
            h[row, head] = spare[row, head]


def _picard_by_graph(starts, indptr, columns, weight, bias, post, scale, inf_norm, tol, initial, max_iter,
                     h, spare, iterations, residual, converged):  # pragma: no cover - compiled
    # Picard iteration h ← post · (bias + scale · A h) from h = 0, graph g (rows starts[g] to
    # starts[g + 1]) by graph, so that a graph's weights stay in cache over its steps: first each
    # graph until all its heads meet StoppingRule's rule, then every graph on to the step where
    # the last one stopped, so that all take the steps of Picard on the whole batch. Writes h and,
    # per (g, m), the step of convergence (max_iter where never), the last residual and the flag.
    num_graphs, num_heads = starts.shape[0] - 1, h.shape[1]
    stopped = np.zeros(num_graphs, dtype=np.int64)
    for graph in numba.prange(num_graphs):
        acc = np.empty((1, num_heads), dtype=h.dtype)
        norms = np.empty((4, 1, num_heads))
        for iteration in range(1, max_iter + 1):
            _graph_step(starts[graph], starts[graph + 1], indptr, columns, weight, bias, post, scale, h, spare,
                        acc, norms)
            stopped[graph] = iteration
            done = True
            for head in range(num_heads):
                step = norms[0, 0, head] if inf_norm[head] else norms[1, 0, head]
                size = norms[2, 0, head] if inf_norm[head] else norms[3, 0, head]
                residual[graph, head] = step
                if not converged[graph, head]:
                    iterations[graph, head] = iteration
                    if step <= tol * max(initial[graph, head], size):
                        converged[graph, head] = True
                    else:
                        done = False
            if done:
                break
    steps = stopped.max() if num_graphs else 0
    for graph in numba.prange(num_graphs):
        acc = np.empty((1, num_heads), dtype=h.dtype)
        norms = np.empty((4, 1, num_heads))
        for _ in range(stopped[graph], steps):
            _graph_step(starts[graph], starts[graph + 1], indptr, columns, weight, bias, post, scale, h, spare,
                        acc, norms)
            for head in range(num_heads):
                residual[graph, head] = norms[0, 0, head] if inf_norm[head] else norms[1, 0, head]
    return steps


def _step_norms(new, old, batch, partial):  # pragma: no cover - compiled
    # partial[w, 0..3, g, m]: max |new − old|, Σ |new − old|, max |new|, Σ |new| over the rows
    # of graph g in worker w's share of the rows (all rows in graph 0 when batch is None).
    workers, num_rows = partial.shape[0], new.shape[0]
    share = (num_rows + workers - 1) // workers
    for worker in numba.prange(workers):
        out = partial[worker]
        out[:] = 0.0
        for row in range(worker * share, min(num_rows, (worker + 1) * share)):
            _add_row_norms(new, old, row, 0 if batch is None else batch[row], out)


def _history_dots(history, new, batch, partial):  # pragma: no cover - compiled
    # partial[w, j, g, m] = Σ history[j, row, m] · new[row, m] over the rows of graph g in worker w's share.
    workers, count = partial.shape[0], history.shape[0]
    num_rows, num_heads = new.shape
    share = (num_rows + workers - 1) // workers
    for worker in numba.prange(workers):
        out = partial[worker]
        out[:] = 0.0
        for row in range(worker * share, min(num_rows, (worker + 1) * share)):
            graph = 0 if batch is None else batch[row]
            for j in range(count):
                for head in range(num_heads):
                    out[j, graph, head] += history[j, row, head] * new[row, head]


def _mix_history(weights, history, mapped, converged, batch, out):  # pragma: no cover - compiled
    # out[row, m] = mapped[row, m] where graph g(row) and head m converged, else Σ_j weights[g, m, j] · history[j, row, m].
    count = history.shape[0]
    num_rows, num_heads = out.shape
    for row in numba.prange(num_rows):
        graph = 0 if batch is None else batch[row]
        for head in range(num_heads):
            if converged[graph, head]:
                out[row, head] = mapped[row, head]
            else:
                total = 0.0
                for j in range(count):
                    total += weights[graph, head, j] * history[j, row, head]
                out[row, head] = total


def _group_by(index, num_groups, indptr, order):  # pragma: no cover - compiled
    # Stable counting sort: O(E + N), serial.
    for value in index:
        indptr[value + 1] += 1
    for group in range(num_groups):
        indptr[group + 1] += indptr[group]
    fill = indptr[:-1].copy()
    for edge in range(index.shape[0]):
        order[fill[index[edge]]] = edge
        fill[index[edge]] += 1


def _gather_rows(rows, order, out):  # pragma: no cover - compiled
    width = rows.shape[1]
    for position in numba.prange(order.shape[0]):
        row = order[position]
        for column in range(width):
            out[position, column] = rows[row, column]


def _edge_outer_product(source, target, scale, left, right, out):  # pragma: no cover - compiled
    num_edges, num_heads = out.shape
    for edge in numba.prange(num_edges):
        row, column = target[edge], source[edge]
        for head in range(num_heads):
            out[edge, head] = scale * left[row, head] * right[column, head]


if numba is not None:
    if "NUMBA_THREADING_LAYER" not in os.environ:
        # numba's default OpenMP layer loads a second OpenMP runtime beside PyTorch's,
        # after which LAPACK calls in the same process returned wrong results here.
        numba.config.THREADING_LAYER = "workqueue"
    # One compiled function only: numba's on-disk cache keys entries by function and
    # signature, so a serial and a parallel build of the same function would collide.
    # Inlined into its callers: a call per row made the product markedly slower.
    _product_row = numba.njit(cache=True, nogil=True, inline="always")(_product_row)
    _add_row_norms = numba.njit(cache=True, nogil=True, inline="always")(_add_row_norms)
    _csr_multihead_matmul = numba.njit(parallel=True, cache=True, nogil=True)(_csr_multihead_matmul)
    _graph_step = numba.njit(cache=True, nogil=True)(_graph_step)
    _picard_by_graph = numba.njit(parallel=True, cache=True, nogil=True)(_picard_by_graph)
    _step_norms = numba.njit(parallel=True, cache=True, nogil=True)(_step_norms)
    _history_dots = numba.njit(parallel=True, cache=True, nogil=True)(_history_dots)
    _mix_history = numba.njit(parallel=True, cache=True, nogil=True)(_mix_history)
    _group_by = numba.njit(cache=True, nogil=True)(_group_by)
    _gather_rows = numba.njit(parallel=True, cache=True, nogil=True)(_gather_rows)
    _edge_outer_product = numba.njit(parallel=True, cache=True, nogil=True)(_edge_outer_product)


def available(*tensors: Tensor) -> bool:
    """Whether the compiled kernel can serve these tensors (CPU, contiguous, float32/64)."""
    return numba is not None and all(
        t.device.type == "cpu" and t.is_contiguous() and not t.requires_grad for t in tensors
    ) and tensors[-1].dtype in (torch.float32, torch.float64)


def _set_threads(work: int) -> None:
    """Follow ``torch.get_num_threads()``, but one thread for small work."""
    threads = 1 if work < PARALLEL_MIN_WORK else torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def sorted_offsets(index: Tensor, num_groups: int) -> Tensor | None:
    """``[num_groups + 1]`` int64 offsets of the runs of equal values in a sorted ``[E]`` ``index``
    (``index[indptr[g]:indptr[g + 1]] == g``), or ``None`` where ``index`` is not sorted."""
    if not bool((index[1:] >= index[:-1]).all()):
        return None
    indptr = torch.zeros(num_groups + 1, dtype=torch.long, device=index.device)
    torch.cumsum(torch.bincount(index, minlength=num_groups), 0, out=indptr[1:])
    return indptr


def csr_multihead_matmul(indptr: Tensor, columns: Tensor, weight: Tensor, x: Tensor, scale: float = 1.0,
                         bias: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """``out[r, m] = bias[r, m] + scale · Σ_{e ∈ row r} weight[e, m] · x[columns[e], m]``.

    Args:
        indptr: ``[R + 1]`` int64 row offsets into the edges (edges sorted by row).
        columns: ``[E]`` int64 column of every edge.
        weight: ``[E, M]``.
        x: ``[C, M]``, same dtype as ``weight``.
        scale: factor of the product.
        bias: ``[R, M]`` contiguous, or ``None`` for zero.
        out: ``[R, M]`` contiguous buffer to write into (a fresh one when ``None``);
            reusing one spares the page faults of a new large allocation.

    Returns:
        ``[R, M]`` (``out`` when given).
    """
    if out is None:
        out = torch.empty(indptr.shape[0] - 1, x.shape[1], dtype=x.dtype)
    _set_threads(weight.numel())
    _csr_multihead_matmul(indptr.numpy(), columns.numpy(), weight.numpy(), x.numpy(), scale,
                          None if bias is None else bias.numpy(), out.numpy())
    return out


def picard_by_graph(starts: Tensor, indptr: Tensor, columns: Tensor, weight: Tensor, bias: Tensor,
                    post: Tensor | None, scale: float, inf_norm: Tensor, tol: float, initial: Tensor,
                    max_iter: int, iterations: Tensor, residual: Tensor, converged: Tensor) -> tuple[Tensor, int]:
    """Picard iteration ``h ← post · (bias + scale · A h)`` from zero, graph by graph (each in cache).

    Pair ``(g, m)`` converges at the first step where ``‖T(h) − h‖ ≤ tol · max(initial[g, m], ‖T(h)‖)``
    (norms over graph ``g``'s rows, ∞ where ``inf_norm[m]``, else 1). Every graph takes the same
    number of steps: until every pair has converged, or ``max_iter`` — the steps of Picard on the
    whole batch at once, done graph by graph.

    Args:
        starts: ``[G + 1]`` int64 row offsets of the graphs (rows sorted by graph, no edge between graphs).
        indptr, columns, weight: the maps, edges sorted by target (as in :func:`csr_multihead_matmul`).
        bias: ``[N, M]``; post: ``[N, M]`` diagonal factor or ``None`` for 1; scale: ``γ``.
        inf_norm: ``[M]`` bool; initial: ``[G, M]``.
        iterations, residual, converged: ``[G, M]`` int64, float and bool outputs, ``converged``
            all ``False`` on entry; ``iterations`` is where each pair converged (``max_iter`` where never).

    Returns:
        ``(h, steps)``: ``[N, M]`` the last ``T(h)``, and the number of steps.
    """
    h = torch.zeros_like(bias)
    spare = torch.empty_like(bias)
    # One thread per graph: parallel when there are graphs to share out.
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS,
                                     starts.shape[0] - 1)))
    steps = _picard_by_graph(starts.numpy(), indptr.numpy(), columns.numpy(), weight.numpy(), bias.numpy(),
                             None if post is None else post.numpy(), scale, inf_norm.numpy(), tol, initial.numpy(),
                             max_iter, h.numpy(), spare.numpy(), iterations.numpy(), residual.numpy(),
                             converged.numpy())
    return h, int(steps)


def step_norms(new: Tensor, old: Tensor, batch: Tensor | None, num_graphs: int) -> Tensor:
    """Per-graph, per-head norms of a fixed-point step in one pass, without ``[N, M]`` temporaries.

    Args:
        new, old: ``[N, M]`` contiguous, same dtype.
        batch: ``[N]`` int64 graph of every row, or ``None`` for one graph.
        num_graphs: ``G``.

    Returns:
        ``[4, G, M]``: ``max |new − old|``, ``Σ |new − old|``, ``max |new|``, ``Σ |new|``.
    """
    _set_threads(new.numel())
    workers = numba.get_num_threads()
    partial = np.empty((workers, 4, num_graphs, new.shape[1]), dtype=new.numpy().dtype)
    _step_norms(new.numpy(), old.numpy(), None if batch is None else batch.numpy(), partial)
    maxima = partial[:, 0::2].max(0)
    sums = partial[:, 1::2].sum(0)
    return torch.from_numpy(np.stack([maxima[0], sums[0], maxima[1], sums[1]]))


def history_dots(history: Tensor, new: Tensor, batch: Tensor | None, num_graphs: int) -> Tensor:
    """``[J, N, M] · [N, M] -> [J, G, M]``: per-graph dot products over the rows, in one pass.

    Args:
        history: ``[J, N, M]`` contiguous; new: ``[N, M]`` of the same dtype.
        batch: ``[N]`` int64 graph of every row, or ``None`` for one graph.
    """
    _set_threads(history.numel())
    workers = numba.get_num_threads()
    partial = np.empty((workers, history.shape[0], num_graphs, new.shape[1]), dtype=np.float64)
    _history_dots(history.numpy(), new.numpy(), None if batch is None else batch.numpy(), partial)
    return torch.from_numpy(partial.sum(0))


def mix_history(weights: Tensor, history: Tensor, mapped: Tensor, converged: Tensor, batch: Tensor | None,
                out: Tensor) -> Tensor:
    """Anderson's mixing step into ``out`` ``[N, M]``: ``Σ_j weights[g, m, j] · history[j, n, m]``,
    or ``mapped[n, m]`` where ``converged[g, m]`` (``g`` the graph of row ``n``).

    Args:
        weights: ``[G, M, J]`` float64; history: ``[J, N, M]``; mapped, out: ``[N, M]``;
        converged: ``[G, M]`` bool; batch: ``[N]`` int64 or ``None``.
    """
    _set_threads(history.numel())
    _mix_history(weights.numpy(), history.numpy(), mapped.numpy(), converged.numpy(),
                 None if batch is None else batch.numpy(), out.numpy())
    return out


def group_by(index: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Stable grouping of ``[E]`` int64 ``index`` values in ``[0, num_groups)`` (counting sort).

    Returns:
        ``(indptr, order)``: ``[num_groups + 1]`` offsets and ``[E]`` positions such that
        ``index[order[indptr[g]:indptr[g + 1]]] == g``, ascending within each group.
    """
    indptr = np.zeros(num_groups + 1, dtype=np.int64)
    order = np.empty(index.shape[0], dtype=np.int64)
    _group_by(index.numpy(), num_groups, indptr, order)
    return torch.from_numpy(indptr), torch.from_numpy(order)


def gather_rows(rows: Tensor, order: Tensor) -> Tensor:
    """``rows[order]`` for ``[E]`` or ``[E, M]`` CPU ``rows`` and ``[K]`` int64 ``order``.

    A parallel numba gather, used in place of ``torch.index_select`` for the edge-major
    weights of a large graph, whose rows are read in random order when edges are re-sorted.
    """
    out = np.empty((order.shape[0], *rows.shape[1:]), dtype=rows.numpy().dtype)
    _set_threads(out.size)
    _gather_rows(rows.numpy().reshape(rows.shape[0], -1), order.numpy(), out.reshape(order.shape[0], -1))
    return torch.from_numpy(out)


def edge_outer_product(source: Tensor, target: Tensor, scale: float, left: Tensor, right: Tensor) -> Tensor:
    """``out[e, m] = scale · left[target[e], m] · right[source[e], m]``, without ``[E, M]`` temporaries.

    Args:
        source, target: ``[E]`` int64.
        left, right: ``[N, M]`` contiguous, same dtype.

    Returns:
        ``[E, M]``.
    """
    out = np.empty((source.shape[0], left.shape[1]), dtype=left.numpy().dtype)
    _set_threads(out.size)
    _edge_outer_product(source.numpy(), target.numpy(), scale, left.numpy(), right.numpy(), out)
    return torch.from_numpy(out)
