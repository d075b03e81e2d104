"""Training runs, checkpoints, user graph files and the train / eval / bench commands."""

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

from convergent.graph_files import load_data_list
from convergent.tasks import get_task
from convergent.training import CheckpointError, TrainConfig, build_model, evaluate, load_checkpoint, save_checkpoint
from convergent.training import train as train_run

TINY_MODEL = {"hidden_channels": 8, "num_heads": 4, "num_layers": 1}
TINY_VALUES = dict(model_options=TINY_MODEL, updates=6, eval_every=3, pool_size=8, batch_size=4,
                   validation_graphs=5, restart_period=6)


def tiny_options(**changes):
    """``--set KEY=VALUE`` options of a tiny training run: :data:`TINY_VALUES` with ``changes``."""
    values = {**TINY_VALUES, **changes}
    return [option for key, value in values.items()
            for option in ("--set", f"{key}={json.dumps(value) if isinstance(value, dict) else value}")]


TINY = tiny_options()


def tiny_config(**changes):
    return TrainConfig.from_dict({"task": "gvi", **TINY_VALUES, **changes})


def run_cli(*args, cwd=None, cache=None):
    """``python -m convergent ARGS``; with ``cache``, that folder as ``$CONVERGENT_CACHE``."""
    env = None if cache is None else {**os.environ, "CONVERGENT_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "convergent", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


class Exploit:
    """Pickles to a call that would create a file when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="unknown config key.*learnig_rate"):
        TrainConfig.from_dict({"task": "gvi", "learnig_rate": 1e-3})
    with pytest.raises(ValueError, match="batch_size"):
        tiny_config(batch_size=9)
    with pytest.raises(ValueError, match="`prior` must be true or false"):
        tiny_config(prior="yes")


def test_a_run_writes_its_outputs_and_its_checkpoint_reproduces_the_metrics(tmp_path):
    task = get_task("gvi")
    summary = train_run(task, tiny_config(), tmp_path, progress=False)
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl", "learning_curve.png", "parity.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in records if "policy_accuracy" in r] == [3, 6]
    assert json.loads((tmp_path / "config.json").read_text())["updates"] == 6
    checkpoint = load_checkpoint(tmp_path / "checkpoint.pt", "gvi")
    assert checkpoint["update"] == 6 and checkpoint["version"]
    model = build_model("cgs", task, checkpoint["config"]["model_options"])
    model.load_state_dict(checkpoint["model"])
    again = evaluate(model, task, task.graphs(5, seed=999))
    assert again["mape"] == pytest.approx(summary["mape"], rel=1e-5)
    assert 0 <= summary["policy_accuracy"] <= 1 and summary["parameters"] > 0


def test_the_same_seed_gives_the_same_run(tmp_path):
    task = get_task("gvi")
    first = train_run(task, tiny_config(updates=3, eval_every=3, restart_period=3), tmp_path / "1", progress=False)
    second = train_run(task, tiny_config(updates=3, eval_every=3, restart_period=3), tmp_path / "2", progress=False)
    assert first["mape"] == second["mape"]


def test_averaged_runs_end_on_the_mean_of_the_weights_at_the_cycle_ends(tmp_path):
    task = get_task("gvi")
    cycle = dict(restart_period=2, eval_every=2)
    for name, updates, average in (("first", 2, 0), ("both", 4, 0), ("averaged", 4, 2)):
        train_run(task, tiny_config(updates=updates, average_cycles=average, **cycle), tmp_path / name, progress=False)
    first, both, averaged = (load_checkpoint(tmp_path / name / "checkpoint.pt")["model"]
                             for name in ("first", "both", "averaged"))
    assert not torch.equal(first["decoder.lins.0.weight"], both["decoder.lins.0.weight"])
    for key in both:
        torch.testing.assert_close(averaged[key], (first[key] + both[key]) / 2)
    with pytest.raises(ValueError, match="multiple of `restart_period`"):
        tiny_config(updates=5, average_cycles=2, restart_period=2)
    with pytest.raises(ValueError, match="at least 3 cycles"):
        tiny_config(updates=4, average_cycles=3, restart_period=2)


def test_checkpoints_refuse_truncated_foreign_and_malicious_files(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"task": "gvi", "model": {"w": torch.ones(3)}})
    assert not list(tmp_path.glob("*.partial"))
    assert torch.equal(load_checkpoint(path, "gvi")["model"]["w"], torch.ones(3))
    with pytest.raises(CheckpointError, match="task 'gvi', not 'porenet'"):
        load_checkpoint(path, "porenet")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(truncated)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a convergent checkpoint"):
        load_checkpoint(plain)
    marker = tmp_path / "code-ran"
    crafted = tmp_path / "crafted.pt"
    torch.save({"format": "convergent-checkpoint-1", "task": "gvi", "payload": Exploit(marker)}, crafted)
    with pytest.raises(CheckpointError):
        load_checkpoint(crafted)
    assert not marker.exists()


def test_graph_files_load_as_data_and_name_what_is_missing(tmp_path):
    graphs = get_task("gvi").graphs(2, seed=3)
    path = tmp_path / "graphs.pt"
    torch.save(graphs, path)
    loaded = load_data_list(path, required=("x", "edge_index", "edge_attr", "y"))
    assert torch.equal(loaded[1].edge_index, graphs[1].edge_index)
    torch.save([Data(x=torch.ones(3, 1), edge_index=torch.tensor([[0], [1]]))], path)
    with pytest.raises(ValueError, match="graph 0 .* has no `y`"):
        load_data_list(path, required=("x", "edge_index", "y"))
    with pytest.raises(ValueError, match="does not exist"):
        load_data_list(tmp_path / "missing.pt")
    marker = tmp_path / "code-ran"
    torch.save([Exploit(marker)], path)
    with pytest.raises(ValueError, match="not a readable"):
        load_data_list(path)
    assert not marker.exists()


def test_train_and_eval_commands(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "gvi", *TINY, "--out", str(out), "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    assert 0 <= json.loads(result.stdout)["policy_accuracy"] <= 1
    graphs = get_task("gvi").graphs(3, seed=5)
    torch.save(graphs, tmp_path / "mine.pt")
    result = run_cli("eval", "gvi", "--checkpoint", str(out / "checkpoint.pt"), "--sets", "",
                     "--graphs", str(tmp_path / "mine.pt"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)[str(tmp_path / "mine.pt")]
    assert report["graphs"] == 3 and report["nodes"] == sum(g.num_nodes for g in graphs)
    assert report["classical_seconds"] > 0 and report["inference_seconds"] > 0


def test_bad_input_exits_with_one_clear_message(tmp_path):
    result = run_cli("train", "gvi", "--set", "learnig_rate=1", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "learnig_rate" in result.stderr and "Traceback" not in result.stderr
    save_checkpoint(tmp_path / "other.pt", {"task": "porenet", "config": {}, "model": {}})
    result = run_cli("eval", "gvi", "--checkpoint", str(tmp_path / "other.pt"), "--sets", "")
    assert result.returncode == 2 and "task 'porenet'" in result.stderr
    broken = get_task("gvi").graphs(1, seed=1)
    broken[0].edge_index = broken[0].edge_index[:, broken[0].edge_index[1] != 0]  # state 0 loses its actions
    broken[0].edge_attr = broken[0].edge_attr[: broken[0].edge_index.shape[1]]
    torch.save(broken, tmp_path / "broken.pt")
    run_cli("train", "gvi", *TINY, "--out", str(tmp_path / "run"), "--quiet")
    result = run_cli("eval", "gvi", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--sets", "",
                     "--graphs", str(tmp_path / "broken.pt"))
    assert result.returncode == 2 and "state 0 has no action" in result.stderr
    nan = get_task("gvi").graphs(1, seed=1)
    nan[0].edge_attr[0] = float("nan")
    torch.save(nan, tmp_path / "nan.pt")
    result = run_cli("eval", "gvi", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--sets", "",
                     "--graphs", str(tmp_path / "nan.pt"))
    assert result.returncode == 2 and "reward" in result.stderr and "NaN" in result.stderr


def test_bench_over_seeds_gives_mean_and_spread_of_single_runs(tmp_path):
    result = run_cli("bench", "gvi", *TINY, "--methods", "cgs,mpnn-2", "--sets", "a", "--seeds", "0,1",
                     "--out", str(tmp_path), "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "results-by-seed.csv") as stream:
        single = list(csv.DictReader(stream))
    assert [(row["method"], row["seed"]) for row in single] == [("cgs", "0"), ("cgs", "1"), ("mpnn-2", "0"),
                                                                 ("mpnn-2", "1")]
    for row in json.loads(result.stdout):
        assert row["seeds"] == 2 and row["test set"] == "a"
        values = [float(r["MAPE %"]) for r in single if r["method"] == row["method"]]
        mean, _, spread = str(row["MAPE %"]).partition(" ± ")  # 3 and 2 significant digits
        assert float(mean) == pytest.approx(statistics.fmean(values), rel=5e-3)
        assert float(spread or 0) == pytest.approx(statistics.stdev(values), rel=5e-2, abs=1e-12)
    weights = [load_checkpoint(tmp_path / "cgs" / f"seed-{seed}" / "checkpoint.pt", "gvi")["model"] for seed in (0, 1)]
    assert json.loads((tmp_path / "cgs" / "seed-1" / "config.json").read_text())["seed"] == 1
    assert any(not torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    result = run_cli("bench", "gvi", *TINY, "--seeds", "0,1", "--seed", "3", "--out", str(tmp_path / "no"))
    assert result.returncode == 2 and "not both" in result.stderr
    result = run_cli("bench", "gvi", *TINY, "--seeds", "0,x", "--out", str(tmp_path / "no"))
    assert result.returncode == 2 and "comma-separated integers" in result.stderr


def test_bench_trains_every_method_with_one_budget_and_writes_one_table(tmp_path):
    result = run_cli("bench", "gvi", *TINY, "--methods", "cgs,ignn,sse,mpnn-2", "--sets", "a",
                     "--out", str(tmp_path), "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["method"] for row in rows] == ["cgs", "ignn", "sse", "mpnn-2"]
    for row in rows:
        assert row["test set"] == "a" and 0 <= row["policy acc."] <= 1 and row["classical s"] > 0
        config = json.loads((tmp_path / row["method"] / "config.json").read_text())
        assert config["updates"] == 6 and config["batch_size"] == 4 and config["seed"] == 0
    assert json.loads((tmp_path / "mpnn-2" / "config.json").read_text())["model_options"]["num_layers"] == 2
    table = (tmp_path / "results.md").read_text()
    assert "| sse | a |" in table and (tmp_path / "results.csv").read_text().count("\n") == 5
