"""The settings of one training run: a flat dataclass, built from a preset plus overrides."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from convergent._errors import reason


@dataclass
class TrainConfig:
    """Everything a run depends on, written to ``config.json`` in its output folder.

    Attributes:
        task: task name (``"gvi"``).
        model: ``"cgs"``, ``"ignn"``, ``"sse"`` or ``"mpnn"``.
        model_options: keyword arguments of the model class.
        prior: for a task with a physical prior (``task.prior``: porenet's uniform medium,
            power flow's DC angles), learn a correction to it rather than the target itself.
        updates: optimizer steps.
        batch_size: graphs per step.
        pool_size: graphs generated afresh every ``refresh_every`` steps; each step
            draws ``batch_size`` of them.
        refresh_every: steps between fresh pools.
        learning_rate: Adam's step size (the peak of every cosine cycle).
        restart_period: steps per cosine cycle (``CosineAnnealingWarmRestarts``' ``T_0``);
            runs end on a cycle's last step when ``updates`` is a multiple of it.
        average_cycles: if above 1, the run's final weights are the mean of the weights at
            the ends of its last ``average_cycles`` cycles (stochastic weight averaging over
            cycles, Izmailov et al. 2018); ``updates`` must then be a multiple of
            ``restart_period``. 0 or 1: the last step's weights.
        eval_every: steps between validation evaluations.
        checkpoint_every: steps between checkpoints (also written at every validation
            and at the end); a resumed run repeats at most this many steps.
        validation_graphs: size of the fixed validation set.
        seed: seeds the model's initial weights, the data and the batch order.
    """

    task: str
    model: str = "cgs"
    model_options: dict[str, Any] = field(default_factory=dict)
    prior: bool = True
    updates: int = 1000
    batch_size: int = 64
    pool_size: int = 64
    refresh_every: int = 32
    learning_rate: float = 1e-3
    restart_period: int = 500
    average_cycles: int = 0
    eval_every: int = 250
    checkpoint_every: int = 50
    validation_graphs: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("updates", "batch_size", "pool_size", "refresh_every", "restart_period", "eval_every",
                     "checkpoint_every", "validation_graphs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"config `{name}` must be a positive integer (got {getattr(self, name)!r})")
        if self.batch_size > self.pool_size:
            raise ValueError(f"config `batch_size` ({self.batch_size}) cannot exceed `pool_size` ({self.pool_size})")
        if not isinstance(self.average_cycles, int) or self.average_cycles < 0:
            raise ValueError(f"config `average_cycles` must be a non-negative integer (got {self.average_cycles!r})")
        if self.average_cycles > 1 and (self.updates % self.restart_period
                                        or self.updates < self.average_cycles * self.restart_period):
            raise ValueError(f"config `average_cycles` = {self.average_cycles} needs `updates` ({self.updates}) to be "
                             f"a multiple of `restart_period` ({self.restart_period}) and at least "
                             f"{self.average_cycles} cycles long; change one of the three")
        if not isinstance(self.prior, bool):
            raise ValueError(f"config `prior` must be true or false (got {self.prior!r})")
        if not self.learning_rate > 0:
            raise ValueError(f"config `learning_rate` must be positive (got {self.learning_rate!r})")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict; an unknown key is an error that names it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})


#: File suffixes :func:`read_config_file` understands.
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml", ".json")


def read_config_file(path: Path) -> dict[str, Any]:
    """The table of config keys in a TOML, YAML or JSON file (chosen by suffix).

    The keys are those of :class:`TrainConfig` (``model_options`` a nested table), and
    optionally ``preset``; they are checked when the config is built, not here.

    Raises:
        ValueError: missing file, unknown suffix, a parse error (with the parser's
            message), or a file whose top level is not a table.
    """
    path = Path(path)
    if path.suffix not in CONFIG_SUFFIXES:
        raise ValueError(f"config file {path} must end in one of {', '.join(CONFIG_SUFFIXES)}")
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            values = tomllib.loads(text)
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            values = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"config file {path} does not parse: {reason(error)}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a table of config keys (got {type(values).__name__})")
    return values
