"""The training loop shared by all tasks and models: fresh graphs, Adam with cosine warm
restarts, periodic validation, checkpoints, metrics (JSON lines) and plots."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.functional import mse_loss
from torch_geometric.data import Batch
from tqdm import tqdm

from convergent import __version__
from convergent.training import plots
from convergent.training.checkpoint import save_checkpoint
from convergent.training.config import TrainConfig
from convergent.training.evaluation import evaluate
from convergent.training.models import build_model

#: Seed of the validation graphs; training pools use seeds from ``TRAINING_SEEDS`` on,
#: test sets their own (below 10⁴), so the three never share a graph.
VALIDATION_SEED = 999
TRAINING_SEEDS = 1_000_000
LOG_EVERY = 10


def pool_seed(run_seed: int, refresh: int) -> int:
    """Data seed of the ``refresh``-th pool of a run seeded ``run_seed``."""
    return TRAINING_SEEDS * (run_seed + 1) + refresh


def train(task: Any, config: TrainConfig, out_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train ``config.model`` on ``task`` and write the run to ``out_dir``.

    Writes ``config.json``, ``metrics.jsonl`` (a line per ``LOG_EVERY`` steps and one per
    validation), ``checkpoint.pt`` (at every validation and at the end), ``learning_curve.png``
    and ``parity.png`` (validation set, final weights). Evaluation uses the final weights,
    i.e. the end of a cosine cycle when ``updates`` is a multiple of ``restart_period``.

    Returns:
        The last validation metrics, with ``train_seconds`` and ``parameters``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    torch.manual_seed(config.seed)
    model = build_model(config.model, task, config.model_options)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=config.restart_period)
    validation = task.graphs(config.validation_graphs, seed=VALIDATION_SEED)
    order = torch.Generator().manual_seed(config.seed)
    records: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    train_seconds = 0.0
    with open(out_dir / "metrics.jsonl", "w") as log, \
            tqdm(total=config.updates, desc=f"train {config.task}/{config.model}", disable=not progress) as bar:
        def record(entry: dict[str, Any]) -> None:
            records.append(entry)
            log.write(json.dumps(entry) + "\n")
            log.flush()

        for step in range(config.updates):
            if step % config.refresh_every == 0:
                pool = task.graphs(config.pool_size, seed=pool_seed(config.seed, step // config.refresh_every))
            start = time.perf_counter()
            chosen = torch.randperm(config.pool_size, generator=order)[:config.batch_size]
            batch = Batch.from_data_list([pool[i] for i in chosen.tolist()])
            loss = mse_loss(model(batch.x, batch.edge_index, batch.edge_attr, batch.batch), batch.y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            if hasattr(model, "project"):  # IGNN keeps its weights well-posed
                model.project()
            train_seconds += time.perf_counter() - start
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at update {step + 1}; "
                                         f"lower `learning_rate` (now {config.learning_rate})")
            bar.update()
            done = step + 1
            if done % LOG_EVERY == 0 or done == config.updates:
                record({"update": done, "loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                        "seconds": train_seconds})
                bar.set_postfix(loss=f"{loss.item():.3g}", **{k: f"{v:.3g}" for k, v in summary.items()
                                                              if k in task.columns.values()})
            if done % config.eval_every == 0 or done == config.updates:
                result = evaluate(model, task, validation)
                summary = {k: v for k, v in result.items() if isinstance(v, float) and "seconds" not in k}
                record({"update": done, **summary})
                save_checkpoint(out_dir / "checkpoint.pt", {
                    "task": config.task, "config": config.to_dict(), "version": __version__,
                    "update": done, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "metrics": summary,
                })
    plots.learning_curve(records, out_dir / "learning_curve.png", metric=task.primary_metric)
    plots.parity(result["prediction"], result["target"], out_dir / "parity.png",
                 title=f"{config.task} / {config.model}: validation set")
    parameters = sum(p.numel() for p in model.parameters())
    return {**summary, "train_seconds": train_seconds, "parameters": parameters}
