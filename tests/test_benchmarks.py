"""Smoke runs of the benchmark scripts: they run end to end and their methods agree."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", ["scaling.py", "speed.py"])
def test_benchmark_quick_run(script):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick"], capture_output=True, text=True,
                            timeout=600, cwd=BENCHMARKS.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "|" in result.stdout  # printed its table


def test_dense_reference_solve_agrees_with_convergent():
    """The dense stand-in the speed benchmark times must compute the same thing."""
    import torch

    import convergent

    sys.path.insert(0, str(BENCHMARKS))
    from _dense_reference import dense_solve

    generator = torch.Generator().manual_seed(0)
    edge_index = torch.randint(0, 40, (2, 160), generator=generator)
    scores = torch.rand(160, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    upstream = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    results = []
    for solve in (convergent.solve, dense_solve):
        weight = convergent.degree_normalize(scores, edge_index, 40).requires_grad_()
        b = bias.clone().requires_grad_()
        h, _ = solve(edge_index, weight, b, gamma=0.7, tol=1e-12)
        (h * upstream).sum().backward()
        results.append((h, weight.grad, b.grad))
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)
