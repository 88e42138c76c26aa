"""Experiment files: every key and type checked, one line naming the key and the file; stable trial ids."""

from __future__ import annotations

import pytest

from kwsbench.cli import main
from kwsbench.errors import ConfigError
from kwsbench.runner.config import Recipe, load_experiment

GOOD = """
name: t
dataset: {dataset: folder, data_dir: /tmp/x, protocol: mini}
recipe: {epochs: 3}
grid:
  models: [bcresnet_1]
  options: [{}, {use_subspectral_norm: false}]
  recipes: [{}, {lr: 0.05}]
  seeds: [0, 1]
measure: {backends: [eager], threads: 1}
"""


def _load(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text, encoding="utf-8")
    return load_experiment(path)


def test_a_good_file_expands_the_grid_with_stable_distinct_ids(tmp_path):
    experiment = _load(tmp_path, GOOD)
    trials = experiment.trials()
    assert len(trials) == 8
    assert len({t.trial_id for t in trials}) == 8
    assert [t.trial_id for t in _load(tmp_path, GOOD).trials()] == [t.trial_id for t in trials]
    assert trials[0].recipe == Recipe(epochs=3) and trials[2].recipe.lr == 0.05
    assert trials[4].options == {"use_subspectral_norm": False}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("recipe: {epochs: 3}", "recipe: {epoch: 3}"), "unknown key recipe.epoch"),
        (("recipe: {epochs: 3}", "recipe: {epochs: three}"), "recipe.epochs: 'three' is not int"),
        (("recipe: {epochs: 3}", "recipe: {epochs: 0}"), "recipe epochs=0 is out of range"),
        (("name: t", "nme: t"), "unknown key nme"),
        (("  seeds: [0, 1]", "  seed: [0, 1]"), "unknown key grid.seed"),
        (("[bcresnet_1]", "[bcresnet1]"), "did you mean bcresnet_1"),
        (("use_subspectral_norm", "use_ssn"), "has no option 'use_ssn'"),
        (("protocol: mini}", "protocl: mini}"), "unknown dataset key 'protocl'"),
        (("backends: [eager]", "backends: [tensorrt]"), "unknown backend 'tensorrt'"),
        (("{lr: 0.05}", "{lr: fast}"), "grid.recipes[1].lr"),
        (("grid:", "grid: [\n"), "not valid YAML"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_key_and_the_file(tmp_path, change, expected):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, GOOD.replace(*change))
    message = str(err.value)
    assert expected in message and "exp.yaml" in message and "\n" not in message


def test_the_cli_ends_a_misspelt_key_in_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(GOOD.replace("seeds:", "sedes:"), encoding="utf-8")
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown key grid.sedes" in err and str(path) in err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "no such experiment file" in capsys.readouterr().err


def test_shipped_experiments_load(request):
    from pathlib import Path

    root = Path(request.config.rootpath) / "experiments"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert names == [
        "ablation_ssn.yaml", "ablation_width.yaml", "bundled.yaml", "causal.yaml", "mini.yaml", "paper_table3.yaml",
        "quickstart.yaml", "ray_speed.yaml",
    ]  # fmt: skip
    # The Ray speed target compares 4 one-thread trials: one CPU each on Ray, one after another locally.
    speed = load_experiment(root / "ray_speed.yaml")
    assert len(speed.trials()) == 4 and speed.threads == 1
    mini = load_experiment(root / "mini.yaml")
    assert len(mini.trials()) == 6 and mini.recipe.epochs == 60
    assert {t.options.get("use_subspectral_norm", True) for t in mini.trials()} == {True, False}
    bundled = load_experiment(root / "bundled.yaml")
    # One trial per model: `kwsbench bundle` refuses two trials of one model.
    assert sorted(t.model for t in bundled.trials()) == ["bcresnet_1", "bcresnet_3"]


def test_data_dir_may_be_left_out_only_for_a_generated_dataset(tmp_path):
    real = GOOD.replace(
        "dataset: {dataset: folder, data_dir: /tmp/x, protocol: mini}", "dataset: {dataset: fsdd}"
    )
    with pytest.raises(ConfigError, match=r"exp\.yaml: dataset\.data_dir: required for dataset fsdd"):
        _load(tmp_path, real)
    generated = real.replace("dataset: {dataset: fsdd}", "dataset: {dataset: synthetic}")
    assert _load(tmp_path, generated).dataset.data_dir is None  # the default set, made on first use
