"""A self-contained HTML report of a run folder (`convergent train`) or a benchmark folder (`convergent bench`).

The page and the PNGs it makes sit next to the run's own files; images are linked by relative
file name, so the folder can be moved or zipped whole. An inline script checks after loading
that every image shows and writes the count to ``<body data-images-loaded="k/n">``.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from matplotlib.figure import Figure

from convergent import __version__
from convergent.atomic import atomic_path, write_text

#: A folder holding neither file is not a run folder.
RUN_FILES = ("config.json", "results.csv")
SOLVES_COLUMNS = ("graph", "iterations", "residual", "error_bound", "converged")  # and "nodes", unused here
NOT_RECORDED = '<p class="note">{} not recorded in this run.</p>'

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
.meta, .note { color: #666; }
.missing { color: #a00; border: 1px dashed #a00; padding: 0.5em; }
table { border-collapse: collapse; margin: 0.5em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
th { background: #f4f4f4; }
td.number { text-align: right; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
img.half { max-width: 48%; }
img.square { max-width: 480px; }
"""

# Replaces each image that did not load with a visible note and records "loaded/total" on <body>.
_IMAGE_CHECK = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  let loaded = 0;
  for (const image of images) {
    if (image.complete && image.naturalWidth > 0) { loaded += 1; continue; }
    const note = document.createElement("p");
    note.className = "missing";
    note.textContent = "Image " + image.getAttribute("src") + " could not be loaded.";
    image.replaceWith(note);
  }
  document.body.dataset.imagesLoaded = loaded + "/" + images.length;
});
"""


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` (and the ``report_*.png`` figures it shows); returns the HTML path.

    A training run (``config.json``) gets its configuration, learning curves, last validation
    metrics, parity plot, solver statistics (``solves.csv``) and ``results.csv``; a benchmark
    folder (``results.csv`` without ``config.json``) gets the results table and links to its
    sub-runs. A missing optional file leaves a "not recorded" note in its section.

    Raises:
        ValueError: ``run_dir`` holds neither ``config.json`` nor ``results.csv``, or one of
            its files cannot be read.
    """
    run_dir = Path(run_dir)
    if not any((run_dir / name).is_file() for name in RUN_FILES):
        raise ValueError(f"{run_dir} is not a run folder: it holds neither {' nor '.join(RUN_FILES)}; "
                         "pass a folder written by `convergent train` or `convergent bench`")
    name = run_dir.resolve().name
    if (run_dir / "config.json").is_file():
        config = _read_config(run_dir / "config.json")
        title = f"{name}: {config.get('task', 'unknown task')} / {config.get('model', 'unknown model')}"
        sections = [("Configuration", _table(list(_flatten(config).items()), header=["setting", "value"],
                                             round_numbers=False)),
                    ("Learning curves", _curves_section(run_dir)),
                    ("Validation set: predicted against true", _parity_section(run_dir)),
                    ("Solver on the validation graphs", _solves_section(run_dir)),
                    ("Results", _results_section(run_dir))]
    else:
        title = f"{name}: benchmark"
        sections = [("Results", _results_section(run_dir)), ("Runs", _runs_section(run_dir))]
    body = "".join(f"<section><h2>{html.escape(heading)}</h2>\n{content}</section>\n" for heading, content in sections)
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n<p class=\"meta\">Report by convergent {html.escape(__version__)} "
            f"on the folder {html.escape(name)}.</p>\n{body}<script>{_IMAGE_CHECK}</script>\n</body>\n</html>\n")
    path = run_dir / "report.html"
    write_text(path, page)
    return path


# --------------------------------------------------------------------------- sections


def _curves_section(run_dir: Path) -> str:
    """Training loss and every validation metric against update, and the last validation metrics."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return NOT_RECORDED.format("Metrics (metrics.jsonl)")
    records = _read_jsonl(path)
    training = [r for r in records if "loss" in r]
    validation = [r for r in records if "loss" not in r]
    metrics = list(dict.fromkeys(key for r in validation for key, value in r.items()
                                 if key != "update" and isinstance(value, (int, float))))
    panels = []  # (title, updates, values, log scale)
    if training:
        panels.append(("training loss", [r["update"] for r in training], [r["loss"] for r in training], True))
    for metric in metrics:
        kept = [r for r in validation if metric in r]
        panels.append((f"validation {metric}", [r["update"] for r in kept], [r[metric] for r in kept], False))
    if not panels:
        return NOT_RECORDED.format("Training loss and validation metrics")
    columns = min(len(panels), 2)
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(5 * columns, 3.2 * rows), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for axis, (title, updates, values, log) in zip(axes, panels):
        axis.plot(updates, values, marker="o" if not log or len(values) < 20 else None, lw=1)
        axis.set(title=title, xlabel="update", yscale="log" if log else "linear")
        axis.grid(alpha=0.3)
    for axis in axes[len(panels):]:  # the empty cell of an odd number of panels
        axis.set_visible(False)
    content = _figure(figure, run_dir / "report_curves.png", "learning curves")
    if validation:
        last = validation[-1]
        content += (f"<p>Last validation, at update {html.escape(str(last['update']))}:</p>\n"
                    + _table([(m, last[m]) for m in metrics if m in last], header=["metric", "value"]))
    return content


def _parity_section(run_dir: Path) -> str:
    if not (run_dir / "parity.png").is_file():
        return NOT_RECORDED.format("The parity plot (parity.png)")
    return _image("parity.png", "predicted against true values on the validation set", "square")


def _solves_section(run_dir: Path) -> str:
    """How many validation graphs converged, the largest error bound, and histograms of iterations and residuals."""
    path = run_dir / "solves.csv"
    if not path.is_file():
        return NOT_RECORDED.format("Solver statistics (solves.csv)")
    solves = _read_solves(path)
    if not solves:
        return '<p class="note">solves.csv holds no graphs.</p>\n'
    iterations = np.array([s["iterations"] for s in solves])
    residuals = np.array([s["residual"] for s in solves])
    failed = [s["graph"] for s in solves if not s["converged"]]
    summary = (f"<p>{len(solves) - len(failed)} of {len(solves)} graphs converged; the largest error bound is "
               f"{max(s['error_bound'] for s in solves):.4g}.</p>\n")
    if failed:
        shown = ", ".join(failed[:10]) + (", …" if len(failed) > 10 else "")
        summary += f"<p>Not converged: {html.escape(shown)}</p>\n"

    low, high = iterations.min(), iterations.max()
    bins = np.arange(low, high + 2) - 0.5 if high - low < 40 else 30  # one bar per count when few
    histograms = _histogram(iterations, bins, "solver iterations", run_dir / "report_iterations.png")
    positive = residuals[residuals > 0]
    if positive.size:
        histograms += _histogram(np.log10(positive), 20, "log10(residual)", run_dir / "report_residuals.png")
    if positive.size < residuals.size:
        summary += (f"<p>Residual exactly 0 (left out of the histogram): {residuals.size - positive.size} "
                    f"of {residuals.size} graphs.</p>\n")
    return summary + f'<div class="figures">{histograms}</div>\n'


def _results_section(run_dir: Path) -> str:
    path = run_dir / "results.csv"
    if not path.is_file():
        return NOT_RECORDED.format("A comparison table (results.csv)")
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    if not rows:
        return '<p class="note">results.csv is empty.</p>\n'
    return _table(rows[1:], header=rows[0])


def _runs_section(run_dir: Path) -> str:
    """The benchmark's sub-runs, linked to their own reports where those have been written."""
    runs = sorted(p for p in run_dir.iterdir() if (p / "config.json").is_file())
    if not runs:
        return NOT_RECORDED.format("Sub-runs")
    items = []
    for run in runs:
        label = html.escape(run.name)
        if (run / "report.html").is_file():
            items.append(f'<li><a href="{html.escape(quote(run.name))}/report.html">{label}</a></li>')
        else:
            items.append(f"<li>{label} (no report yet: <code>convergent report {html.escape(str(run))}</code>)</li>")
    return "<ul>\n" + "\n".join(items) + "\n</ul>\n"


# --------------------------------------------------------------------------- reading


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); rerun `convergent train` to rewrite it") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object of settings (got {type(config).__name__})")
    return config


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number} is not valid JSON ({error}); "
                             "delete or repair that line") from None
        if not isinstance(record, dict) or "update" not in record:
            raise ValueError(f"{path}, line {number} must be a JSON object with an \"update\" key "
                             f"(got {line.strip()[:60]!r})")
        records.append(record)
    return records


def _read_solves(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        missing = [c for c in SOLVES_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}; "
                             f"expected a header with {','.join(SOLVES_COLUMNS)}")
        try:
            return [{"graph": row["graph"], "iterations": int(row["iterations"]), "residual": float(row["residual"]),
                     "error_bound": float(row["error_bound"]), "converged": bool(int(row["converged"]))}
                    for row in reader]
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}, line {reader.line_num}: {error}; iterations and converged must be "
                             "integers, residual and error_bound numbers") from None


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model_options": {"gamma": 0.9}}`` -> ``{"model_options.gamma": "0.9"}``: the keys ``--set`` takes,
    the values as JSON text (strings as they are)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return flat


# --------------------------------------------------------------------------- HTML and PNG


def _table(rows: list, *, header: list, round_numbers: bool = True) -> str:
    """An HTML table; numbers right-aligned and, with ``round_numbers``, non-integers to 4 significant digits."""
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(_cell(cell, round_numbers) for cell in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


def _cell(value: Any, round_numbers: bool) -> str:
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return f"<td>{html.escape(text)}</td>"
    if round_numbers and not text.lstrip("+-").isdigit():
        text = f"{number:.4g}"
    return f'<td class="number">{html.escape(text)}</td>'


def _image(file_name: str, alt: str, css_class: str = "") -> str:
    css = f' class="{css_class}"' if css_class else ""
    return f'<img src="{html.escape(file_name)}" alt="{html.escape(alt)}"{css}>\n'


def _histogram(values: np.ndarray, bins: Any, xlabel: str, path: Path) -> str:
    figure = Figure(figsize=(5, 3.2), layout="constrained")
    axis = figure.subplots()
    axis.hist(values, bins=bins, color="tab:blue", edgecolor="white")
    axis.set(xlabel=xlabel, ylabel="graphs")
    return _figure(figure, path, f"histogram of {xlabel}", css_class="half")


def _figure(figure: Figure, path: Path, alt: str, css_class: str = "") -> str:
    """Save ``figure`` as ``path`` and return the ``<img>`` that shows it."""
    with atomic_path(path) as partial:
        figure.savefig(partial, format="png", dpi=100)
    return _image(path.name, alt, css_class)
