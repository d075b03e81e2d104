"""Seeded stratified splits shared by every method of a comparison (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split


def stratified_folds(labels: np.ndarray, folds: int = 10, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` ``(train, test)`` index pairs of a shuffled stratified k-fold split of ``labels`` ``[G]``."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(train, test) for train, test in splitter.split(np.zeros(len(labels)), labels)]


def holdout_split(indices: np.ndarray, labels: np.ndarray, fraction: float = 0.1,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)``: a stratified hold-out of ``fraction`` of ``indices`` (labels ``[G]`` of all graphs)."""
    train, validation = train_test_split(indices, test_size=fraction, stratify=labels[indices], random_state=seed)
    return np.sort(train), np.sort(validation)
