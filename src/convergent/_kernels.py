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


def _csr_multihead_matmul(indptr, columns, weight, x, scale, bias, out):  # pragma: no cover - compiled
    # `bias is None` is decided at compile time: numba prunes the branch.
    num_rows, num_heads = out.shape
    for row in numba.prange(num_rows):
        for head in range(num_heads):
            out[row, head] = 0.0
        for edge in range(indptr[row], indptr[row + 1]):
            column = columns[edge]
            for head in range(num_heads):
                out[row, head] += weight[edge, head] * x[column, head]
        for head in range(num_heads):
            if bias is None:
                out[row, head] *= scale
            else:
                out[row, head] = bias[row, head] + scale * out[row, head]


def _step_norms(new, old, batch, partial):  # pragma: no cover - compiled
    # partial[w, 0..3, g, m]: max |new − old|, Σ |new − old|, max |new|, Σ |new| over the rows
    # of graph g in worker w's share of the rows (all rows in graph 0 when batch is None).
    workers = partial.shape[0]
    num_rows, num_heads = new.shape
    share = (num_rows + workers - 1) // workers
    for worker in numba.prange(workers):
        out = partial[worker]
        out[:] = 0.0
        for row in range(worker * share, min(num_rows, (worker + 1) * share)):
            graph = 0 if batch is None else batch[row]
            for head in range(num_heads):
                step = abs(new[row, head] - old[row, head])
                size = abs(new[row, head])
                out[0, graph, head] = max(out[0, graph, head], step)
                out[1, graph, head] += step
                out[2, graph, head] = max(out[2, graph, head], size)
                out[3, graph, head] += size


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
    _csr_multihead_matmul = numba.njit(parallel=True, cache=True, nogil=True)(_csr_multihead_matmul)
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
