"""Checks of user input that raise ``ValueError`` naming the argument and the value."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor


def check_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor (got {type(value).__name__})")
    return value


def check_floating(name: str, value: Tensor) -> None:
    if not value.is_floating_point():
        raise ValueError(
            f"`{name}` must be a floating-point tensor (got dtype {value.dtype}); "
            f"convert it with `.float()` or `.double()`"
        )


def check_finite(name: str, value: Tensor) -> None:
    # A finite sum means every entry is finite: one cheap reduction in the common case.
    if value.numel() == 0 or torch.isfinite(value.sum()):
        return
    bad = ~torch.isfinite(value)
    if bad.any():
        where = bad.nonzero()[0].tolist()
        raise ValueError(
            f"`{name}` must be finite, but holds {int(bad.sum())} NaN or infinite "
            f"entries (first at index {where}: {value[tuple(where)].item()})"
        )


def check_edge_index(edge_index: object, num_nodes: int) -> Tensor:
    """Return ``edge_index`` as int64 after checking shape ``[2, E]`` and range."""
    edge_index = check_tensor("edge_index", edge_index)
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(
            f"`edge_index` must have shape [2, E] (row 0 source, row 1 target), "
            f"got {list(edge_index.shape)}"
        )
    if edge_index.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"`edge_index` must hold int32 or int64 indices (got {edge_index.dtype})")
    if edge_index.numel():
        low, high = int(edge_index.min()), int(edge_index.max())
        if low < 0:
            raise ValueError(f"`edge_index` holds a negative node index ({low})")
        if high >= num_nodes:
            raise ValueError(
                f"`edge_index` refers to node {high}, but there are only {num_nodes} "
                f"nodes (rows of `bias`)"
            )
    return edge_index.long()


def check_batch(batch: object, num_nodes: int, edge_index: Tensor) -> tuple[Tensor | None, int]:
    """Return ``(batch as int64 or None, number of graphs)``."""
    if batch is None:
        return None, 1
    batch = check_tensor("batch", batch)
    if batch.shape != (num_nodes,):
        raise ValueError(f"`batch` must have shape [N] = [{num_nodes}] (got {list(batch.shape)})")
    if batch.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"`batch` must hold integer graph ids (got {batch.dtype})")
    if num_nodes == 0:
        return batch.long(), 1
    if int(batch.min()) < 0:
        raise ValueError(f"`batch` holds a negative graph id ({int(batch.min())})")
    batch = batch.long()
    crossing = batch[edge_index[0]] != batch[edge_index[1]]
    if crossing.any():
        e = int(crossing.nonzero()[0])
        raise ValueError(
            f"`edge_index` connects graphs: edge {e} goes from node {int(edge_index[0, e])} "
            f"(graph {int(batch[edge_index[0, e]])}) to node {int(edge_index[1, e])} "
            f"(graph {int(batch[edge_index[1, e]])})"
        )
    return batch, int(batch.max()) + 1


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_gamma(gamma: object) -> float:
    if isinstance(gamma, Tensor) and gamma.numel() == 1:
        gamma = gamma.item()
    if not _is_real(gamma) or not 0.0 < float(gamma) < 1.0:
        raise ValueError(f"`gamma` must be in (0, 1) for the map to contract (got {gamma})")
    return float(gamma)


def check_tol(tol: object) -> float:
    if not _is_real(tol) or not 0.0 < float(tol) < 1.0:
        raise ValueError(f"`tol` must be a relative tolerance in (0, 1) (got {tol!r})")
    return float(tol)


def check_max_iter(max_iter: object) -> int:
    if not isinstance(max_iter, numbers.Integral) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"`max_iter` must be a positive integer (got {max_iter!r})")
    return int(max_iter)
