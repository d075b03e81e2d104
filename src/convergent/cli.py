"""The ``convergent`` command: ``demo``, ``train``, ``eval`` and ``bench``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from convergent import __version__
from convergent.cache import cache_dir

#: Task names (``convergent.tasks.TASKS``), listed here so that ``--help`` imports nothing heavy.
TASKS = ("gvi", "porenet")


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


def resolve_config(task: Any, preset: str, overrides: list[str], seed: int | None, model: str | None):
    """The run's :class:`TrainConfig`: the task's preset, then ``--model``, ``--seed`` and ``--set`` overrides."""
    from convergent.training.config import TrainConfig

    if preset not in task.presets:
        raise ValueError(f"unknown preset {preset!r} for task {task.name}; choose one of {', '.join(task.presets)}")
    values = {"task": task.name, **json.loads(json.dumps(task.presets[preset]))}
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
    from convergent.tasks import get_task
    from convergent.training import train

    task = get_task(args.task, cache_dir=cache_dir())
    config = resolve_config(task, args.preset, args.set, args.seed, args.model)
    out = args.out or Path("runs") / f"{args.task}-{args.preset}-{config.model}"
    summary = train(task, config, out, progress=not args.quiet)
    summary["out"] = str(out)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {out}/ (checkpoint.pt, config.json, metrics.jsonl, learning_curve.png, parity.png)")
        print("validation: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items() if isinstance(v, float)))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from convergent.graph_files import load_data_list
    from convergent.tasks import get_task
    from convergent.training import build_model, evaluate, load_checkpoint

    task = get_task(args.task, cache_dir=cache_dir())
    checkpoint = load_checkpoint(args.checkpoint, task.name)
    config = checkpoint["config"]
    model = build_model(config["model"], task, config["model_options"])
    model.load_state_dict(checkpoint["model"])
    sets = {name: task.test_graphs(name) for name in _test_sets(task, args.sets)}
    if args.graphs is not None:
        graphs = load_data_list(args.graphs, required=("x", "edge_index", "edge_attr", "y"))
        for graph in graphs:
            task.check_graph(graph)
        sets[str(args.graphs)] = graphs
    results = {}
    for name, graphs in sets.items():
        result = evaluate(model, task, graphs)
        results[name] = {k: v for k, v in result.items() if not hasattr(v, "shape")}
    if args.json:
        print(json.dumps(results))
        return 0
    for name, result in results.items():
        label = task.test_sets[name].description if name in task.test_sets else name
        print(f"{name}: {label}")
        print("  " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()))
    return 0


def _test_sets(task: Any, names: str | None) -> list[str]:
    """``names`` (comma-separated) checked against the task's test sets; ``None`` for all of them."""
    chosen = list(task.test_sets) if names is None else [name for name in names.split(",") if name]
    for name in chosen:
        if name not in task.test_sets:
            raise ValueError(f"unknown test set {name!r}; choose from {', '.join(task.test_sets)}")
    return chosen


def _bench(args: argparse.Namespace) -> int:
    from convergent.benchmark import compare, markdown_table
    from convergent.tasks import get_task

    if args.task == "tu":
        return _bench_tu(args)
    task = get_task(args.task, cache_dir=cache_dir())
    base = resolve_config(task, args.preset, args.set, args.seed, None)
    configs = {}
    for method in args.methods.split(","):
        kind, _, depth = method.partition("-")
        options = dict(base.model_options) if kind == "cgs" else {"hidden_channels": base.model_options.get(
            "hidden_channels", 64)}
        if depth:
            options["num_layers"] = int(depth)
        configs[method] = base.replace(model=kind, model_options=options)
    rows = compare(task, configs, _test_sets(task, args.sets), args.out or Path("runs") / f"bench-{task.name}",
                   progress=not args.quiet)
    print(json.dumps(rows) if args.json else markdown_table(rows))
    return 0


def _bench_tu(args: argparse.Namespace) -> int:
    from convergent.benchmark import write_classification_tables
    from convergent.datasets import load_tu
    from convergent.training.classification import ProtocolConfig, run_protocol

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
                      config={**config.__dict__, "quick": args.quick})
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

    demo = commands.add_parser("demo", help="fit a CGS to generated linear graph systems and print its error")
    demo.add_argument("--steps", type=int, default=400, help="training updates (default 400)")
    demo.add_argument("--seed", type=int, default=0)
    quiet_json(demo)
    demo.set_defaults(run=_demo)

    train = commands.add_parser("train", help="train a model on a task; writes checkpoint, config, metrics, plots")
    train.add_argument("task", choices=TASKS)
    train.add_argument("--preset", default="default", help="task preset (default, paper, best)")
    train.add_argument("--model", choices=["cgs", "ignn", "sse", "mpnn"], help="model (default: the preset's)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set updates=200 --set model_options.num_heads=32")
    train.add_argument("--seed", type=int)
    train.add_argument("--out", type=Path, help="output folder (default runs/TASK-PRESET-MODEL)")
    quiet_json(train)
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on the task's test sets or your graphs")
    evaluate.add_argument("task", choices=TASKS)
    evaluate.add_argument("--checkpoint", type=Path, required=True)
    evaluate.add_argument("--sets", help="comma-separated test sets (default all: gvi a, b, c; porenet a, b, c, d; "
                                         "'' for none)")
    evaluate.add_argument("--graphs", type=Path, help="torch.save file of a list of PyG Data with x, edge_index, "
                                                       "edge_attr, y")
    quiet_json(evaluate)
    evaluate.set_defaults(run=_eval)

    bench = commands.add_parser("bench", help="train CGS and the baselines with one budget; print one table")
    bench.add_argument("task", choices=(*TASKS, "tu"), help="a task, or tu for TU graph classification")
    bench.add_argument("--preset", default="best", help="budget and CGS settings (a task preset; default best)")
    bench.add_argument("--methods", default="cgs,ignn,sse,mpnn-3,mpnn-6,mpnn-12",
                       help="comma-separated: cgs, ignn, sse, mpnn-DEPTH")
    bench.add_argument("--sets", help="comma-separated test sets (default all)")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for all")
    bench.add_argument("--seed", type=int)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "steps", 1) < 1:
        print("convergent: error: --steps must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"convergent: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
