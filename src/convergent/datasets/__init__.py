"""Benchmark datasets read from local files (TU format) and their cross-validation splits."""

from convergent.datasets.splits import holdout_split, stratified_folds
from convergent.datasets.tu import load_tu

__all__ = ["holdout_split", "load_tu", "stratified_folds"]
