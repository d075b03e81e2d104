"""Elementwise 1-Lipschitz functions ``φ`` for ``h = φ(γ A h + b)``."""

from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor

Nonlinearity = Union[None, str, Callable[[Tensor], Tensor]]

NONLINEARITIES: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": F.leaky_relu,
    "hardtanh": F.hardtanh,
    "softsign": F.softsign,
}


def resolve_nonlinearity(nonlinearity: Nonlinearity) -> Callable[[Tensor], Tensor] | None:
    """``None`` for the linear map, else an elementwise callable."""
    if nonlinearity is None or callable(nonlinearity):
        return nonlinearity
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(
            f"`nonlinearity` must be None, a callable, or one of {sorted(NONLINEARITIES)} "
            f"(got {nonlinearity!r})"
        )
    return NONLINEARITIES[nonlinearity]


def derivative(function: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """``φ'(z)`` elementwise, checked to lie in ``[-1, 1]`` (1-Lipschitz on these points)."""
    with torch.enable_grad():
        point = z.detach().requires_grad_(True)
        (slope,) = torch.autograd.grad(function(point).sum(), point)
    steepest = slope.abs().max().item() if slope.numel() else 0.0
    if steepest > 1.0 + 1e3 * torch.finfo(z.dtype).eps:
        raise ValueError(
            f"`nonlinearity` must be elementwise and 1-Lipschitz for the map to contract, "
            f"but its slope reaches {steepest:.6g} at the fixed point"
        )
    return slope
