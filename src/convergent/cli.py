"""The ``convergent`` command: ``demo``, ``train``, ``eval``, ``predict``, ``bench`` and ``report``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from convergent import __version__
from convergent.cache import cache_dir

#: Task names (``convergent.tasks.TASKS``), listed here so that ``--help`` imports nothing heavy.
TASKS = ("gvi", "porenet", "pagerank", "powerflow", "heat")


def _demo(args: argparse.Namespace) -> int:
    from convergent.demo import run_demo

    result = run_demo(steps=args.steps, seed=args.seed, progress=not args.quiet)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"CGS on unseen linear graph systems y = 0.8·P·y + b ({args.steps} steps, "
          f"{result['train_seconds']:.1f} s of training)")
    print(f"  test MSE            {result['test_mse']:.4g}")
    print(f"  constant-prediction {result['constant_mse']:.4g}  "
          f"({result['constant_mse'] / result['test_mse']:.0f}× worse)")
    print(f"  relative L2 error   {result['relative_error']:.2%}")
    print(f"  solver error bound  {result['max_error_bound']:.2g} (largest over graphs and heads)")
    return 0


def _parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` (value as JSON where it parses, else a string); ``a.b=v`` sets key ``b`` of dict ``a``."""
    if "=" not in text:
        raise ValueError(f"--set expects key=value (got {text!r})")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def resolve_config(task: Any, preset: str | None, overrides: list[str], seed: int | None, model: str | None,
                   config_file: Path | None = None, default_preset: str = "default"):
    """The run's :class:`TrainConfig`: the task's preset (``--preset``, else the file's ``preset``,
    else ``default_preset``), then the config file's keys, then ``--model``, ``--seed`` and ``--set``."""
    from convergent.training.config import TrainConfig, read_config_file

    file_values = read_config_file(config_file) if config_file is not None else {}
    file_preset = file_values.pop("preset", None)
    preset = preset or file_preset or default_preset
    if file_values.get("task", task.name) != task.name:
        raise ValueError(f"config file {config_file} is for task {file_values['task']!r}, not {task.name!r}")
    if preset not in task.presets:
        raise ValueError(f"unknown preset {preset!r} for task {task.name}; choose one of {', '.join(task.presets)}")
    values = {"task": task.name, **json.loads(json.dumps(task.presets[preset]))}
    for key, value in file_values.items():
        values[key] = {**values.get(key, {}), **value} if key == "model_options" and isinstance(value, dict) else value
    if model is not None:
        values["model"] = model
    if seed is not None:
        values["seed"] = seed
    for text in overrides:
        key, value = _parse_override(text)
        if "." in key:
            outer, inner = key.split(".", 1)
            if outer != "model_options":
                raise ValueError(f"unknown config key {key!r}: only model_options.<name> takes a dotted key")
            values.setdefault("model_options", {})[inner] = value
        else:
            values[key] = value
    return TrainConfig.from_dict(values)


def _train(args: argparse.Namespace) -> int:
    import torch

    from convergent.tasks import get_task
    from convergent.training import TrainConfig, distributed, load_checkpoint, train

    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    task = get_task(args.task, cache_dir=cache_dir())
    config = resolve_config(task, args.preset, args.set, args.seed, args.model, args.config)
    out = args.out or Path("runs") / f"{args.task}-{args.preset or 'default'}-{config.model}"
    chosen = any((args.preset, args.config, args.set, args.seed is not None, args.model))
    if args.resume and not chosen and (out / "checkpoint.pt").is_file():
        config = TrainConfig.from_dict(load_checkpoint(out / "checkpoint.pt", task.name)["config"])
    context = distributed.start(args.device)
    try:
        summary = train(task, config, out, progress=not args.quiet, resume=args.resume, overwrite=args.overwrite,
                        context=context)
    finally:
        distributed.stop()
    if not context.main:
        return 0
    summary["out"] = str(out)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {out}/ (checkpoint.pt, config.json, metrics.jsonl, results.md, solves.csv, plots); "
              f"`convergent report {out}` makes its HTML page")
        print("validation: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items() if isinstance(v, float)))
    return 0


def _load_model(path: Path, task_name: str | None, device: str):
    """``(task, model on its device, checkpoint)`` from a checkpoint file."""
    from convergent._errors import reason
    from convergent.tasks import get_task
    from convergent.training import build_model, distributed, load_checkpoint

    checkpoint = load_checkpoint(path, task_name)
    task = get_task(checkpoint["task"], cache_dir=cache_dir())
    config = checkpoint["config"]
    # A config without `prior` predates it: its model learned the target directly.
    model = build_model(config["model"], task, config["model_options"], config.get("prior", False))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise ValueError(f"{path} does not fit the model its config describes: {reason(error)}") from None
    return task, model.to(distributed.pick_device(device)), checkpoint


def _eval(args: argparse.Namespace) -> int:
    from convergent.graph_files import load_data_list
    from convergent.training import evaluate

    task, model, _ = _load_model(args.checkpoint, args.task, args.device)
    sets = {name: task.test_graphs(name, progress=not args.quiet) for name in _test_sets(task, args.sets)}
    if args.graphs is not None:
        graphs = load_data_list(args.graphs, required=("x", "edge_index", "edge_attr", "y"))
        for graph in graphs:
            task.check_graph(graph)
        sets[str(args.graphs)] = graphs
    results = {}
    for name, graphs in sets.items():
        result = evaluate(model, task, graphs, next(model.parameters()).device)
        results[name] = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    if args.json:
        print(json.dumps(results))
        return 0
    for name, result in results.items():
        label = task.test_sets[name].description if name in task.test_sets else name
        print(f"{name}: {label}")
        print("  " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from convergent.graph_files import read_graphs
    from convergent.prediction import check_inputs, run_batches, split_per_graph, write_certificates, write_predictions

    task, model, _ = _load_model(args.checkpoint, None, args.device)
    graphs = read_graphs(args.graphs, nodes=args.nodes)
    check_inputs(graphs, task.in_channels, task.edge_channels, args.graphs)
    values, found = [], []
    with tqdm(total=len(graphs), desc="predict", unit="graph", disable=args.quiet) as bar:
        for run in run_batches(model, graphs, next(model.parameters()).device):
            values += split_per_graph(run.output, run.batch)
            found += run.certificates
            bar.update(run.batch.num_graphs)
    names = [str(getattr(g, "name", None) or f"{args.graphs.stem}[{i}]") for i, g in enumerate(graphs)]
    out = args.out or Path(f"{args.graphs.stem}.predictions.csv")
    certificates_path = out.with_name(out.name.removesuffix(".csv").removesuffix(".predictions") + ".certificates.csv")
    write_predictions(out, names, [list(map(str, g.node_ids)) for g in graphs], values)
    write_certificates(certificates_path, names, [g.num_nodes for g in graphs], found)
    certified = [c for c in found if c is not None]
    summary = {"graphs": len(graphs), "nodes": sum(g.num_nodes for g in graphs), "predictions": str(out),
               "certificates": str(certificates_path), "all_converged": all(c["converged"] for c in certified),
               "max_error_bound": max((c["error_bound"] for c in certified), default=None)}
    if args.json:
        print(json.dumps(summary))
    else:
        bound = "no fixed-point solve in this model" if not certified else (
            f"{'all' if summary['all_converged'] else 'NOT all'} solves converged, largest error bound "
            f"{summary['max_error_bound']:.2g}")
        print(f"predicted {summary['nodes']} nodes of {len(graphs)} graph(s) → {out}; certificates ({bound}) → "
              f"{certificates_path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from convergent.report import write_report

    path = write_report(args.run_dir)
    print(json.dumps({"report": str(path)}) if args.json else f"wrote {path}")
    return 0


def _test_sets(task: Any, names: str | None) -> list[str]:
    """``names`` (comma-separated) checked against the task's test sets; ``None`` for all of them."""
    chosen = list(task.test_sets) if names is None else [name for name in names.split(",") if name]
    for name in chosen:
        if name not in task.test_sets:
            raise ValueError(f"unknown test set {name!r}; choose from {', '.join(task.test_sets)}")
    return chosen


def _bench(args: argparse.Namespace) -> int:
    from convergent.benchmark import compare
    from convergent.tables import markdown_table
    from convergent.tasks import get_task

    if args.task == "tu":
        return _bench_tu(args)
    task = get_task(args.task, cache_dir=cache_dir())
    base = resolve_config(task, args.preset, args.set, args.seed, None, args.config, default_preset="best")
    configs = {}
    for method in args.methods.split(","):
        kind, _, depth = method.partition("-")
        options = dict(base.model_options) if kind == "cgs" else {"hidden_channels": base.model_options.get(
            "hidden_channels", 64)}
        if depth:
            options["num_layers"] = int(depth)
        configs[method] = base.replace(model=kind, model_options=options)
    rows = compare(task, configs, _test_sets(task, args.sets), args.out or Path("runs") / f"bench-{task.name}",
                   seeds=_seeds(args), progress=not args.quiet)
    print(json.dumps(rows) if args.json else markdown_table(rows))
    return 0


def _seeds(args: argparse.Namespace) -> list[int] | None:
    """``--seeds`` as a list of ints (``None`` when not given); refuses it beside ``--seed``."""
    if args.seeds is None:
        return None
    if args.seed is not None:
        raise ValueError("give --seed (one run per method) or --seeds (one per method and seed), not both")
    try:
        seeds = [int(item) for item in args.seeds.split(",") if item.strip()]
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers, e.g. --seeds 0,1,2 (got {args.seeds!r})") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds needs at least one seed and no seed twice (got {args.seeds!r})")
    return seeds


def _bench_tu(args: argparse.Namespace) -> int:
    import torch

    from convergent.benchmark import write_classification_tables
    from convergent.datasets import load_tu
    from convergent.training.classification import ProtocolConfig, run_protocol

    if args.seeds is not None:
        raise ValueError("bench tu takes one --seed (it seeds the folds and the weights); --seeds is for the tasks")
    if args.dataset is None:
        raise ValueError("bench tu needs --dataset NAME (e.g. MUTAG, PTC_MR, IMDB-BINARY)")
    graphs, num_features, num_classes = load_tu(args.dataset, args.root)
    grid = [dict([_parse_override(item) for item in candidate.split(";") if item]) for candidate in args.grid] or [{}]
    config = ProtocolConfig(grid=grid, seed=args.seed or 0, **({"epochs": 2, "folds": 2} if args.quick else {}),
                            **({"epochs": args.epochs} if args.epochs else {}))
    out = args.out or Path("runs") / "bench-tu"
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for kind in args.models.split(","):
        result = run_protocol(args.protocol, kind, graphs, num_features, num_classes, config, progress=not args.quiet)
        result.update(dataset=args.dataset, protocol=args.protocol, model=kind, graphs=len(graphs),
                      threads=torch.get_num_threads(), config={**config.__dict__, "quick": args.quick})
        (out / f"{args.dataset}-{args.protocol}-{kind}.json").write_text(json.dumps(result, indent=1) + "\n")
        results[kind] = result
    table = write_classification_tables(out)
    print(json.dumps(results) if args.json else table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convergent", description="Convergent Graph Solvers on PyTorch Geometric.")
    parser.add_argument("--version", action="version", version=f"convergent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def quiet_json(command: argparse.ArgumentParser) -> None:
        command.add_argument("--quiet", action="store_true", help="no progress bars")
        command.add_argument("--json", action="store_true", help="print the result as JSON")

    def config_options(command: argparse.ArgumentParser, default_preset: str) -> None:
        command.add_argument("--preset", help=f"task preset: default, paper or best (default: the config file's, "
                                              f"else {default_preset})")
        command.add_argument("--config", type=Path, metavar="FILE",
                             help="TOML, YAML or JSON file of config keys (applied over the preset)")
        command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                             help="override a config key, e.g. --set updates=200 --set model_options.num_heads=32")
        command.add_argument("--seed", type=int, help="seeds weights, data and batch order")

    def device_option(command: argparse.ArgumentParser) -> None:
        command.add_argument("--device", default="auto", help="auto (CUDA where present), cpu or cuda")

    demo = commands.add_parser("demo", help="fit a CGS to generated linear graph systems and print its error")
    demo.add_argument("--steps", type=int, default=400, help="training updates (default 400)")
    demo.add_argument("--seed", type=int, default=0)
    quiet_json(demo)
    demo.set_defaults(run=_demo)

    train = commands.add_parser("train", help="train a model on a task; writes checkpoint, config, metrics, plots",
                                description="Train a model on a task. Also runs under torchrun for distributed "
                                            "data parallel training (see docs/cli.md).")
    train.add_argument("task", choices=TASKS)
    config_options(train, "default")
    train.add_argument("--model", choices=["cgs", "ignn", "sse", "mpnn"], help="model (default: the preset's)")
    train.add_argument("--out", type=Path, help="output folder (default runs/TASK-PRESET-MODEL)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--overwrite", action="store_true", help="start again in an --out that holds a run")
    train.add_argument("--deterministic", action="store_true",
                       help="deterministic algorithms only (bitwise-reproducible runs, also across --resume)")
    device_option(train)
    quiet_json(train)
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on the task's test sets or your graphs")
    evaluate.add_argument("task", choices=TASKS)
    evaluate.add_argument("--checkpoint", type=Path, required=True)
    evaluate.add_argument("--sets", help="comma-separated test sets (default all; they are listed in each task's "
                                         "docs/TASK.md; '' for none)")
    evaluate.add_argument("--graphs", type=Path, help="torch.save file of a list of PyG Data with x, edge_index, "
                                                       "edge_attr, y")
    device_option(evaluate)
    quiet_json(evaluate)
    evaluate.set_defaults(run=_eval)

    predict = commands.add_parser("predict", help="predict on your graphs; writes predictions and solve certificates",
                                  description="Run a checkpoint on graphs from a file and write one CSV row per "
                                              "node, and per graph the certificate of its solve (iterations, "
                                              "residual, error bound). See docs/cli.md for the formats.")
    predict.add_argument("--checkpoint", type=Path, required=True)
    predict.add_argument("--graphs", type=Path, required=True,
                         help=".pt (PyG Data list), .edgelist, .graphml, .json (node-link) or .csv (edges)")
    predict.add_argument("--nodes", type=Path, help="CSV of node features (with a .csv or .edgelist --graphs)")
    predict.add_argument("--out", type=Path, help="predictions CSV (default GRAPHS.predictions.csv; the "
                                                   "certificates go beside it as .certificates.csv)")
    device_option(predict)
    quiet_json(predict)
    predict.set_defaults(run=_predict)

    bench = commands.add_parser("bench", help="train CGS and the baselines with one budget; print one table")
    bench.add_argument("task", choices=(*TASKS, "tu"), help="a task, or tu for TU graph classification")
    config_options(bench, "best")
    bench.add_argument("--methods", default="cgs,ignn,sse,mpnn-3,mpnn-6,mpnn-12",
                       help="comma-separated: cgs, ignn, sse, mpnn-DEPTH")
    bench.add_argument("--sets", help="comma-separated test sets (default all)")
    bench.add_argument("--seeds", help="comma-separated seeds: every method trained once per seed, the table "
                                       "giving mean ± std (single runs in results-by-seed.csv)")
    bench.add_argument("--out", type=Path, help="output folder (default runs/bench-TASK)")
    bench.add_argument("--dataset", help="tu: dataset name, a folder under --root (MUTAG, PTC_MR, IMDB-BINARY, ...)")
    bench.add_argument("--root", type=Path, help="tu: folder of TU datasets (default ../shared/data/TU if it exists, "
                                                "else a download cache)")
    bench.add_argument("--protocol", choices=("gin", "fair"), default="gin",
                       help="tu: gin (best epoch of the fold-averaged test curve; optimistic) or fair (Errica et al.)")
    bench.add_argument("--models", default="cgs,gin,ignn", help="tu: comma-separated, of cgs, gin, ignn")
    bench.add_argument("--epochs", type=int, help="tu: most epochs per fold (default 500)")
    bench.add_argument("--grid", action="append", default=[], metavar="K=V;K=V",
                       help="tu, fair protocol: a candidate configuration for model selection (repeat for more)")
    bench.add_argument("--quick", action="store_true", help="tu: 2 folds of 2 epochs, a smoke run")
    quiet_json(bench)
    bench.set_defaults(run=_bench)

    report = commands.add_parser("report", help="write an HTML page of a run: config, curves, parity, solves, table")
    report.add_argument("run_dir", type=Path, help="a folder written by convergent train or bench")
    report.add_argument("--json", action="store_true", help="print the page's path as JSON")
    report.set_defaults(run=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "steps", 1) < 1:
        print("convergent: error: --steps must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (ValueError, OSError, ImportError, FloatingPointError) as error:
        print(f"convergent: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convergent: interrupted (a training run continues with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
