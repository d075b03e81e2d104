"""Train several methods on one task with the same data and budget, and tabulate them on its test sets."""

from __future__ import annotations

import csv
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

from convergent.training.checkpoint import load_checkpoint
from convergent.training.config import TrainConfig
from convergent.training.evaluation import evaluate
from convergent.training.models import build_model
from convergent.training.trainer import train

def compare(task: Any, configs: dict[str, TrainConfig], sets: list[str], out_dir: Path, *,
            progress: bool = True) -> list[dict[str, Any]]:
    """Train every config (label → config) into ``out_dir/label`` and evaluate it on ``sets``.

    Returns one row per (method, test set); also writes ``results.csv`` and ``results.md``.
    """
    out_dir = Path(out_dir)
    graphs = {name: task.test_graphs(name) for name in sets}
    rows = []
    for label, config in configs.items():
        trained = train(task, config, out_dir / label, progress=progress)
        model = build_model(config.model, task, config.model_options)
        model.load_state_dict(load_checkpoint(out_dir / label / "checkpoint.pt", task.name)["model"])
        for name in sets:
            result = evaluate(model, task, graphs[name])
            rows.append({"method": label, "test set": name,
                         **{column: result[metric] for column, metric in task.columns.items()},
                         "parameters": trained["parameters"], "train s": trained["train_seconds"],
                         "inference s": result["inference_seconds"], "classical s": result["classical_seconds"]})
    write_tables(rows, out_dir)
    return rows


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of :func:`compare` (all with the same keys) as a Markdown table."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_format(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_tables(rows: list[dict[str, Any]], out_dir: Path, note: str = "") -> str:
    """Write ``rows`` to ``out_dir/results.csv`` and, with the machine and ``note``, to
    ``out_dir/results.md``; returns the Markdown table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "results.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = markdown_table(rows)
    (out_dir / "results.md").write_text(f"Machine: {_machine()}\n\n" + (f"{note}\n\n" if note else "") + f"{table}\n")
    return table


def _machine() -> str:
    return (f"{_cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
            f"torch {torch.__version__}")


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
            "seconds": round(result["seconds"], 1), "smoke run": "yes" if result["config"].get("quick") else "",
        })
    if not rows:
        raise ValueError(f"no bench tu results in {out_dir}")
    note = ("Protocol gin: the epoch is chosen on the fold-averaged *test* curve, so its figures are optimistic. "
            "Protocol fair: epoch (and configuration) chosen on an inner 10 % hold-out, test accuracy on the "
            "outer fold. Mean ± standard deviation over folds.")
    return write_tables(rows, out_dir, note)
