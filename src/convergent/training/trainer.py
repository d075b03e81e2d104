"""The training loop shared by all tasks and models: fresh graphs, Adam with cosine warm
restarts, periodic validation, crash-safe checkpoints, metrics (JSON lines) and plots."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch_geometric.data import Batch, Data
from tqdm import tqdm

from convergent import __version__
from convergent.atomic import write_text
from convergent.prediction import write_certificates
from convergent.tables import result_row, write_tables
from convergent.training import distributed, plots
from convergent.training.checkpoint import load_checkpoint, save_checkpoint
from convergent.training.config import TrainConfig
from convergent.training.evaluation import evaluate
from convergent.training.models import build_model

#: Seed of the validation graphs; training pools use seeds from ``TRAINING_SEEDS`` on,
#: test sets their own (below 10⁴), so the three never share a graph.
VALIDATION_SEED = 999
TRAINING_SEEDS = 1_000_000
LOG_EVERY = 10
CHECKPOINT = "checkpoint.pt"


def pool_seed(run_seed: int, refresh: int) -> int:
    """Data seed of the ``refresh``-th pool of a run seeded ``run_seed``."""
    return TRAINING_SEEDS * (run_seed + 1) + refresh


def train(task: Any, config: TrainConfig, out_dir: Path, *, progress: bool = True, resume: bool = False,
          overwrite: bool = False, context: distributed.Context = distributed.Context()) -> dict[str, Any]:
    """Train ``config.model`` on ``task`` and write the run to ``out_dir``.

    Writes ``config.json``, ``metrics.jsonl`` (a line per ``LOG_EVERY`` steps and one per
    validation), ``checkpoint.pt`` (every ``checkpoint_every`` steps, at every validation and
    at the end: model, optimizer, scheduler, RNG states, config, version, metrics),
    ``learning_curve.png``, ``parity.png``, ``solves.csv`` (the solve certificate of every
    validation graph) and ``results.csv`` / ``results.md`` (validation metrics beside the
    classical solver's time). Evaluation uses the final weights, i.e. the end of a cosine
    cycle when ``updates`` is a multiple of ``restart_period``, or with ``average_cycles``
    the mean of the weights at the ends of the last cycles (then also in the checkpoint).

    With ``resume``, continues from ``out_dir``'s checkpoint (from the start if there is
    none) so that the result equals that of an uninterrupted run. Without it, a folder that
    already holds a checkpoint is refused unless ``overwrite``. Under ``torchrun``, pass the
    :func:`distributed.start` context: rank 0 validates and writes the files.

    Returns:
        The last validation metrics, with ``train_seconds`` and ``parameters``.
    """
    out_dir = Path(out_dir)
    state = _previous_state(out_dir, config, resume, overwrite)
    torch.manual_seed(config.seed)
    model = build_model(config.model, task, config.model_options, config.prior).to(context.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=config.restart_period)
    order = torch.Generator().manual_seed(config.seed)
    averaged = AveragedModel(model, use_buffers=True) if config.average_cycles > 1 else None
    first_averaged = config.updates - (config.average_cycles - 1) * config.restart_period
    records: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    first, train_seconds = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if averaged is not None:
            averaged.load_state_dict(state["averaged"])
        _set_rng_states(state["rng"], order)
        records, summary, first, train_seconds = state["records"], state["metrics"], state["update"], state["seconds"]
    step_model = model if context.world == 1 else DistributedDataParallel(model)
    result = None
    if context.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text(out_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        write_text(out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        validation = task.graphs(config.validation_graphs, seed=VALIDATION_SEED)

    def checkpoint(done: int) -> None:
        save_checkpoint(out_dir / CHECKPOINT, {
            "task": config.task, "config": config.to_dict(), "version": __version__, "update": done,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": _rng_states(order), "records": records, "metrics": summary, "seconds": train_seconds,
            **({} if averaged is None else {"averaged": averaged.state_dict()})})

    pool = None
    with open(out_dir / "metrics.jsonl" if context.main else os.devnull, "a") as log, \
            tqdm(total=config.updates, initial=first, desc=f"train {config.task}/{config.model}",
                 disable=not (progress and context.main)) as bar:
        def record(entry: dict[str, Any]) -> None:
            records.append(entry)
            log.write(json.dumps(entry) + "\n")
            log.flush()

        for step in range(first, config.updates):
            if pool is None or step % config.refresh_every == 0:
                pool = task.graphs(config.pool_size, seed=pool_seed(config.seed, step // config.refresh_every))
            start = time.perf_counter()
            chosen = torch.randperm(config.pool_size, generator=order)[:config.batch_size].tolist()
            loss = _step(step_model, optimizer, [pool[i] for i in chosen],
                         [pool[i] for i in distributed.shard(chosen, context)], context)
            scheduler.step()
            if hasattr(model, "project"):  # IGNN keeps its weights well-posed
                model.project()
            train_seconds += time.perf_counter() - start
            if not math.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at update {step + 1}; "
                                         f"lower `learning_rate` (now {config.learning_rate})")
            bar.update()
            done = step + 1
            if averaged is not None and done >= first_averaged and done % config.restart_period == 0:
                averaged.update_parameters(model)
                if done == config.updates:
                    model.load_state_dict(averaged.module.state_dict())
            if not context.main:
                continue
            if done % LOG_EVERY == 0 or done == config.updates:
                record({"update": done, "loss": loss, "lr": scheduler.get_last_lr()[0], "seconds": train_seconds})
                bar.set_postfix(loss=f"{loss:.3g}", **{k: f"{v:.3g}" for k, v in summary.items()
                                                       if k in task.columns.values()})
            if done % config.eval_every == 0 or done == config.updates:
                result = evaluate(model, task, validation, context.device)
                summary = {k: v for k, v in result.items() if isinstance(v, float) and "seconds" not in k}
                record({"update": done, **summary})
            if done % config.checkpoint_every == 0 or done % config.eval_every == 0 or done == config.updates:
                checkpoint(done)
    parameters = sum(p.numel() for p in model.parameters())
    trained = {**summary, "train_seconds": train_seconds, "parameters": parameters}
    if context.main:
        if result is None:  # resumed from the final checkpoint
            result = evaluate(model, task, validation, context.device)
        _write_outputs(out_dir, task, config, records, result, trained)
    return trained


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, chosen: list[Data], mine: list[Data],
          context: distributed.Context) -> float:
    """One optimizer step on the global batch ``chosen``, of which this rank computes ``mine``;
    returns the batch's loss.

    The loss is the mean squared error over all nodes of the global batch: each rank's sum of
    squares is divided by the global count (times the world size, which DDP's gradient
    average divides out), so K processes step exactly as one process with the same batch.
    """
    batch = Batch.from_data_list(mine).to(context.device)
    count = sum(graph.y.numel() for graph in chosen)
    squares = (model(batch.x, batch.edge_index, batch.edge_attr, batch.batch) - batch.y).square().sum()
    optimizer.zero_grad()
    (squares * (context.world / count)).backward()
    optimizer.step()
    return distributed.global_sum(squares.detach() / count, context).item()


def _previous_state(out_dir: Path, config: TrainConfig, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (``None``: start afresh), after checking it belongs to this config."""
    path = out_dir / CHECKPOINT
    if not path.exists():
        return None
    if not resume:
        if overwrite:
            return None
        raise ValueError(f"{out_dir} already holds a run ({CHECKPOINT}); pass --resume to continue it, "
                         f"--overwrite to start it again, or another --out")
    state = load_checkpoint(path, config.task)
    if "rng" not in state:
        raise ValueError(f"{path} holds no training state to resume from (written by convergent "
                         f"{state.get('version', '< 0.1')}); start the run again with --overwrite")
    # Through TrainConfig so that keys added since the run was written read as their defaults.
    before, now = TrainConfig.from_dict(state["config"]).to_dict(), config.to_dict()
    if before != now:
        changed = ", ".join(f"{k} (run: {before.get(k)!r}, given: {now.get(k)!r})"
                            for k in sorted({**before, **now}) if before.get(k) != now.get(k))
        raise ValueError(f"cannot resume {out_dir} with another config; these keys differ: {changed}. "
                         "Resume with the run's own options, or with --out RUN --resume alone")
    return state


def _rng_states(order: torch.Generator) -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "order": order.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any], order: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    order.set_state(states["order"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _write_outputs(out_dir: Path, task: Any, config: TrainConfig, records: list[dict[str, Any]],
                   result: dict[str, Any], trained: dict[str, Any]) -> None:
    plots.learning_curve(records, out_dir / "learning_curve.png", metric=task.primary_metric)
    plots.parity(result["prediction"], result["target"], out_dir / "parity.png",
                 title=f"{config.task} / {config.model}: validation set")
    count = len(result["certificates"])
    write_certificates(out_dir / "solves.csv", [f"validation[{g}]" for g in range(count)],
                       result["sizes"], result["certificates"])
    write_tables([result_row(config.model, "validation", task, result, trained)], out_dir)

