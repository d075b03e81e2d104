"""Crash-safe training: a run killed with SIGKILL and resumed ends with the weights of an
uninterrupted run (averaged over its two cycles, so the running average survives too); a
folder holding a run is not overwritten by accident."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from convergent.tasks import get_task
from convergent.training import load_checkpoint
from convergent.training import train as train_run
from test_training import TINY_MODEL, run_cli, tiny_config

# Long enough (a few seconds) that a kill lands mid-run; a checkpoint every 3 updates.
RUN = ["train", "gvi", "--deterministic", "--quiet", "--set", "updates=240", "--set", "eval_every=120",
       "--set", "checkpoint_every=3", "--set", "pool_size=16", "--set", "batch_size=8", "--set", "refresh_every=16",
       "--set", "validation_graphs=4", "--set", "restart_period=120", "--set", "average_cycles=2",
       "--set", f"model_options={json.dumps(TINY_MODEL)}"]


def final_weights(run_dir):
    return load_checkpoint(run_dir / "checkpoint.pt", "gvi")["model"]


def test_a_run_killed_at_a_random_moment_and_resumed_ends_as_an_uninterrupted_one(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli(*RUN, "--out", str(whole)).returncode == 0
    delay = random.uniform(0.0, 1.5)
    process = subprocess.Popen([sys.executable, "-m", "convergent", *RUN, "--out", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    assert process.poll() is None, f"the run ended before the kill (delay {delay:.2f} s): make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = load_checkpoint(killed / "checkpoint.pt", "gvi")["update"]
    assert 0 < interrupted_at < 240, f"killed after {delay:.2f} s at update {interrupted_at}"
    resumed = run_cli("train", "gvi", "--resume", "--deterministic", "--quiet", "--out", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    expected, got = final_weights(whole), final_weights(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs (killed at update {interrupted_at})"
    lines = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in lines if "loss" in r] == list(range(10, 241, 10)), "metrics lost or repeated"
    assert (whole / "metrics.jsonl").read_text() .count("policy_accuracy") == 2
    assert not list(killed.glob(".*.partial")), "a partial file was left behind"


def test_resume_refuses_another_config_and_train_refuses_to_overwrite_a_run(tmp_path):
    task = get_task("gvi")
    train_run(task, tiny_config(), tmp_path, progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        train_run(task, tiny_config(), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"learning_rate \(run: 0.001, given: 0.01\)"):
        train_run(task, tiny_config(learning_rate=1e-2), tmp_path, progress=False, resume=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    # Resuming a finished run changes nothing and returns its metrics.
    again = train_run(task, tiny_config(), tmp_path, progress=False, resume=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert again["policy_accuracy"] == load_checkpoint(tmp_path / "checkpoint.pt")["metrics"]["policy_accuracy"]


def test_resume_without_a_checkpoint_starts_afresh(tmp_path):
    summary = train_run(get_task("gvi"), tiny_config(), tmp_path / "new", progress=False, resume=True)
    assert load_checkpoint(tmp_path / "new" / "checkpoint.pt")["update"] == 6 and "policy_accuracy" in summary
