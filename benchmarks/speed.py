"""Speed of the solver and of a training step, side by side in one run.

    python benchmarks/speed.py            # workload W (N = 10^6, E = 5·10^6, M = 16), writes benchmarks/results/speed.md
    python benchmarks/speed.py --quick    # the same steps on a small graph, a few seconds

Workload W: each node has in-degree 5 with sources uniform at random, M = 16
heads, float32, edge weights edge-major [E, M] from ``degree_normalize`` of
U(0, 1) scores, bias N(0, 1). Every method gets the same tensors. Times are
medians of --repeats calls after one warm-up; peak memory is peak RSS above
the RSS right before the call (VmHWM reset through /proc/self/clear_refs).

Sections:
 1. one multi-head product y = A x: compiled kernel, pure-PyTorch path, SciPy CSR
    head by head, against a plain memory copy of the weights (the machine's limit);
 2. forward solve to tol = 1e-6: Picard at γ = 0.5 in products' worth of time;
    Picard and Anderson at γ = 0.9 and 0.99 (products and seconds);
 3. backward (adjoint solve and gradients) against forward;
 4. peak extra memory of forward + backward against the bytes of the inputs;
 5. the CGS model forward + backward on the largest graph (--largest-nodes);
 6. one training update of the graph value iteration configuration: sparse CGS
    against the same model with the reference dense [heads, N, N] solve, in this
    process and in a second one under PyTorch's default allocator (_gvi_update.py);
 7. 1 and 2 threads: same results, and their times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# NumPy, hence SciPy's product outputs, asks the kernel for transparent huge pages on large
# arrays (numpy._core.multiarray._get_madvise_hugepage()); PyTorch does the same for CPU
# tensors of 2 MiB or more when this is set, so that a fresh output costs both sides alike.
# Set THP_MEM_ALLOC_ENABLE=0 to measure without it.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.sparse  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _gvi_update  # noqa: E402
import _measure  # noqa: E402

import convergent  # noqa: E402
from convergent.sparse_map import SparseMaps  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--nodes", type=int, default=1_000_000)
parser.add_argument("--degree", type=int, default=5)
parser.add_argument("--heads", type=int, default=16)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--largest-nodes", type=int, default=2_000_000, help="section 5 graph size (E = 5 N)")
parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed.md")
args = parser.parse_args()
mdp_graphs = 64
if args.quick:
    args.nodes, args.largest_nodes, args.repeats, mdp_graphs = 20_000, 20_000, 2, 4
threads = torch.get_num_threads()
lines: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    lines.append(text)


def median_time(call, repeats: int = args.repeats) -> float:
    return _gvi_update.median_time(call, repeats)


def peak_extra(call) -> tuple[object, float]:
    """(result of call, peak RSS above the RSS before it, in bytes)."""
    baseline = _measure.start_peak()
    result = call()
    return result, _measure.peak_rss_bytes() - baseline


def random_system(num_nodes: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.arange(num_nodes).repeat_interleave(args.degree)
    source = torch.randint(0, num_nodes, (target.numel(),), generator=generator)
    edge_index = torch.stack([source, target])
    scores = torch.rand(target.numel(), args.heads, generator=generator)
    weight = convergent.degree_normalize(scores, edge_index, num_nodes)
    bias = torch.randn(num_nodes, args.heads, generator=generator)
    return edge_index, weight, bias


MiB = _measure.MiB
machine = _measure.machine()
say(f"# Speed: solver and training step ({'--quick' if args.quick else 'workload W'})")
say()
say(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; command "
    f"`python benchmarks/speed.py{' --quick' if args.quick else ''}`")
say(f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']} RAM; torch threads {threads}")
say(f"- software: python {machine['python']}, torch {torch.__version__}, scipy {scipy.__version__}, "
    f"numpy {np.__version__}, numba {getattr(convergent._kernels.numba, '__version__', 'absent')}")
edge_index, weight, bias = random_system(args.nodes)
num_edges = edge_index.shape[1]
say(f"- workload: N = {args.nodes:,}, E = {num_edges:,} (in-degree {args.degree}, uniform sources), "
    f"M = {args.heads}, float32, weights edge-major [E, M]; median of {args.repeats} after a warm-up; "
    f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
    f"THP_MEM_ALLOC_ENABLE={os.environ['THP_MEM_ALLOC_ENABLE']} (huge pages for large tensors, as NumPy uses)")
say()

# ---------------------------------------------------------------- 1. one product
say("## 1. One multi-head product y = A x")
say()
x = torch.randn(args.nodes, args.heads)
maps, _ = SparseMaps.by_target(edge_index[0], edge_index[1], weight, args.nodes)
plain = SparseMaps(edge_index[0], edge_index[1], weight, args.nodes)
csr_per_head = [scipy.sparse.csr_matrix((weight[:, m].numpy().copy(), maps.source.numpy(), maps.indptr.numpy()),
                                        shape=(args.nodes, args.nodes)) for m in range(args.heads)]
x_per_head = [x[:, m].numpy().copy() for m in range(args.heads)]
copy_target = torch.empty_like(weight)
reused_output = torch.empty_like(x)
# Rounds of every method in turn, so a noisy neighbour slows all of them alike.
product_calls = {
    "compiled": lambda: maps.matmul(x),
    "buffered": lambda: maps.matmul(x, out=reused_output),
    "torch": lambda: plain.matmul(x),
    "scipy": lambda: [csr_per_head[m] @ x_per_head[m] for m in range(args.heads)],
    "copy": lambda: copy_target.copy_(weight),
}
rounds = {name: [] for name in product_calls}
for _ in range(args.repeats + 1):
    for name, call in product_calls.items():
        start = time.perf_counter()
        call()
        rounds[name].append(time.perf_counter() - start)
compiled_time, buffered_time, torch_time, scipy_time, copy_time = (statistics.median(times[1:])
                                                                    for times in rounds.values())
scipy_result = torch.from_numpy(np.stack([csr_per_head[m] @ x_per_head[m] for m in range(args.heads)], 1))
agreement = ((maps.matmul(x) - scipy_result).abs().max() / scipy_result.abs().max()).item()
# Bytes the product must move at least: weights, column indices, row offsets, one x row
# per edge (gathered) and the output.
product_bytes = weight.nbytes + maps.source.nbytes + maps.indptr.nbytes + num_edges * args.heads * 4 + x.nbytes
copy_rate = 2 * weight.nbytes / copy_time
product_rate = product_bytes / compiled_time
say("| method | seconds | × compiled | effective GB/s |")
say("|---|---:|---:|---:|")
say(f"| convergent compiled kernel | {compiled_time:.4f} | 1.00 | {product_rate / 1e9:.2f} |")
say(f"| convergent compiled kernel into a reused output (as the solvers call it) | {buffered_time:.4f} | "
    f"{buffered_time / compiled_time:.2f} | {product_bytes / buffered_time / 1e9:.2f} |")
say(f"| convergent pure PyTorch (index_add) | {torch_time:.4f} | {torch_time / compiled_time:.2f} | "
    f"{product_bytes / torch_time / 1e9:.2f} |")
say(f"| SciPy CSR, head by head | {scipy_time:.4f} | {scipy_time / compiled_time:.2f} | "
    f"{product_bytes / scipy_time / 1e9:.2f} |")
say(f"| memory copy of the weights (read + write) | {copy_time:.4f} | — | {copy_rate / 1e9:.2f} |")
say()
say(f"Compiled kernel: **{scipy_time / compiled_time:.2f}× faster than SciPy** (target ≥ 1.8×; "
    f"{scipy_time / buffered_time:.2f}× into a reused output); effective "
    f"{product_rate / 1e9:.2f} GB/s = {product_rate / copy_rate:.0%} of the copy rate. "
    f"Max relative difference from SciPy: {agreement:.1e}.")
say()

# ---------------------------------------------------------------- 2. forward solves
say("## 2. Forward solve to tol = 1e-6")
say()
say("| weights | γ | solver | products | seconds | products' worth of time |")
say("|---|---:|---|---:|---:|---:|")
# W's weights (U(0, 1) scores) leave column sums near 0.5, so the map contracts much faster
# than γ; column-stochastic weights (scores ≡ 1, every column sum 1) are the hard case.
stochastic = convergent.degree_normalize(torch.ones_like(weight), edge_index, args.nodes)
for label, weights, gamma in (("W", weight, 0.5), ("W", weight, 0.9), ("stochastic", stochastic, 0.9),
                              ("stochastic", stochastic, 0.99)):
    for solver in ("picard", "anderson"):
        def forward(weights=weights, gamma=gamma, solver=solver):
            with torch.no_grad():
                return convergent.solve(edge_index, weights, bias, gamma=gamma, solver=solver, tol=1e-6)
        if gamma > 0.9:  # slow: one timed call, the kernels being warm by now
            start = time.perf_counter()
            _, info = forward()
            seconds = time.perf_counter() - start
        else:
            seconds = median_time(forward, repeats=max(1, args.repeats // 2))
            _, info = forward()
        say(f"| {label} | {gamma} | {solver} | {info.max_iterations} | {seconds:.3f} | {seconds / compiled_time:.1f} |")
say()
say("Target: Picard at γ = 0.5 within 25 products' worth; Anderson fewer products than Picard at γ = 0.9 and 0.99.")
say()

# ---------------------------------------------------------------- 3 + 4. backward and memory
say("## 3–4. Backward and peak memory (Picard, γ = 0.5)")
say()
upstream = torch.randn_like(bias)
input_bytes = edge_index.nbytes + weight.nbytes + bias.nbytes


def forward_backward(backward: bool = True):
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    start = time.perf_counter()
    h, info = convergent.solve(edge_index, w, b, gamma=0.5, solver="picard", tol=1e-6)
    middle = time.perf_counter()
    if backward:
        (h * upstream).sum().backward()
    return middle - start, time.perf_counter() - middle, info


timings = [forward_backward() for _ in range(max(1, args.repeats // 2) + 1)][1:]
forward_seconds = statistics.median(t[0] for t in timings)
backward_seconds = statistics.median(t[1] for t in timings)
_, peak = peak_extra(forward_backward)
say(f"- forward {forward_seconds:.3f} s, backward {backward_seconds:.3f} s: backward = "
    f"**{backward_seconds / forward_seconds:.2f}× forward** (target ≤ 1.5×); adjoint iterations "
    f"{timings[-1][2].backward.max_iterations}")
say(f"- inputs (edge_index, weights, bias): {input_bytes / MiB:.0f} MiB; peak extra memory of forward + backward: "
    f"{peak / MiB:.0f} MiB = **{peak / input_bytes:.2f}× the inputs** (target ≤ 3×; includes the "
    f"{weight.nbytes / MiB:.0f} MiB weight gradient it returns)")
say()
# ---------------------------------------------------------------- 5. largest graph
say("## 5. The CGS model on the largest graph")
say()
del maps, plain, csr_per_head, x_per_head, copy_target, scipy_result
largest_edges = args.degree * args.largest_nodes
generator = torch.Generator().manual_seed(1)
largest_index = torch.stack([torch.randint(0, args.largest_nodes, (largest_edges,), generator=generator),
                             torch.arange(args.largest_nodes).repeat_interleave(args.degree)])
features = torch.randn(args.largest_nodes, 8, generator=generator)
edge_features = torch.rand(largest_edges, 1, generator=generator)
torch.manual_seed(0)
LARGEST_MODEL = dict(hidden_channels=16, num_heads=args.heads, gamma=0.5, num_layers=2, solver="picard", tol=1e-6)
model = convergent.CGS(8, 1, edge_channels=1, **LARGEST_MODEL)


def model_step():
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    model(features, largest_index, edge_features).sum().backward()
    return time.perf_counter() - start


seconds, peak = peak_extra(model_step)
say(f"- N = {args.largest_nodes:,}, E = {largest_edges:,}, CGS({LARGEST_MODEL}), 8 node and 1 edge feature")
say(f"- forward + backward: **{seconds:.1f} s, peak extra memory {peak / 2**30:.2f} GiB** "
    f"(machine: {machine['memory']}); solve {model.last_solve.max_iterations} iterations, adjoint "
    f"{model.last_solve.backward.max_iterations}")
say()
del largest_index, features, edge_features, model

# ---------------------------------------------------------------- 6. GVI training update
say("## 6. One training update, graph value iteration configuration")
say()
mdp = _gvi_update.mdp_batch(mdp_graphs)
say(f"- {mdp_graphs} MDP graphs of the GVI task (`gvi_graphs`, seed 2: 20–49 states, 5–9 actions each, their "
    f"optimal values as targets): N = {mdp['x'].shape[0]:,}, "
    f"E = {mdp['edge_index'].shape[1]:,}; CGS({_gvi_update.GVI}); MSE loss, Adam")
say("- in this process (huge pages as set above), and in a second process under PyTorch's default "
    "allocator (THP_MEM_ALLOC_ENABLE=0), as `convergent train` runs")
say()
allocators = {f"THP_MEM_ALLOC_ENABLE={os.environ['THP_MEM_ALLOC_ENABLE']}": _gvi_update.measure(mdp_graphs, args.repeats)}
if os.environ["THP_MEM_ALLOC_ENABLE"] != "0":
    child = subprocess.run([sys.executable, str(Path(_gvi_update.__file__)), "--graphs", str(mdp_graphs),
                            "--repeats", str(args.repeats)], env={**os.environ, "THP_MEM_ALLOC_ENABLE": "0"},
                           capture_output=True, text=True, check=True)
    allocators["THP_MEM_ALLOC_ENABLE=0"] = json.loads(child.stdout)
say("| allocator | solve | seconds per update | dense ÷ this |")
say("|---|---|---:|---:|")
ratios = {}
for allocator, update_times in allocators.items():
    for solver in _gvi_update.SOLVERS:
        say(f"| {allocator} | convergent, solver={solver!r} | {update_times[solver]:.4f} | "
            f"{update_times['dense'] / update_times[solver]:.3g} |")
    say(f"| {allocator} | reference dense [heads, N, N] with batched matmul | {update_times['dense']:.3f} | 1 |")
    ratios[allocator] = update_times["dense"] / min(update_times[solver] for solver in _gvi_update.SOLVERS)
say()
say("Sparse CGS update (fastest solver) against the dense formulation: "
    + "; ".join(f"**{ratio:.3g}×** with {allocator}" for allocator, ratio in ratios.items()) + " (target ≥ 100×).")
say()

# ---------------------------------------------------------------- 7. threads
say("## 7. Threads")
say()
results = {}
for count in (1, 2):
    torch.set_num_threads(count)
    maps, _ = SparseMaps.by_target(edge_index[0], edge_index[1], weight, args.nodes)
    product = median_time(lambda: maps.matmul(x))
    solve_seconds = median_time(lambda: convergent.solve(edge_index, weight, bias, gamma=0.5, solver="picard"),
                                repeats=max(1, args.repeats // 2))
    results[count] = (maps.matmul(x), convergent.solve(edge_index, weight, bias, gamma=0.5, solver="picard")[0],
                      product, solve_seconds)
torch.set_num_threads(threads)
product_difference = ((results[1][0] - results[2][0]).abs().max() / results[1][0].abs().max()).item()
solve_difference = ((results[1][1] - results[2][1]).abs().max() / results[1][1].abs().max()).item()
say("| threads | product s | solve s (Picard, γ = 0.5) |")
say("|---:|---:|---:|")
for count in (1, 2):
    say(f"| {count} | {results[count][2]:.4f} | {results[count][3]:.3f} |")
say()
say(f"Max relative difference between 1 and 2 threads: product {product_difference:.1e}, solve {solve_difference:.1e}.")
if max(agreement, product_difference, solve_difference) > 1e-5:
    sys.exit(f"methods disagree: SciPy {agreement:.1e}, threads {product_difference:.1e} / {solve_difference:.1e}")

if not args.quick:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {args.out}")
