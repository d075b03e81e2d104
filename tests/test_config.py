"""Run configurations from TOML, YAML and JSON files, under the preset and `--set` overrides."""

import pytest

from convergent.cli import resolve_config
from convergent.tasks import get_task
from convergent.training import build_model
from convergent.training.config import read_config_file

TOML = """
preset = "paper"
updates = 40
[model_options]
num_heads = 8
"""
YAML = """
preset: paper
updates: 40
model_options:
  num_heads: 8
"""


@pytest.mark.parametrize("name, text", [("run.toml", TOML), ("run.yaml", YAML),
                                        ("run.json", '{"preset": "paper", "updates": 40, '
                                                     '"model_options": {"num_heads": 8}}')])
def test_a_config_file_applies_over_its_preset_and_under_set(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    task = get_task("gvi")
    config = resolve_config(task, None, ["learning_rate=0.01", "model_options.gamma=0.7"], 5, None, tmp_path / name)
    paper = task.presets["paper"]
    assert (config.updates, config.learning_rate, config.seed) == (40, 0.01, 5)
    assert config.restart_period == paper["restart_period"]  # from the preset the file names
    assert config.model_options == {**paper["model_options"], "num_heads": 8, "gamma": 0.7}
    assert resolve_config(task, "default", [], None, None, tmp_path / name).pool_size == \
        task.presets["default"]["pool_size"]  # --preset wins over the file's


def test_bad_config_files_are_named_errors(tmp_path):
    task = get_task("gvi")
    (tmp_path / "typo.toml").write_text("updatez = 3\n")
    with pytest.raises(ValueError, match="unknown config key.*updatez"):
        resolve_config(task, None, [], None, None, tmp_path / "typo.toml")
    (tmp_path / "broken.yaml").write_text("updates: [1,\n")
    with pytest.raises(ValueError, match="broken.yaml does not parse"):
        read_config_file(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a table"):
        read_config_file(tmp_path / "list.yaml")
    with pytest.raises(ValueError, match="does not exist"):
        read_config_file(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="must end in one of"):
        read_config_file(tmp_path / "run.ini")
    (tmp_path / "other.toml").write_text('task = "porenet"\n')
    with pytest.raises(ValueError, match="for task 'porenet', not 'gvi'"):
        resolve_config(task, None, [], None, None, tmp_path / "other.toml")
    (tmp_path / "bad.toml").write_text("[model_options]\nnum_hedas = 3\n")
    config = resolve_config(task, None, [], None, None, tmp_path / "bad.toml")
    with pytest.raises(ValueError, match="num_hedas"):
        build_model(config.model, task, config.model_options)
