"""Graph classification: TU data from local files, shared folds, the two protocols, GIN and graph IGNN."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from convergent.datasets import holdout_split, load_tu, stratified_folds
from convergent.datasets.tu import default_root
from convergent.models import GIN, IGNN, GraphIGNN
from convergent.models.readout import READOUTS
from convergent.training.classification import ProtocolConfig, fit, run_protocol

SHARED = default_root()
needs_shared = pytest.mark.skipif(not (SHARED / "MUTAG" / "raw").is_dir(),
                                  reason=f"the shared TU copies are not at {SHARED}")


def size_graphs(count=40, seed=0):
    """Paths of 3–16 nodes with a constant feature; class 1 when the path has more than 9 nodes."""
    generator = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(count):
        nodes = int(torch.randint(3, 17, (1,), generator=generator))
        line = torch.arange(nodes - 1)
        edge_index = torch.cat([torch.stack([line, line + 1]), torch.stack([line + 1, line])], 1)
        graphs.append(Data(x=torch.ones(nodes, 1), edge_index=edge_index, y=torch.tensor([int(nodes > 9)])))
    return graphs


@needs_shared
def test_tu_datasets_load_with_label_or_degree_features():
    graphs, features, classes = load_tu("MUTAG")
    assert (len(graphs), features, classes) == (188, 7, 2)
    assert all(torch.equal(g.x.sum(1), torch.ones(g.num_nodes)) for g in graphs)  # one-hot labels
    assert sorted(torch.cat([g.y for g in graphs]).bincount().tolist()) == [63, 125]
    graphs, features, classes = load_tu("IMDB-BINARY")
    degrees = [torch.bincount(g.edge_index[0], minlength=g.num_nodes) for g in graphs]
    assert features == max(int(d.max()) for d in degrees) + 1 and classes == 2
    assert all(torch.equal(g.x.argmax(1), d) for g, d in zip(graphs[:50], degrees[:50]))  # one-hot degree
    assert not (SHARED / "MUTAG" / "processed").exists()  # nothing written into the shared folder


@needs_shared
def test_a_missing_or_malformed_dataset_file_is_named(tmp_path):
    shutil.copytree(SHARED / "MUTAG", tmp_path / "MUTAG")
    (tmp_path / "MUTAG" / "raw" / "MUTAG_graph_labels.txt").unlink()
    with pytest.raises(ValueError, match="MUTAG_graph_labels.txt is missing"):
        load_tu("MUTAG", tmp_path)
    shutil.copy(SHARED / "MUTAG" / "raw" / "MUTAG_graph_labels.txt", tmp_path / "MUTAG" / "raw")
    (tmp_path / "MUTAG" / "raw" / "MUTAG_A.txt").write_text("1, x\n")
    with pytest.raises(ValueError, match="could not read TU dataset 'MUTAG'"):
        load_tu("MUTAG", tmp_path)
    result = subprocess.run([sys.executable, "-m", "convergent", "bench", "tu", "--dataset", "MUTAG", "--root",
                             str(tmp_path / "empty"), "--quick"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "MUTAG" in result.stderr


def test_folds_partition_the_graphs_and_keep_the_class_ratio():
    labels = np.array([0] * 63 + [1] * 125)
    folds = stratified_folds(labels, 10, seed=3)
    tests = np.concatenate([test for _, test in folds])
    assert sorted(tests.tolist()) == list(range(len(labels)))
    for train, test in folds:
        assert not set(train) & set(test) and abs(labels[test].mean() - labels.mean()) < 0.06
    again = stratified_folds(labels, 10, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    train, validation = holdout_split(folds[0][0], labels, 0.1, seed=0)
    assert len(validation) == round(0.1 * len(folds[0][0])) and not set(train) & set(validation)
    assert sorted([*train, *validation]) == sorted(folds[0][0])


def test_graph_models_give_logits_per_graph_and_ignore_node_order():
    graphs = size_graphs(6)
    batch = Batch.from_data_list(graphs)
    torch.manual_seed(0)
    for model in (GIN(1, 3), GraphIGNN(1, 3, hidden_channels=8)):
        model.eval()
        logits = model(batch.x, batch.edge_index, None, batch.batch)
        assert logits.shape == (6, 3)
        order = torch.randperm(graphs[0].num_nodes)
        relabel = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel()))
        shuffled = Data(x=graphs[0].x[order], edge_index=relabel[graphs[0].edge_index])
        torch.testing.assert_close(model(shuffled.x, shuffled.edge_index), logits[:1], rtol=1e-5, atol=1e-5)
    torch.manual_seed(1)
    graph_level, node_level = GraphIGNN(1, 3, hidden_channels=8), IGNN(1, 3, hidden_channels=8)
    node_level.load_state_dict(graph_level.state_dict())
    embedding = node_level.embed(batch.x, batch.edge_index, None, batch.batch)
    torch.testing.assert_close(graph_level(batch.x, batch.edge_index, None, batch.batch),
                               node_level.decoder(READOUTS["sum"](embedding, batch.batch)))


def test_gin_protocol_reports_the_best_epoch_of_the_fold_averaged_curve():
    graphs = size_graphs(40)
    result = run_protocol("gin", "gin", graphs, 1, 2, ProtocolConfig(epochs=30, folds=2, batch_size=8), progress=False)
    curves = np.array(result["curves"])
    epoch = int(curves.mean(0).argmax())
    assert result["epochs"] == [epoch + 1] and result["mean"] == pytest.approx(curves[:, epoch].mean())
    assert result["mean"] >= 0.9  # the sum readout counts nodes: an easy task


def test_fair_protocol_selects_configuration_and_epoch_on_the_holdout(monkeypatch):
    from convergent.training import classification

    curves = {0.1: {"validation": [0.5, 0.6, 0.55], "test": [0.4, 0.9, 0.1]},  # best holdout 0.6 at epoch 2
              0.2: {"validation": [0.7, 0.65], "test": [0.2, 0.3]}}         # best holdout 0.7 at epoch 1
    seen = []

    def fake_fit(kind, overrides, graphs, train, watched, config, *args, **kwargs):
        seen.append((set(train), set(watched["validation"]), set(watched["test"])))
        history = curves[overrides["dropout"]]
        return {"curves": history, "best_epoch": int(np.argmax(history["validation"])), "seconds": 0.0}

    monkeypatch.setattr(classification, "fit", fake_fit)
    config = ProtocolConfig(folds=2, grid=[{"dropout": 0.1}, {"dropout": 0.2}])
    result = run_protocol("fair", "gin", size_graphs(40), 1, 2, config, progress=False)
    assert result["selected"] == [{"dropout": 0.2}] * 2 and result["fold_accuracies"] == [0.2, 0.2]
    assert result["epochs"] == [1, 1]
    for train, validation, test in seen:  # the holdout comes out of the outer training part
        assert not train & validation and not (train | validation) & test and len(train | validation | test) == 40


def test_training_stops_after_patience_epochs_without_a_better_holdout():
    graphs = size_graphs(60)
    config = ProtocolConfig(epochs=60, batch_size=8, patience=3)
    history = fit("gin", {}, graphs, np.arange(40), {"validation": np.arange(40, 60)}, config, 1, 2, seed=0,
                  stop_on="validation")
    validation = history["curves"]["validation"]
    assert validation[history["best_epoch"]] == max(validation)
    assert validation.index(max(validation)) == history["best_epoch"]
    assert len(validation) - 1 - history["best_epoch"] == config.patience or len(validation) == config.epochs


@needs_shared
def test_bench_tu_command_writes_one_table(tmp_path):
    result = subprocess.run([sys.executable, "-m", "convergent", "bench", "tu", "--dataset", "MUTAG", "--quick",
                             "--models", "gin,ignn", "--out", str(tmp_path), "--quiet", "--json"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"gin", "ignn"} and all(0 <= r["mean"] <= 1 for r in report.values())
    assert {r["threads"] for r in report.values()} == {1}
    table = (tmp_path / "results.md").read_text()
    assert "| MUTAG | gin | ignn |" in table and "optimistic" in table
    assert "| threads |" in table and "torch threads" not in table  # per run, not one for the table
    assert Path(tmp_path / "MUTAG-gin-gin.json").is_file()
