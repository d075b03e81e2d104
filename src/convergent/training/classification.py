"""Graph classification under two evaluation protocols, with the same seeded folds for every model.

* ``gin`` — the protocol of GIN, IGNN and the CGS paper: stratified 10-fold cross-validation;
  the test accuracy of every fold is recorded after every epoch, and the reported figure is the
  best epoch of the fold-averaged curve (mean ± std over folds at that epoch). The epoch is
  chosen on the test folds, so the figure is **optimistic**.
* ``fair`` — Errica, Podda, Bacciu & Micheli (ICLR 2020): outer stratified 10-fold; inside
  each outer training part a stratified 10 % hold-out selects the configuration (among the
  ``grid`` candidates) and the epoch (early stopping with ``patience``); the test accuracy is
  that of the selected model at its best hold-out epoch. Mean ± std over the outer folds.

Every model trains with Adam, its own learning rate, the learning rate halved every 50 epochs
(as in the GIN paper), batches of ``batch_size`` graphs and ``epochs`` epochs at most.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn.functional import cross_entropy
from torch_geometric.data import Batch, Data
from tqdm import tqdm

from convergent.datasets.splits import holdout_split, stratified_folds
from convergent.models import GIN, GraphCGS, GraphIGNN

PROTOCOLS = ("gin", "fair")

#: Model classes and presets: the CGS paper's (32 heads, γ = 0.5, 2 encoder layers, SiLU, sum
#: readout), GIN's paper's (5 layers counting the input one, GIN-0, dropout 0.5), IGNN's.
MODELS: dict[str, tuple[type, dict[str, Any], float]] = {
    "cgs": (GraphCGS, {"num_heads": 32, "gamma": 0.5, "num_layers": 2, "activation": "silu", "readout": "sum",
                       "hidden_channels": 64}, 1e-3),
    "gin": (GIN, {"num_layers": 5, "hidden_channels": 64, "dropout": 0.5}, 1e-2),
    "ignn": (GraphIGNN, {"hidden_channels": 64, "kappa": 0.95, "readout": "sum"}, 1e-3),
}


@dataclass
class ProtocolConfig:
    """The budget every model gets. ``grid``: candidate option overrides for ``fair`` model selection."""

    epochs: int = 500
    batch_size: int = 128
    folds: int = 10
    holdout: float = 0.1
    patience: int = 100
    seed: int = 0
    grid: list[dict[str, Any]] = field(default_factory=lambda: [{}])

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1 (got {getattr(self, name)})")
        if self.folds < 2:
            raise ValueError(f"`folds` must be at least 2 (got {self.folds})")


def build_classifier(kind: str, num_features: int, num_classes: int, overrides: dict[str, Any]) -> tuple[Any, float]:
    """``(model, learning_rate)`` for ``kind`` (``cgs``, ``gin``, ``ignn``) with preset options and ``overrides``."""
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose from {', '.join(MODELS)}")
    cls, options, learning_rate = MODELS[kind]
    options = {**options, **overrides}
    learning_rate = options.pop("learning_rate", learning_rate)
    return cls(num_features, num_classes, **options), learning_rate


def accuracy(model: Any, graphs: list[Data], batch_size: int) -> float:
    """Fraction of ``graphs`` whose class is the arg-max of the model's logits."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(graphs), batch_size):
            batch = Batch.from_data_list(graphs[start:start + batch_size])
            logits = model(batch.x, batch.edge_index, None, batch.batch)
            correct += int((logits.argmax(1) == batch.y).sum())
    model.train()
    return correct / len(graphs)


def fit(kind: str, overrides: dict[str, Any], graphs: list[Data], train: np.ndarray, watched: dict[str, np.ndarray],
        config: ProtocolConfig, num_features: int, num_classes: int, *, seed: int, stop_on: str | None = None,
        bar: tqdm | None = None) -> dict[str, Any]:
    """Train on ``graphs[train]``; after every epoch record the accuracy on every ``watched`` set.

    With ``stop_on`` (a key of ``watched``), stop after ``config.patience`` epochs without a
    better accuracy there.

    Returns:
        dict with ``curves`` (name → accuracies per epoch), ``best_epoch`` (0-based, the first
        best on ``stop_on``) and ``seconds``.
    """
    torch.manual_seed(seed)
    model, learning_rate = build_classifier(kind, num_features, num_classes, overrides)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=50, gamma=0.5)
    order = torch.Generator().manual_seed(seed)
    training = [graphs[i] for i in train]
    sets = {name: [graphs[i] for i in indices] for name, indices in watched.items()}
    curves: dict[str, list[float]] = {name: [] for name in watched}
    # Batch norm needs two graphs in a batch; GIN's reference code drops a smaller last batch too.
    drops_single = any(isinstance(module, torch.nn.BatchNorm1d) for module in model.modules())
    best_epoch, best, start = 0, -1.0, time.perf_counter()
    for epoch in range(config.epochs):
        permutation = torch.randperm(len(training), generator=order).tolist()
        for first in range(0, len(training), config.batch_size):
            batch = Batch.from_data_list([training[i] for i in permutation[first:first + config.batch_size]])
            if drops_single and batch.num_graphs < 2:
                continue
            loss = cross_entropy(model(batch.x, batch.edge_index, None, batch.batch), batch.y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if hasattr(model, "project"):  # IGNN keeps its weights well-posed
                model.project()
        scheduler.step()
        for name, members in sets.items():
            curves[name].append(accuracy(model, members, config.batch_size))
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3g}", **{name: f"{c[-1]:.3f}" for name, c in curves.items()})
        if stop_on is not None:
            if curves[stop_on][-1] > best:
                best_epoch, best = epoch, curves[stop_on][-1]
            elif epoch - best_epoch >= config.patience:
                break
    if bar is not None:
        bar.update(config.epochs - len(next(iter(curves.values()), [])))
    return {"curves": curves, "best_epoch": best_epoch, "seconds": time.perf_counter() - start}


def run_protocol(protocol: str, kind: str, graphs: list[Data], num_features: int, num_classes: int,
                 config: ProtocolConfig, *, progress: bool = True) -> dict[str, Any]:
    """Evaluate model ``kind`` on ``graphs`` under ``protocol`` (module docstring).

    Returns:
        dict with ``mean`` and ``std`` (test accuracy over folds, population std),
        ``fold_accuracies``, ``epochs`` (the chosen epoch, 1-based: one for ``gin``, one per fold
        for ``fair``), ``selected`` (the configuration per fold), ``curves`` (per fold, the test
        accuracy after every epoch) and ``seconds``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    labels = np.array([int(g.y) for g in graphs])
    folds = stratified_folds(labels, config.folds, config.seed)
    candidates = config.grid if protocol == "fair" else [config.grid[0]]
    total = config.epochs * len(folds) * len(candidates)
    start = time.perf_counter()
    with tqdm(total=total, desc=f"{protocol}/{kind}", disable=not progress) as bar:
        if protocol == "gin":
            curves = [fit(kind, candidates[0], graphs, train, {"test": test}, config, num_features, num_classes,
                          seed=config.seed + fold, bar=bar)["curves"]["test"]
                      for fold, (train, test) in enumerate(folds)]
            epoch = int(np.array(curves).mean(0).argmax())
            accuracies, epochs, selected = np.array(curves)[:, epoch], [epoch + 1], [candidates[0]] * len(folds)
        else:
            accuracies, epochs, selected, curves = [], [], [], []
            for fold, (train, test) in enumerate(folds):
                inner, holdout = holdout_split(train, labels, config.holdout, config.seed + fold)
                runs = [fit(kind, candidate, graphs, inner, {"validation": holdout, "test": test}, config,
                            num_features, num_classes, seed=config.seed + fold, stop_on="validation", bar=bar)
                        for candidate in candidates]
                best = max(range(len(runs)), key=lambda i: runs[i]["curves"]["validation"][runs[i]["best_epoch"]])
                run = runs[best]
                curves.append(run["curves"]["test"])
                accuracies.append(run["curves"]["test"][run["best_epoch"]])
                epochs.append(run["best_epoch"] + 1)
                selected.append(candidates[best])
            accuracies = np.array(accuracies)
    return {"mean": float(accuracies.mean()), "std": float(accuracies.std()),
            "fold_accuracies": [float(a) for a in accuracies], "epochs": epochs, "selected": selected,
            "curves": curves, "seconds": time.perf_counter() - start}
