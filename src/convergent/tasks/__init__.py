"""Learning tasks: a graph system, its presets, metrics and test sets."""

from __future__ import annotations

from convergent.tasks.gvi import GVITask
from convergent.tasks.porenet import PorenetTask

TASKS = {"gvi": GVITask, "porenet": PorenetTask}


def get_task(name: str, **options):
    """The task called ``name`` (``"gvi"`` or ``"porenet"``)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name](**options)
