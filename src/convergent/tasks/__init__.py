"""Learning tasks: a graph system, its presets, metrics and test sets.

A task module is imported only when its task is asked for, so that an optional simulator
(OpenPNM, pandapower, scikit-fem) is needed only by its own task.
"""

from __future__ import annotations

import importlib

#: Task name → ``module:class``.
TASKS = {
    "gvi": "convergent.tasks.gvi:GVITask",
    "porenet": "convergent.tasks.porenet:PorenetTask",
    "pagerank": "convergent.tasks.pagerank:PageRankTask",
    "powerflow": "convergent.tasks.powerflow:PowerFlowTask",
    "heat": "convergent.tasks.heat:HeatTask",
}


def get_task(name: str, **options):
    """The task called ``name`` (one of :data:`TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)
