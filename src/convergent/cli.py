"""The ``convergent`` command."""

from __future__ import annotations

import argparse
import json
import sys

from convergent import __version__


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convergent", description="Convergent Graph Solvers on PyTorch Geometric.")
    parser.add_argument("--version", action="version", version=f"convergent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="fit a CGS to generated linear graph systems and print its error")
    demo.add_argument("--steps", type=int, default=400, help="training updates (default 400)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.add_argument("--json", action="store_true", help="print the result as one JSON object")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "steps", 1) < 1:
        print("convergent: error: --steps must be at least 1", file=sys.stderr)
        return 2
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
