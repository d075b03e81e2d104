"""The `convergent` command and the project's own set-up files."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "convergent.cli", *args], capture_output=True, text=True, timeout=300)


def test_demo_beats_the_constant_prediction():
    result = run_cli("demo", "--steps", "60", "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["test_mse"] < report["constant_mse"] / 3
    # tol = 1e-5 relative, γ = 0.8, and a 1-norm over up to ~50 nodes of order-one values.
    assert report["max_error_bound"] < 1e-2


def test_bad_steps_exit_non_zero_with_a_message():
    result = run_cli("demo", "--steps", "0")
    assert result.returncode == 2 and "--steps" in result.stderr


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^(pip install -e '\.\[test\]' && python -m pytest -q)", readme, re.M).group(1)
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_example_runs():
    example = re.search(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S).group(1)
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_the_package_imports_without_the_optional_simulators():
    code = ("import sys; sys.modules['openpnm'] = None\n"
            "import convergent, convergent.tasks, convergent.cli\n"
            "sys.exit(convergent.cli.main(['train', 'porenet', '--quiet']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "pip install -e '.[porenet]'" in result.stderr and "Traceback" not in result.stderr
