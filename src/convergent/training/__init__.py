"""Training, evaluation and checkpoints, shared by every task and model."""

from convergent.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from convergent.training.config import TrainConfig
from convergent.training.evaluation import evaluate
from convergent.training.models import build_model
from convergent.training.trainer import train

__all__ = ["CheckpointError", "TrainConfig", "build_model", "evaluate", "load_checkpoint", "save_checkpoint", "train"]
