"""`write_report`: the HTML page of a run folder, read as text and rendered by headless Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from convergent import __version__
from convergent.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONFIG = {"task": "gvi", "model": "cgs", "model_options": {"num_heads": 8, "gamma": 0.9}, "updates": 30,
          "learning_rate": 0.001, "note": "<b>bold</b>"}
METRICS = [{"update": 10, "loss": 2.5, "lr": 1e-3, "seconds": 0.5},
           {"update": 15, "mape": 5.0, "policy_accuracy": 0.7},
           {"update": 20, "loss": 0.75, "lr": 5e-4, "seconds": 1.0},
           {"update": 30, "loss": 0.25, "lr": 1e-4, "seconds": 1.5},
           {"update": 30, "mape": 3.25, "policy_accuracy": 0.8125}]
SOLVES = """graph,nodes,iterations,residual,error_bound,converged
g0,5,12,1e-7,2e-6,1
g1,8,20,3e-6,4.5e-5,1
g2,13,50,0.01,0.123456,0
g3,4,1,0.0,0.0,1
"""
RESULTS = """method,test set,MAPE %,parameters
cgs,a,2.4312926,278794
mpnn,a,4.8560662,75076
"""
REPORT_IMAGES = 4  # learning curves, parity, iteration and residual histograms


def tiny_png(path: Path) -> None:
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [0, 1])
    figure.savefig(path, dpi=40)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A training-run folder with every file `write_report` reads."""
    run = tmp_path / "run-cgs"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(CONFIG))
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in METRICS))
    (run / "solves.csv").write_text(SOLVES)
    (run / "results.csv").write_text(RESULTS)
    tiny_png(run / "parity.png")
    tiny_png(run / "learning_curve.png")
    return run


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def dump_dom(page: Path, profile: Path) -> str:
    """The page's DOM after load, as headless Chromium serialises it."""
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed: apt-get install chromium")
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_report_shows_config_metrics_solves_and_results(run_dir):
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text()
    assert "<title>run-cgs: gvi / cgs</title>" in page and f"convergent {__version__}" in page
    for setting, value in [("model_options.num_heads", "8"), ("model_options.gamma", "0.9"), ("updates", "30"),
                           ("learning_rate", "0.001")]:
        assert re.search(rf"<td>{re.escape(setting)}</td><td[^>]*>{re.escape(value)}</td>", page), setting
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold" not in page
    assert "at update 30" in page and ">3.25<" in page and ">0.8125<" in page
    assert "3 of 4 graphs converged; the largest error bound is 0.1235." in page
    assert "Not converged: g2" in page and "Residual exactly 0 (left out of the histogram): 1 of 4 graphs." in page
    assert "<th>method</th><th>test set</th><th>MAPE %</th><th>parameters</th>" in page
    assert ('<tr><td>cgs</td><td>a</td><td class="number">2.431</td><td class="number">278794</td></tr>'
            in page)
    assert ">4.856<" in page
    assert "not recorded" not in page


def test_referenced_images_are_png_files_next_to_the_report(run_dir):
    page = write_report(run_dir).read_text()
    sources = image_sources(page)
    assert len(sources) == REPORT_IMAGES and "parity.png" in sources
    for source in sources:
        assert (run_dir / source).read_bytes()[:8] == PNG_MAGIC, source
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


def test_browser_loads_every_image_and_shows_the_tables(run_dir, tmp_path):
    dom = dump_dom(write_report(run_dir), tmp_path / "profile")
    assert f'data-images-loaded="{REPORT_IMAGES}/{REPORT_IMAGES}"' in dom
    assert dom.count("<table>") == 3  # configuration, last validation metrics, results
    assert 'class="missing"' not in dom


def test_browser_reports_a_missing_image(run_dir, tmp_path):
    page = write_report(run_dir)
    (run_dir / "report_residuals.png").unlink()
    dom = dump_dom(page, tmp_path / "profile")
    assert f'data-images-loaded="{REPORT_IMAGES - 1}/{REPORT_IMAGES}"' in dom
    assert '<p class="missing">Image report_residuals.png could not be loaded.</p>' in dom


def test_a_folder_that_is_not_a_run_folder_is_an_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"not a run folder.*config\.json nor results\.csv"):
        write_report(tmp_path)


def test_missing_optional_files_are_noted(run_dir):
    for name in ("solves.csv", "results.csv", "metrics.jsonl", "parity.png"):
        (run_dir / name).unlink()
    page = write_report(run_dir).read_text()
    for what in ("Solver statistics (solves.csv)", "A comparison table (results.csv)", "Metrics (metrics.jsonl)",
                 "The parity plot (parity.png)"):
        assert f"{what} not recorded in this run." in page
    assert image_sources(page) == []


def test_benchmark_folder_shows_results_and_links_its_runs(run_dir):
    bench = run_dir.parent
    (bench / "results.csv").write_text(RESULTS)
    write_report(run_dir)
    page = write_report(bench).read_text()
    assert f"<title>{bench.name}: benchmark</title>" in page and ">4.856<" in page
    assert '<a href="run-cgs/report.html">run-cgs</a>' in page


@pytest.mark.parametrize("file, content, message", [
    ("metrics.jsonl", '{"update": 1, "loss": 1.0}\n{"update": 2, "lo', r"metrics\.jsonl, line 2 is not valid JSON"),
    ("metrics.jsonl", '{"loss": 1.0}\n', r'line 1 must be a JSON object with an "update" key'),
    ("solves.csv", "graph,iterations\ng0,3\n", r"lacks the column\(s\) residual, error_bound, converged"),
    ("solves.csv", SOLVES.replace(",12,", ",twelve,"), r"solves\.csv, line 2: .*iterations and converged"),
    ("config.json", "[1, 2]", r"must hold a JSON object of settings \(got list\)"),
])
def test_unreadable_files_are_errors_that_name_them(run_dir, file, content, message):
    (run_dir / file).write_text(content)
    with pytest.raises(ValueError, match=message):
        write_report(run_dir)
