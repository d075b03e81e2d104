"""Scaling benchmark: ``convergent.solve`` and the CGS model against the dense
reference formulation and SciPy, on random graphs of 10³ … 10⁶ nodes.

    python benchmarks/scaling.py                 # default sizes, writes benchmarks/results/scaling.md
    python benchmarks/scaling.py --quick         # smoke run (tiny sizes, one repeat), prints only
    python benchmarks/scaling.py --sizes 1000,10000 --methods convergent-picard,dense-bmm

Every size N gets one seeded random system, shared by all methods: each node
has ``--degree`` distinct in-neighbours drawn uniformly, the ``--heads`` edge
weights are ``degree_normalize`` of U(0, 1) scores, the bias is N(0, 1);
float32 throughout. For every (N, method, mode) a fresh subprocess of this
script (``--worker``) builds the inputs, makes one warm-up call, then one call
whose peak RSS above the RSS right before it is the memory figure, then
``--repeats`` timed calls (the median is the time figure). "forward" runs
without autograd; "fwd+bwd" also back-propagates ``loss = (h * g).sum()`` for
a fixed random ``g`` to the edge weights and the bias.

Methods (each from the same ``edge_index``, ``edge_weight`` [E, M], ``bias`` [N, M] to ``h`` [N, M]):

* ``convergent-picard`` / ``convergent-anderson``: ``convergent.solve`` (implicit backward).
* ``cgs-model``: ``convergent.CGS`` (2 encoder layers, hidden 64, M heads, Picard),
  on 8 random node features and 1 edge feature; includes the encoder and decoder.
* ``dense-bmm``: the reference CGS code's formulation (Park et al., ``fixedpoint.py``):
  a dense ``[M, N, N]`` tensor filled from the edge weights, Picard iteration with
  ``torch.bmm``, one more step on the autograd tape, and a hook that solves the adjoint
  with the dense transposed ``γ Aᵀ``; the gradient of the edge weights comes from the
  full ``[M, N, N]`` outer product that autograd forms for ``bmm``. The stopping rule is
  convergent's (per head, relative) instead of the reference's absolute ``‖Δ‖ < tol``,
  which float32 cannot reach for large N. Sizes whose dense tensors exceed
  ``--dense-max-bytes`` are skipped.
* ``scipy-spsolve``: per head, ``scipy.sparse.linalg.spsolve(I − γ A_m, b_m)`` (SuperLU);
  its fwd+bwd factors once with ``splu`` and solves with ``I − γ A_m`` and its transpose.
* ``scipy-gmres``: per head, ``scipy.sparse.linalg.gmres`` with ``rtol=--tol`` (its own
  2-norm residual rule), forward and transposed.

Agreement: every method's ``h``, ``∂L/∂bias`` and ``∂L/∂edge_weight`` are compared with a
float64 SciPy solution (GMRES to rtol 1e-12, checked against ``spsolve`` for small N):
``max_m ‖x_m − ref_m‖∞ / ‖ref_m‖∞`` over heads (and over the two gradients).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy
import scipy.sparse
import scipy.sparse.linalg
import torch
import torch_geometric

import convergent
from convergent.solvers import default_max_iter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _dense_reference import dense_picard  # noqa: E402
from _measure import GiB, MiB, machine, peak_rss_bytes, run_watched, start_peak, total_memory_bytes  # noqa: E402

MODES = ("forward", "fwd+bwd")
NODE_FEATURES, EDGE_FEATURES = 8, 1
BASELINE = "convergent-picard"  # the "× convergent" columns divide by its time
#: How a method's cost grows with N, used only to skip cells predicted to exceed the limits.
GROWTH = {"dense-bmm": 2.0, "scipy-spsolve": 3.0}  # sparse LU of a random graph fills in
#: [M, N, N] float32 tensors alive at the dense method's peak (forward: A; fwd+bwd: A, γAᵀ for the
#: adjoint and autograd's gradient of A) — measured 1.0× and 3.0× at N = 1000 and 2000.
DENSE_COPIES = {False: 1, True: 3}


class Skip(Exception):
    """A method declines a cell (too slow or too big), with the reason."""


def parse_bytes(text: str) -> int:
    units = {"gib": GiB, "mib": MiB, "gb": 10**9, "mb": 10**6, "b": 1}
    lowered = text.strip().lower()
    for unit, scale in units.items():
        if lowered.endswith(unit):
            return int(float(lowered[: -len(unit)]) * scale)
    return int(float(lowered))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help="comma-separated node counts")
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--degree", type=int, default=5, help="in-degree of every node")
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls after the warm-up and memory calls; the median is reported")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads in every worker (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--dense-max-bytes", type=parse_bytes, default=8 * GiB,
                        help="skip the dense method where its [M, N, N] tensors need more (default 8GiB)")
    parser.add_argument("--mem-limit", type=parse_bytes, default=min(16 * GiB, int(0.7 * total_memory_bytes())),
                        help="kill a worker whose RSS exceeds this; skip cells predicted to need more "
                             "(default min(16GiB, 70%% of RAM))")
    parser.add_argument("--time-limit", type=float, default=60.0,
                        help="seconds per call: cells predicted to take longer are skipped, "
                             "a slower warm-up call is reported alone")
    parser.add_argument("--max-error", type=float, default=1e-2,
                        help="exit with status 1 if a relative error exceeds this (or a measurement fails)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: sizes 200,500, one repeat, one worker, no file unless --out")
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown results (default benchmarks/results/scaling.md; none with --quick)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = "200,500", 1
    elif args.out is None:
        args.out = Path(__file__).resolve().parent / "results" / "scaling.md"
    args.sizes = [int(float(n)) for n in args.sizes.split(",")]
    args.methods = args.methods.split(",")
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
    if min(args.sizes) <= args.degree:
        parser.error("every size must exceed --degree (distinct in-neighbours)")
    return args


# ---------------------------------------------------------------------------------------------
# The system: one seeded random graph per size, the same for every method.


def make_system(num_nodes: int, args) -> SimpleNamespace:
    generator = torch.Generator().manual_seed(args.seed)
    # `degree` distinct sources per target node: redraw repeats until there are none.
    source = torch.randint(0, num_nodes, (num_nodes, args.degree), generator=generator)
    while True:
        source = source.sort(dim=1).values
        repeated = torch.zeros_like(source, dtype=torch.bool)
        repeated[:, 1:] = source[:, 1:] == source[:, :-1]
        if not repeated.any():
            break
        source[repeated] = torch.randint(0, num_nodes, (int(repeated.sum()),), generator=generator)
    target = torch.arange(num_nodes).repeat_interleave(args.degree)
    edge_index = torch.stack([source.reshape(-1), target])
    # Edges in random order: no method may profit from a list sorted by target.
    edge_index = edge_index[:, torch.randperm(edge_index.shape[1], generator=generator)]
    num_edges = edge_index.shape[1]
    scores = torch.rand(num_edges, args.heads, generator=generator)
    return SimpleNamespace(
        num_nodes=num_nodes,
        edge_index=edge_index,
        edge_weight=convergent.degree_normalize(scores, edge_index, num_nodes),
        bias=torch.randn(num_nodes, args.heads, generator=generator),
        upstream=torch.randn(num_nodes, args.heads, generator=generator),  # g in loss = (h * g).sum()
        x=torch.randn(num_nodes, NODE_FEATURES, generator=generator),
        edge_attr=torch.rand(num_edges, EDGE_FEATURES, generator=generator),
        upstream_model=torch.randn(num_nodes, 1, generator=generator),
    )


# ---------------------------------------------------------------------------------------------
# Methods. Each ``setup(system, args, backward)`` prepares what is not part of the measured
# work and returns ``call()``, one forward (and backward) pass returning its outputs.


def setup_convergent(solver: str):
    def setup(system, args, backward):
        weight = system.edge_weight.detach().clone().requires_grad_(backward)
        bias = system.bias.detach().clone().requires_grad_(backward)

        def call():
            weight.grad = bias.grad = None
            with torch.set_grad_enabled(backward):
                h, info = convergent.solve(system.edge_index, weight, bias, gamma=args.gamma, solver=solver,
                                           tol=args.tol)
                if not backward:
                    return {"h": h, "iterations": [info.max_iterations, None]}
                (h * system.upstream).sum().backward()
            return {"h": h.detach(), "grad_bias": bias.grad, "grad_weight": weight.grad,
                    "iterations": [info.max_iterations, info.backward.max_iterations]}
        return call
    return setup


def setup_model(system, args, backward):
    torch.manual_seed(args.seed)
    model = convergent.CGS(NODE_FEATURES, 1, edge_channels=EDGE_FEATURES, hidden_channels=64,
                           num_heads=args.heads, gamma=args.gamma, num_layers=2, solver="picard", tol=args.tol)

    def call():
        model.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(backward):
            out = model(system.x, system.edge_index, system.edge_attr)
            if backward:
                (out * system.upstream_model).sum().backward()
        info = model.last_solve
        return {"iterations": [info.max_iterations, info.backward.max_iterations if backward else None]}
    return call


def dense_bytes(num_nodes: int, heads: int, backward: bool) -> int:
    return DENSE_COPIES[backward] * heads * num_nodes**2 * 4


def setup_dense(system, args, backward):
    heads, num_nodes = args.heads, system.num_nodes
    source, target = system.edge_index
    weight = system.edge_weight.detach().clone().requires_grad_(backward)
    bias = system.bias.detach().clone().requires_grad_(backward)
    max_iter = default_max_iter(args.gamma, args.tol)

    def call():
        weight.grad = bias.grad = None
        iterations = [None, None]
        with torch.set_grad_enabled(backward):
            # Which norm each head contracts in (all row sums ≤ 1: ∞-norm, else 1-norm), as convergent.
            row_sums = weight.detach().new_zeros(num_nodes, heads).index_add_(0, target, weight.detach())
            inf_norm = row_sums.amax(0) <= 1 + 1e3 * torch.finfo(weight.dtype).eps
            # The reference's prepare_degree_A_b: A[:, i, j] = values, on the autograd tape.
            A = weight.new_zeros(heads, num_nodes, num_nodes)
            A[:, target, source] = weight.T
            b = bias.T.unsqueeze(-1)  # [M, N, 1]
            with torch.no_grad():
                h, iterations[0] = dense_picard(A, b, args.gamma, args.tol, inf_norm, max_iter)
            z = args.gamma * torch.bmm(A, h) + b  # the reference's extra step that re-engages autograd
            if backward:
                # The reference's J = γ (φ'(y) * A)ᵀ with φ' = 1 for the linear map, and its hook that
                # replaces the incoming gradient g by the solution y of y = J y + g.
                J = (args.gamma * A.detach()).transpose(1, 2)

                def adjoint(grad):
                    y, iterations[1] = dense_picard(J, grad, 1.0, args.tol, ~inf_norm, max_iter)
                    return y

                z.register_hook(adjoint)
                (z.squeeze(-1).T * system.upstream).sum().backward()
        out = {"h": z.detach().squeeze(-1).T, "iterations": iterations}
        if backward:
            out.update(grad_bias=bias.grad, grad_weight=weight.grad)
        return out
    return call


def system_matrix(source, target, weight, num_nodes, gamma, dtype=np.float32) -> scipy.sparse.csr_matrix:
    """``I − γ A_m`` for one head: ``A_m[t, s] = weight[e]`` for every edge ``e: s → t``."""
    adjacency = scipy.sparse.csr_matrix((weight.astype(dtype), (target, source)), shape=(num_nodes, num_nodes))
    return (scipy.sparse.identity(num_nodes, dtype=dtype, format="csr") - dtype(gamma) * adjacency).tocsr()


def gmres(matrix, rhs, rtol):
    steps = [0]

    def count(_):
        steps[0] += 1

    x, info = scipy.sparse.linalg.gmres(matrix, rhs, rtol=rtol, atol=0.0, callback=count, callback_type="pr_norm")
    if info != 0:
        raise RuntimeError(f"scipy gmres did not converge (info={info})")
    return x, steps[0]


def setup_scipy(kind: str):
    def setup(system, args, backward):
        source, target = (a.numpy() for a in system.edge_index)
        weight, bias, upstream = system.edge_weight.numpy(), system.bias.numpy(), system.upstream.numpy()
        num_nodes, heads = bias.shape

        def call():
            h = np.empty_like(bias)
            u = np.empty_like(bias) if backward else None
            steps = [0, 0 if backward else None]
            for m in range(heads):
                started = time.perf_counter()
                matrix = system_matrix(source, target, weight[:, m], num_nodes, args.gamma)
                if kind == "gmres":
                    h[:, m], n = gmres(matrix, bias[:, m], args.tol)
                    steps[0] = max(steps[0], n)
                    if backward:
                        u[:, m], n = gmres(matrix.T, upstream[:, m], args.tol)
                        steps[1] = max(steps[1], n)
                elif not backward:
                    h[:, m] = scipy.sparse.linalg.spsolve(matrix, bias[:, m])
                else:
                    lu = scipy.sparse.linalg.splu(matrix.tocsc())
                    h[:, m] = lu.solve(bias[:, m])
                    u[:, m] = lu.solve(upstream[:, m], trans="T")
                head_seconds = time.perf_counter() - started
                if m == 0 and head_seconds * heads > args.time_limit:
                    raise Skip(f"one head took {head_seconds:.1f} s, so one call would take "
                               f"≈{head_seconds * heads:.0f} s > --time-limit {args.time_limit:g} s")
            out = {"h": h, "iterations": steps if kind == "gmres" else [None, None]}
            if backward:
                out.update(grad_bias=u, grad_weight=args.gamma * u[target] * h[source])
            return out
        return call
    return setup


METHODS = {
    "convergent-picard": setup_convergent("picard"),
    "convergent-anderson": setup_convergent("anderson"),
    "cgs-model": setup_model,
    "dense-bmm": setup_dense,
    "scipy-spsolve": setup_scipy("spsolve"),
    "scipy-gmres": setup_scipy("gmres"),
}


def reference_solution(system, args) -> dict:
    """float64 ``h``, ``∂L/∂bias``, ``∂L/∂edge_weight`` by SciPy GMRES (rtol 1e-12), head by head."""
    source, target = (a.numpy() for a in system.edge_index)
    weight = system.edge_weight.numpy()
    bias, upstream = system.bias.double().numpy(), system.upstream.double().numpy()
    h, u, check = np.empty_like(bias), np.empty_like(bias), 0.0
    for m in range(bias.shape[1]):
        matrix = system_matrix(source, target, weight[:, m], system.num_nodes, args.gamma, np.float64)
        h[:, m] = gmres(matrix, bias[:, m], 1e-12)[0]
        u[:, m] = gmres(matrix.T, upstream[:, m], 1e-12)[0]
        if system.num_nodes <= 2000:  # cross-check GMRES against the sparse LU
            direct = scipy.sparse.linalg.spsolve(matrix.tocsc(), bias[:, m])
            check = max(check, float(np.abs(direct - h[:, m]).max() / np.abs(direct).max()))
    return {"h": h, "grad_bias": u, "grad_weight": args.gamma * u[target] * h[source], "check": check}


# ---------------------------------------------------------------------------------------------
# Worker: measure a list of cells in this (fresh) process and write one JSON (+ .npy) per cell.


def cell_name(num_nodes: int, method: str, mode: str) -> str:
    return f"{num_nodes}-{method}-{mode.replace('+', '')}"


def run_worker(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    args = SimpleNamespace(**spec["args"])
    gc.freeze()  # the imported modules' objects: keeps each gc.collect() before a measurement fast
    torch.set_num_threads(args.threads)
    out_dir, systems = Path(spec["out_dir"]), {}
    for num_nodes, method, mode in spec["cells"]:
        if num_nodes not in systems:
            systems = {num_nodes: make_system(num_nodes, args)}
        system, name = systems[num_nodes], cell_name(num_nodes, method, mode)
        if method == "reference":
            started = time.perf_counter()
            outputs = reference_solution(system, args)
            result = {"seconds": time.perf_counter() - started, "check": outputs.pop("check")}
        else:
            try:
                result, outputs = measure(METHODS[method], system, args, mode == "fwd+bwd")
            except Skip as reason:
                result, outputs = {"skipped": str(reason)}, {}
        for key, value in outputs.items():
            if key != "iterations":
                np.save(out_dir / f"{name}.{key}.npy", np.asarray(value))
        result["threads"] = torch.get_num_threads()
        (out_dir / f"{name}.json").write_text(json.dumps(result))


def measure(setup, system, args, backward: bool) -> tuple[dict, dict]:
    """One warm-up call (JIT compilation, lazy initialisation), one call whose peak RSS above the
    baseline is the memory figure, then ``args.repeats`` timed calls. A warm-up call slower than
    ``args.time_limit`` is reported alone: its time and its peak, one-time costs included."""
    call = setup(system, args, backward)
    baseline = start_peak()
    started = time.perf_counter()
    outputs = call()
    first = time.perf_counter() - started
    peak, times = peak_rss_bytes() - baseline, [first]
    if first <= args.time_limit:
        outputs = None
        baseline = start_peak()
        outputs = call()
        peak, times = peak_rss_bytes() - baseline, []
        for _ in range(args.repeats):
            outputs = None
            started = time.perf_counter()
            outputs = call()
            times.append(time.perf_counter() - started)
    outputs = {key: value.detach().numpy() if isinstance(value, torch.Tensor) else value
               for key, value in outputs.items()}
    return {"seconds": statistics.median(times), "runs": len(times), "cold": first > args.time_limit,
            "peak_bytes": peak, "iterations": outputs.get("iterations")}, outputs


# ---------------------------------------------------------------------------------------------
# Driver: decide, launch, compare, tabulate.


def relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    """``max_m ‖x_m − ref_m‖∞ / ‖ref_m‖∞`` over the columns (heads)."""
    scale = np.abs(reference).max(axis=0)
    return float((np.abs(value.astype(np.float64) - reference).max(axis=0) / np.where(scale > 0, scale, 1)).max())


def predicted_skip(method: str, mode: str, num_nodes: int, args, done: dict) -> str | None:
    """Why (method, mode, num_nodes) is not worth running, or None."""
    backward = mode == "fwd+bwd"
    if method == "dense-bmm" and dense_bytes(num_nodes, args.heads, backward) > args.dense_max_bytes:
        needed = dense_bytes(num_nodes, args.heads, backward)
        return (f"does not fit: {needed / GiB:.1f} GiB needed ({DENSE_COPIES[backward]} × M·N²·4 bytes) "
                f"> --dense-max-bytes {args.dense_max_bytes / GiB:.1f} GiB")
    if backward and "skipped" in done.get((num_nodes, method, "forward"), {}):
        return "its forward pass was not measured"
    smaller = [(n, r) for (n, m, d), r in done.items() if m == method and d == mode and n < num_nodes]
    if not smaller:
        return None
    previous, result = max(smaller, key=lambda item: item[0])
    if "skipped" in result:
        return f"skipped at N={previous:,} already"
    growth = (num_nodes / previous) ** GROWTH.get(method, 1.0)
    law = f"N^{GROWTH[method]:g}" if method in GROWTH else "linear"
    if result["seconds"] * growth > args.time_limit:
        return (f"≈{result['seconds'] * growth:.0f} s per call expected ({law} from {result['seconds']:.3g} s "
                f"at N={previous:,}) > --time-limit {args.time_limit:g} s")
    if result["peak_bytes"] * growth > args.mem_limit:
        return (f"≈{result['peak_bytes'] * growth / GiB:.1f} GiB expected ({law} from "
                f"{result['peak_bytes'] / GiB:.2f} GiB at N={previous:,}) > --mem-limit {args.mem_limit / GiB:.1f} GiB")
    return None


def worker_environment() -> dict:
    """OpenMP threads that sleep instead of spinning while they wait: with the default spinning, a
    busy neighbour on a small shared machine made calls of many small ops hundreds of times slower."""
    return {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}


def launch(cells: list, args, work: Path) -> dict:
    """Run ``cells`` in one fresh worker process; return their results by cell."""
    spec = work / f"spec-{cell_name(*cells[0])}.json"
    worker_args = {k: v for k, v in vars(args).items() if k not in ("out", "worker")}
    spec.write_text(json.dumps({"args": worker_args, "cells": cells, "out_dir": str(work)}))
    time_limit = (args.repeats + 2) * args.time_limit + 120 * len(cells)
    code, killed = run_watched([sys.executable, __file__, "--worker", str(spec)], env=worker_environment(),
                               mem_limit=args.mem_limit, time_limit=time_limit)
    results = {}
    for cell in cells:
        path = work / f"{cell_name(*cell)}.json"
        if path.exists():
            results[tuple(cell)] = json.loads(path.read_text())
        else:
            results[tuple(cell)] = {"skipped": killed or f"worker failed (exit code {code})", "failed": True}
            killed = killed and "killed with an earlier cell of the same process"
    return results


def compare(cell: tuple, work: Path) -> dict:
    """Relative errors of a cell's saved outputs against the float64 reference of its size."""
    name, reference = cell_name(*cell), cell_name(cell[0], "reference", "fwd+bwd")
    errors = {}
    for key in ("h", "grad_bias", "grad_weight"):
        path, ref_path = work / f"{name}.{key}.npy", work / f"{reference}.{key}.npy"
        if path.exists() and ref_path.exists():
            errors[key] = relative_error(np.load(path), np.load(ref_path))
            path.unlink()
    return errors


def fmt_seconds(result: dict | None) -> str:
    if not result or "skipped" in result:
        return "—"
    text = f"{result['seconds']:.3g}"
    return text + " (1 cold run)" if result["cold"] else text


def fmt_ratio(result: dict | None, baseline: dict | None) -> str:
    if not result or not baseline or "skipped" in result or "skipped" in baseline:
        return "—"
    return f"{result['seconds'] / baseline['seconds']:.3g}"


def fmt_peak(result: dict | None) -> str:
    if not result or "skipped" in result:
        return "—"
    mebibytes = result["peak_bytes"] / MiB
    return f"{mebibytes:.3g}" if mebibytes < 1000 else f"{mebibytes:.0f}"


def fmt_error(*values: float | None) -> str:
    values = [v for v in values if v is not None]
    return f"{max(values):.1e}" if values else "—"


def fmt_iterations(method: str, forward: dict | None, both: dict | None) -> str:
    if method == "scipy-spsolve":
        return "direct (LU)"
    first = ((forward or {}).get("iterations") or [None, None])[0]
    first = first if first is not None else ((both or {}).get("iterations") or [None, None])[0]
    second = ((both or {}).get("iterations") or [None, None])[1]
    return " / ".join("—" if n is None else str(n) for n in (first, second))


def source_digest() -> str:
    """SHA-1 of the ``convergent`` sources the workers import, to notice edits during a run."""
    package, digest = Path(convergent.__file__).resolve().parent, hashlib.sha1()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def git_revision() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        revision = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return revision + (" + uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args.worker)
    started, box, load, digest = time.perf_counter(), machine(), os.getloadavg(), source_digest()
    print(f"sizes {args.sizes}, methods {args.methods}, {args.repeats} repeats, {args.threads} torch threads",
          flush=True)
    done, errors, checks, threads = {}, {}, {}, set()

    def show(cell):
        print(f"  N={cell[0]:>9,} {cell[1]:<20} {cell[2]:<8} {describe(done[cell])}", flush=True)

    with tempfile.TemporaryDirectory(prefix="convergent-scaling-") as tmp:
        work = Path(tmp)
        planned = []  # --quick: every cell in one worker process (fast; the memory figures then see each other)
        for num_nodes in args.sizes:
            for method in args.methods:
                for mode in MODES:
                    cell = (num_nodes, method, mode)
                    why = predicted_skip(method, mode, num_nodes, args, done)
                    if why:
                        done[cell] = {"skipped": why}
                    elif args.quick:
                        planned.append(cell)
                        continue
                    else:
                        done.update(launch([cell], args, work))
                    show(cell)
            reference = (num_nodes, "reference", "fwd+bwd")
            if args.quick:
                planned.append(reference)
            else:
                done.update(launch([reference], args, work))
        if planned:
            done.update(launch(planned, args, work))
            for cell in planned:
                if cell[1] != "reference":
                    show(cell)
        for num_nodes in args.sizes:
            checks[num_nodes] = done.pop((num_nodes, "reference", "fwd+bwd"), {})
            for cell, result in done.items():
                if cell[0] == num_nodes:
                    threads.add(result.get("threads"))
                    errors[cell] = compare(cell, work)
    elapsed = time.perf_counter() - started
    digests = (digest, source_digest())
    problems = [f"N={cell[0]:,}, {cell[1]}, {cell[2]}: {result['skipped']}"
                for cell, result in done.items() if result.get("failed")]
    problems += [f"N={cell[0]:,}, {cell[1]}, {cell[2]}: relative error of {key} {value:.1e} > --max-error "
                 f"{args.max_error:g}" for cell, found in errors.items() for key, value in found.items()
                 if not value <= args.max_error]
    report = render(args, box, done, errors, checks, threads, elapsed, load, digests, problems)
    print()
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        print(f"written to {args.out}")
    if problems:
        sys.exit(1)


def describe(result: dict) -> str:
    if "skipped" in result:
        return f"not measured: {result['skipped']}"
    return (f"{result['seconds']:.3g} s, peak +{result['peak_bytes'] / MiB:.0f} MiB, "
            f"iterations {result.get('iterations')}")


def render(args, box, done, errors, checks, threads, elapsed, load, digests, problems) -> str:
    versions = (f"python {box['python']}, torch {torch.__version__}, torch_geometric {torch_geometric.__version__}, "
                f"scipy {scipy.__version__}, numpy {np.__version__}, convergent {convergent.__version__} "
                f"(git {git_revision()}; sources sha1 {digests[0]})")
    threads.discard(None)
    command = " ".join(["python benchmarks/scaling.py", *sys.argv[1:]])
    lines = [
        "# Scaling: `convergent` vs the dense reference formulation vs SciPy",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; total run {elapsed / 60:.1f} min; "
        f"command `{command}`",
        f"- machine: {box['platform']}; CPU {box['cpu']}, {box['cores']} cores; {box['memory']} RAM "
        f"(shared: load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the start, timings are noisy)",
        f"- software: {versions}",
        *([f"- **WARNING: the convergent sources changed during the run (sha1 {digests[0]} → {digests[1]}); "
           f"the rows may mix versions — run again**"] if digests[0] != digests[1] else []),
        f"- threads: torch.set_num_threads({args.threads}) → {', '.join(map(str, sorted(threads))) or '?'}; "
        f"OMP_WAIT_POLICY={worker_environment()['OMP_WAIT_POLICY']}; SciPy's sparse LU and GMRES run on one core",
        f"- problem: N nodes, in-degree {args.degree} (distinct uniform sources), E = {args.degree}·N edges, "
        f"M = {args.heads} heads, weights `degree_normalize(U(0,1) scores)`, bias N(0,1), γ = {args.gamma}, "
        f"tol = {args.tol:g}, **float32** for every method, seed {args.seed}",
        f"- time: median of {args.repeats} calls after a warm-up call and the memory call (`time.perf_counter`), "
        f"in seconds; "
        f"a call longer than --time-limit {args.time_limit:g} s is reported as that one cold run",
        "- peak: **peak RSS above the baseline** RSS taken right before the call after the warm-up (VmHWM after "
        "resetting it through /proc/self/clear_refs), outputs included, in MiB, one fresh process per cell"
        + (" — except here: --quick measures all cells in one process, so its peaks are rough" if args.quick else ""),
        "- × convergent: time / time of convergent-picard at the same N and mode (> 1: slower than convergent)",
        "- rel. err: max over heads of ‖x − x_ref‖∞ / ‖x_ref‖∞ against a float64 SciPy solution (GMRES, rtol "
        "1e-12); h from both modes, grads = max over ∂L/∂bias and ∂L/∂edge_weight",
        "- iterations: map evaluations forward / backward (convergent: the max over heads; dense: its own; "
        "GMRES: inner iterations, max over heads)",
        "",
        "| N | E | method | iterations fwd / bwd | forward s | fwd+bwd s | peak MiB fwd | peak MiB fwd+bwd "
        "| × convergent fwd | × convergent fwd+bwd | rel. err h | rel. err grads |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    skipped = []
    for num_nodes in args.sizes:
        for method in args.methods:
            forward, both = done.get((num_nodes, method, "forward")), done.get((num_nodes, method, "fwd+bwd"))
            base_forward, base_both = (done.get((num_nodes, BASELINE, mode)) for mode in MODES)
            e_forward = errors.get((num_nodes, method, "forward"), {})
            e_both = errors.get((num_nodes, method, "fwd+bwd"), {})
            lines.append(
                f"| {num_nodes:,} | {args.degree * num_nodes:,} | {method} | {fmt_iterations(method, forward, both)} "
                f"| {fmt_seconds(forward)} | {fmt_seconds(both)} | {fmt_peak(forward)} | {fmt_peak(both)} "
                f"| {fmt_ratio(forward, base_forward)} | {fmt_ratio(both, base_both)} "
                f"| {fmt_error(e_forward.get('h'), e_both.get('h'))} "
                f"| {fmt_error(e_both.get('grad_bias'), e_both.get('grad_weight'))} |")
            for mode, result in zip(MODES, (forward, both)):
                if result and "skipped" in result:
                    skipped.append(f"- N={num_nodes:,}, {method}, {mode}: {result['skipped']}")
    lines += ["", "Not measured:", "", *(skipped or ["- nothing"]), ""]
    lines += ["**Problems:**", "", *(f"- {problem}" for problem in problems), ""] if problems else [
        f"Checks: every measured method agrees with the float64 reference within --max-error {args.max_error:g}.", ""]
    lines += [
        "Notes:",
        "",
        "- forward runs under `torch.no_grad()`; fwd+bwd back-propagates `(h * g).sum()` to `edge_weight` and "
        "`bias` (cgs-model: `(out * g).sum()` to its parameters). Every method starts from the same tensors "
        "(`edge_index`, `edge_weight`, `bias`), so building its own matrices (dense tensor, SciPy CSR) is timed.",
        "- cgs-model's × convergent compares the whole model (encoder, weights, solve, decoder) with the bare solve.",
        "- convergent's stopping rule is relative in each head's contraction norm over the whole graph (the 1-norm "
        "for `degree_normalize` weights), so a few slowly converging nodes (e.g. one whose only out-edge is a heavy "
        "self-loop) can keep ∞-norm errors well above tol; dense-bmm uses the same rule. SciPy GMRES uses its own "
        "rule ‖b − Kx‖₂ ≤ tol·‖b‖₂.",
        "- scipy-spsolve forward is `spsolve`; its fwd+bwd factors once with `splu` and solves twice.",
        "",
    ]
    lines += ["Reference self-check (float64 GMRES vs float64 spsolve, N ≤ 2000): "
              + (", ".join(f"N={n:,}: {c['check']:.1e}" for n, c in checks.items() if c.get("check"))
                 or "not applicable"), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
