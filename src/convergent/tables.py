"""Result tables: one row per (method, test set), written as CSV and as Markdown with the machine."""

from __future__ import annotations

import csv
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import torch

from convergent.atomic import atomic_path, write_text


def result_row(method: str, test_set: str, task: Any, result: dict[str, Any], trained: dict[str, Any]) -> dict[str, Any]:
    """A table row: ``task.columns`` of an :func:`~convergent.training.evaluate` ``result``, the
    model's size and training time (``trained``, as :func:`~convergent.training.train` returns),
    and its inference time beside the classical solver's."""
    return {"method": method, "test set": test_set,
            **{column: result[metric] for column, metric in task.columns.items()},
            "parameters": trained["parameters"], "train s": trained["train_seconds"],
            "inference s": result["inference_seconds"], "classical s": result["classical_seconds"]}


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
    """``rows`` (dicts with the same keys, in column order) as a Markdown table."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_format(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def mean_over_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of single runs (with a ``seed`` column) → one row per (method, test set), in order of
    first appearance, with a ``seeds`` column counting them and every numeric column as
    ``"mean ± std"`` over the seeds (sample standard deviation; 3 and 2 significant digits, so
    the spread of small errors shows). A column equal in every seed, such as the parameter
    count, stays as is."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["test set"]), []).append(row)
    merged = []
    for (method, test_set), runs in groups.items():
        row = {"method": method, "test set": test_set}
        for column in runs[0]:
            if column in row or column == "seed":
                continue
            values = [run[column] for run in runs]
            if len(set(values)) == 1 or not all(isinstance(v, (int, float)) for v in values):
                row[column] = values[0]
            else:
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                row[column] = f"{statistics.fmean(values):.3g} ± {spread:.2g}"
        merged.append({**row, "seeds": len(runs)})
    return merged


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """``rows`` (dicts with the same keys) as a CSV file with a header, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as partial, open(partial, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_tables(rows: list[dict[str, Any]], out_dir: Path, note: str = "") -> str:
    """Write ``rows`` to ``out_dir/results.csv`` and, with the machine and ``note``, to
    ``out_dir/results.md``; returns the Markdown table. Rows with a ``threads`` column (runs
    collected from several processes) keep the thread count out of the machine line."""
    out_dir = Path(out_dir)
    write_csv(rows, out_dir / "results.csv")
    table = markdown_table(rows)
    machine = _machine(threads="threads" not in rows[0])
    write_text(out_dir / "results.md", f"Machine: {machine}\n\n" + (f"{note}\n\n" if note else "") + f"{table}\n")
    return table


def _machine(threads: bool = True) -> str:
    return (f"{_cpu_name()}, {os.cpu_count()} logical CPUs, "
            + (f"torch threads {torch.get_num_threads()}, " if threads else "") + f"torch {torch.__version__}")
