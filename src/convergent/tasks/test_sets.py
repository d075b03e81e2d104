"""The description of a task's fixed, seeded test set."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TestSet:
    """``num_graphs`` graphs with sizes (states, pores, …) drawn from ``[sizes[0], sizes[1])``, seeded."""

    __test__ = False  # not a pytest test class, despite the name

    description: str
    num_graphs: int
    sizes: tuple[int, int]
    seed: int
