"""Distributed data parallel: ``torchrun`` with 2 CPU processes (gloo) trains as one process
with the same global batch."""

import json
import subprocess
import sys

import pytest
import torch
from torch_geometric.data import Batch

from convergent.tasks import get_task
from convergent.training import build_model, load_checkpoint
from test_training import TINY_MODEL

RUN = ["train", "gvi", "--quiet", "--device", "cpu", "--set", "updates=12", "--set", "eval_every=12",
       "--set", "pool_size=16", "--set", "batch_size=8", "--set", "validation_graphs=4",
       "--set", "restart_period=12", "--set", f"model_options={json.dumps(TINY_MODEL)}"]


def launch(*command, out):
    result = subprocess.run([*command, "-m", "convergent", *RUN, "--out", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_checkpoint(out / "checkpoint.pt", "gvi")


def test_two_gloo_processes_train_as_one_process_with_the_same_global_batch(tmp_path):
    single = launch(sys.executable, out=tmp_path / "single")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    double = launch(*torchrun, out=tmp_path / "ddp")
    assert single["update"] == double["update"] == 12
    for name, expected in single["model"].items():
        # The attention's bias shifts every score of a softmax alike, so its exact gradient is 0:
        # Adam turns the rounding noise of the two summation orders into steps of up to lr.
        # It changes no output; the outputs are compared below.
        if not name.endswith("attention.bias"):
            torch.testing.assert_close(double["model"][name], expected, rtol=1e-5, atol=1e-6, msg=name)
    task = get_task("gvi")
    graphs = Batch.from_data_list(task.graphs(4, seed=7))
    outputs = []
    for checkpoint in (single, double):
        model = build_model("cgs", task, TINY_MODEL)
        model.load_state_dict(checkpoint["model"])
        with torch.no_grad():
            outputs.append(model(graphs.x, graphs.edge_index, graphs.edge_attr, graphs.batch))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    torch.manual_seed(0)
    initial = build_model("cgs", task, TINY_MODEL).state_dict()
    assert not torch.allclose(initial["decoder.lins.0.weight"], single["model"]["decoder.lins.0.weight"]), \
        "nothing trained"
    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "single"), rel=1e-4)


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record["loss"] for record in map(json.loads, lines) if "loss" in record]
