"""Learning tasks: a graph system, its presets, metrics and test sets."""

from __future__ import annotations

from convergent.tasks.gvi import GVITask

TASKS = {"gvi": GVITask}


def get_task(name: str, **options):
    """The task called ``name`` (``"gvi"``)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name](**options)
