"""Checkpoints: written atomically, read back as data only (``torch.load(weights_only=True)``)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from convergent._errors import reason
from convergent.atomic import atomic_path

FORMAT = "convergent-checkpoint-1"


class CheckpointError(ValueError):
    """A file that is not a readable ``convergent`` checkpoint, or one made for another task."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors, numbers, strings, lists and dicts only) to ``path``.

    The file is written beside ``path`` and renamed over it, so a crash leaves
    either the previous checkpoint or the new one, never a truncated file.
    """
    with atomic_path(path) as partial:
        torch.save({"format": FORMAT, **payload}, partial)


def load_checkpoint(path: Path, task: str | None = None) -> dict[str, Any]:
    """Read a checkpoint without unpickling arbitrary objects.

    Raises:
        CheckpointError: the file is missing, truncated, not a checkpoint, refused
            by the safe loader, or (with ``task``) made for another task.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable convergent checkpoint (truncated, or holds objects other than "
            f"tensors and plain data): {reason(error)}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a convergent checkpoint (no '{FORMAT}' marker)")
    if task is not None and payload.get("task") != task:
        raise CheckpointError(f"{path} is a checkpoint of task {payload.get('task')!r}, not {task!r}")
    return payload
