"""The optional simulators: imported on first use, with an install hint when missing."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType


def optional_module(name: str, task: str, extra: str, what: str) -> ModuleType:
    """Import ``name``, or raise an ImportError saying that ``task`` needs ``what`` and how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(f"the {task} task needs {what}: pip install -e '.[{extra}]'") from error


def importable(load: Callable[[], ModuleType]) -> bool:
    """Whether ``load()`` imports its module."""
    try:
        load()
    except ImportError:
        return False
    return True
