"""PNG plots of a run: learning curve and predicted-against-true parity plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def learning_curve(records: list[dict], path: Path, *, metric: str | None = None) -> None:
    """Training loss per step (log scale) and, on a second axis, a validation ``metric``."""
    steps = [r["update"] for r in records if "loss" in r]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.semilogy(steps, [r["loss"] for r in records if "loss" in r], lw=0.8, color="tab:blue", label="training loss")
    axis.set_xlabel("update")
    axis.set_ylabel("training loss (MSE)")
    validation = [r for r in records if metric and metric in r]
    if validation:
        other = axis.twinx()
        other.plot([r["update"] for r in validation], [r[metric] for r in validation], "o-", color="tab:orange",
                   label=f"validation {metric}")
        other.set_ylabel(f"validation {metric}")
        handles = axis.get_legend_handles_labels()[0] + other.get_legend_handles_labels()[0]
        other.legend(handles=handles, loc="upper center")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parity(predicted: torch.Tensor, true: torch.Tensor, path: Path, *, title: str, points: int = 20_000) -> None:
    """Scatter of predicted against true values (a random subsample of ``points``) with the diagonal."""
    predicted, true = predicted.reshape(-1).float(), true.reshape(-1).float()
    if predicted.numel() > points:
        keep = torch.randperm(predicted.numel(), generator=torch.Generator().manual_seed(0))[:points]
        predicted, true = predicted[keep], true[keep]
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.scatter(true, predicted, s=2, alpha=0.3)
    low, high = min(true.min(), predicted.min()).item(), max(true.max(), predicted.max()).item()
    axis.plot([low, high], [low, high], color="black", lw=0.8)
    axis.set_xlabel("true")
    axis.set_ylabel("predicted")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
