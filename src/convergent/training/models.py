"""Build any of the library's models for a task from a config: CGS or a baseline."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from convergent.models.prior import PriorCorrection

MODEL_KINDS = ("cgs", "ignn", "sse", "mpnn")


def build_model(kind: str, task: Any, options: dict[str, Any], prior: bool = True) -> nn.Module:
    """``kind`` with the task's input/output sizes and ``options`` as keyword arguments.

    All models share the call ``model(x, edge_index, edge_attr, batch) -> [N, out]``
    and the same decoder (see :func:`convergent.models.encoder.mlp`). With ``prior`` and a
    task that has one (``task.prior``), the model learns a correction to it
    (:class:`~convergent.models.prior.PriorCorrection`) from the input columns the task names
    in ``task.prior_features`` (all when it names none).
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    task_prior = getattr(task, "prior", None) if prior else None
    features = getattr(task, "prior_features", None) if task_prior is not None else None
    module = importlib.import_module(f"convergent.models.{kind}")
    try:
        model = getattr(module, kind.upper())(task.in_channels if features is None else len(features),
                                               task.out_channels, edge_channels=task.edge_channels, **options)
    except TypeError as error:
        raise ValueError(f"bad model_options for {kind!r}: {error}") from None
    return model if task_prior is None else PriorCorrection(model, task_prior, features)
