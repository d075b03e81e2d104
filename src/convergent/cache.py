"""The on-disk cache of generated graphs and processed datasets: where it is, and how entries are kept.

Entries are ``torch.save`` dicts of plain tensors and lists under a ``key`` that records the
arguments they were made with; they load with ``weights_only=True`` and are written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from convergent.atomic import atomic_path


def cache_dir() -> Path:
    """``$CONVERGENT_CACHE``, else ``~/.cache/convergent``."""
    return Path(os.environ.get("CONVERGENT_CACHE", "~/.cache/convergent")).expanduser()


def load_entry(path: Path | None, key: dict[str, Any]) -> dict[str, Any] | None:
    """The entry stored at ``path`` when it was made with ``key``, else ``None``."""
    if path is None or not Path(path).exists():
        return None
    stored = torch.load(path, weights_only=True)
    return stored if stored.get("key") == key else None


def store_entry(path: Path | None, key: dict[str, Any], **payload: Any) -> None:
    """Write ``payload`` under ``key`` to ``path`` (a temporary file, then a rename).

    Nothing is written when ``path`` is ``None``.
    """
    if path is None:
        return
    with atomic_path(path) as partial:
        torch.save({"key": key, **payload}, partial)
