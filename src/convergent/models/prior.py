"""A model that learns a correction to a known approximate solution (a task's physical prior)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

#: ``prior(x, edge_index, edge_attr, batch) -> (base [N, out], lift)`` with ``lift`` mapping the
#: wrapped model's output ``[N, out]`` to the correction ``[N, out]`` added to ``base``.
Lift = Callable[[Tensor], Tensor]
Prior = Callable[[Tensor, Tensor, Tensor | None, Tensor], tuple[Tensor, Lift]]


class PriorCorrection(nn.Module):
    """``base + lift(model(x, edge_index, edge_attr, batch))`` with
    ``(base, lift) = prior(x, edge_index, edge_attr, batch)``.

    The wrapped model predicts the deviation from ``base`` in the prior's own terms — in units of
    a length scale, say, or as a correction to the sources of a linear system that ``lift``
    solves — so that it learns what the prior leaves out at the same size on every graph.
    With ``features``, the wrapped model sees only those columns of ``x`` (the prior sees all):
    a prior that carries what some features say — position, in a uniform medium — leaves the
    model to learn from the rest. Attributes the wrapped model sets (``last_solve``,
    ``project``, …) are reachable through the wrapper.

    Shapes:
        x ``[N, F]``, edge_index ``[2, E]``, edge_attr ``[E, D]`` or ``None``, batch ``[N]`` or
        ``None`` (one graph) → ``[N, out]``; the wrapped model takes ``[N, len(features)]``
        when ``features`` is given.
    """

    def __init__(self, model: nn.Module, prior: Prior, features: Sequence[int] | None = None):
        super().__init__()
        self.model = model
        self.prior = prior
        self.features = None if features is None else list(features)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                batch: Tensor | None = None) -> Tensor:
        if batch is None:
            batch = x.new_zeros(x.shape[0], dtype=edge_index.dtype)
        base, lift = self.prior(x, edge_index, edge_attr, batch)
        inputs = x if self.features is None else x[:, self.features]
        return base + lift(self.model(inputs, edge_index, edge_attr, batch))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)
