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


def _csr_multihead_matmul(indptr, columns, weight, x, out):  # pragma: no cover - compiled
    num_rows, num_heads = out.shape
    for row in numba.prange(num_rows):
        for head in range(num_heads):
            out[row, head] = 0.0
        for edge in range(indptr[row], indptr[row + 1]):
            column = columns[edge]
            for head in range(num_heads):
                out[row, head] += weight[edge, head] * x[column, head]


def _csr_multihead_scatter(indptr, columns, weight, x, partial):  # pragma: no cover - compiled
    # Each thread scatters its share of the groups into its own partial sum: no atomics.
    workers, num_nodes, num_heads = partial.shape
    groups = indptr.shape[0] - 1
    share = (groups + workers - 1) // workers
    for worker in numba.prange(workers):
        out = partial[worker]
        out[:] = 0.0
        for group in range(worker * share, min(groups, (worker + 1) * share)):
            for edge in range(indptr[group], indptr[group + 1]):
                column = columns[edge]
                for head in range(num_heads):
                    out[column, head] += weight[edge, head] * x[group, head]


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
    _csr_multihead_scatter = numba.njit(parallel=True, cache=True, nogil=True)(_csr_multihead_scatter)
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


def csr_multihead_matmul(indptr: Tensor, columns: Tensor, weight: Tensor, x: Tensor) -> Tensor:
    """``out[r, m] = Σ_{e ∈ row r} weight[e, m] · x[columns[e], m]``.

    Args:
        indptr: ``[R + 1]`` int64 row offsets into the edges (edges sorted by row).
        columns: ``[E]`` int64 column of every edge.
        weight: ``[E, M]``.
        x: ``[C, M]``, same dtype as ``weight``.

    Returns:
        ``[R, M]``.
    """
    out = np.empty((indptr.shape[0] - 1, x.shape[1]), dtype=x.numpy().dtype)
    _set_threads(weight.numel())
    _csr_multihead_matmul(indptr.numpy(), columns.numpy(), weight.numpy(), x.numpy(), out)
    return torch.from_numpy(out)


def csr_multihead_scatter(indptr: Tensor, columns: Tensor, weight: Tensor, x: Tensor) -> Tensor:
    """``out[columns[e], m] += weight[e, m] · x[g, m]`` for every edge ``e`` of group ``g``.

    The transposed product of :func:`csr_multihead_matmul` on the same arrays.

    Returns:
        ``[C, M]`` with ``C = x.shape[0]``.
    """
    _set_threads(weight.numel())
    workers = numba.get_num_threads()
    partial = np.empty((workers, x.shape[0], x.shape[1]), dtype=x.numpy().dtype)
    _csr_multihead_scatter(indptr.numpy(), columns.numpy(), weight.numpy(), x.numpy(), partial)
    return torch.from_numpy(partial[0] if workers == 1 else partial.sum(0))


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
