"""Train several methods on one task with the same data and budget, and tabulate them on its test sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from convergent.tables import mean_over_seeds, result_row, write_csv, write_tables
from convergent.training.checkpoint import load_checkpoint
from convergent.training.config import TrainConfig
from convergent.training.evaluation import evaluate
from convergent.training.models import build_model
from convergent.training.trainer import train

def compare(task: Any, configs: dict[str, TrainConfig], sets: list[str], out_dir: Path, *,
            seeds: list[int] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Train every config (label → config) into ``out_dir/label`` and evaluate it on ``sets``.

    Returns one row per (method, test set); also writes ``results.csv`` and ``results.md``.
    With ``seeds``, every config is trained once per seed (its ``seed`` replaced) into
    ``out_dir/label/seed-S``; the rows of single runs, with a ``seed`` column, go to
    ``results-by-seed.csv`` and the returned rows give mean ± standard deviation over seeds.
    """
    out_dir = Path(out_dir)
    graphs = {name: task.test_graphs(name, progress=progress) for name in sets}
    runs = [(label, config, out_dir / label) for label, config in configs.items()] if seeds is None else [
        (label, config.replace(seed=seed), out_dir / label / f"seed-{seed}")
        for label, config in configs.items() for seed in seeds]
    rows = []
    for label, config, folder in runs:
        trained = train(task, config, folder, progress=progress, overwrite=True)
        model = build_model(config.model, task, config.model_options, config.prior)
        model.load_state_dict(load_checkpoint(folder / "checkpoint.pt", task.name)["model"])
        for name in sets:
            row = result_row(label, name, task, evaluate(model, task, graphs[name]), trained)
            rows.append(row if seeds is None else {"seed": config.seed, **row})
    if seeds is not None:
        write_csv(rows, out_dir / "results-by-seed.csv")
        rows = mean_over_seeds(rows)
    write_tables(rows, out_dir)
    return rows


def write_classification_tables(out_dir: Path) -> str:
    """Collect every ``DATASET-PROTOCOL-MODEL.json`` of ``convergent bench tu`` in ``out_dir`` into
    ``results.csv`` and ``results.md``; returns the Markdown table."""
    rows = []
    for path in sorted(Path(out_dir).glob("*-*-*.json")):
        result = json.loads(path.read_text())
        rows.append({
            "dataset": result["dataset"], "protocol": result["protocol"], "model": result["model"],
            "accuracy %": f"{100 * result['mean']:.1f} ± {100 * result['std']:.1f}",
            "folds": len(result["fold_accuracies"]), "epochs": result["config"]["epochs"],
            "chosen epoch": "/".join(map(str, result["epochs"])) if len(result["epochs"]) == 1 else
            f"median {sorted(result['epochs'])[len(result['epochs']) // 2]}",
            "seconds": round(result["seconds"], 1), "threads": result.get("threads", "—"),
            "smoke run": "yes" if result["config"].get("quick") else "",
        })
    if not rows:
        raise ValueError(f"no bench tu results in {out_dir}")
    note = ("Protocol gin: the epoch is chosen on the fold-averaged *test* curve, so its figures are optimistic. "
            "Protocol fair: epoch (and configuration) chosen on an inner 10 % hold-out, test accuracy on the "
            "outer fold. Mean ± standard deviation over folds.")
    return write_tables(rows, out_dir, note)
