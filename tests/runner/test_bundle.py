"""Bundled checkpoints: `kwsbench bundle` copies a sweep's trials with cards that tell the truth, and the
checkpoints shipped in the package reproduce the accuracy their cards declare on the real audio."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from kwsbench.checkpoints import bundled_checkpoint, bundled_models
from kwsbench.cli import main
from kwsbench.errors import ConfigError, ModelError
from kwsbench.models.checkpoint import load_checkpoint
from kwsbench.results import TrialRecord, read_records
from kwsbench.runner.bundle import bundle_trials
from kwsbench.runner.config import load_experiment
from kwsbench.runner.evaluate import evaluate_checkpoint

pytestmark = pytest.mark.slow


def test_bundle_copies_each_trial_with_a_card(tiny_folder, tmp_path, write_experiment, capsys):
    exp = write_experiment(tiny_folder, tmp_path / "tiny.yaml", seeds=(0,))
    out, dest = tmp_path / "results", tmp_path / "bundled"
    assert main(["run", str(exp), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert main(["bundle", str(out / "results.jsonl"), "--dest", str(dest)]) == 0
    assert f"wrote {dest / 'bcresnet_1.pt'}" in capsys.readouterr().out
    (record,) = read_records(out / "results.jsonl", TrialRecord)
    card = json.loads((dest / "bcresnet_1.json").read_text(encoding="utf-8"))
    # The shipped weights are the best-validation epoch's, so the card's headline accuracy is that epoch's.
    assert card["test_accuracy"] == record.metrics["best"]["test_accuracy"]
    assert card["final_epoch_test_accuracy"] == record.metrics["final"]["test_accuracy"]
    assert card["sha256"] == hashlib.sha256((dest / "bcresnet_1.pt").read_bytes()).hexdigest()
    assert card["labels"] == load_checkpoint(dest / "bcresnet_1.pt")["labels"]
    assert "experiments/bundled.yaml" in card["trained_by"] and card["trial_id"] == record.trial_id

    # Two finished trials of one model cannot both be "the" bundled model.
    two = write_experiment(tiny_folder, tmp_path / "two.yaml", seeds=(0, 1), epochs=1)
    assert (
        main(["run", str(two), "--out", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "cache")]) == 0
    )
    with pytest.raises(ConfigError, match="several finished trials"):
        bundle_trials(tmp_path / "two" / "results.jsonl", tmp_path / "refused")
    assert not (tmp_path / "refused" / "bcresnet_1.pt").exists()


def test_a_missing_bundled_model_names_the_fix():
    with pytest.raises(ModelError, match="--checkpoint"):
        bundled_checkpoint("bcresnet_42")


@pytest.mark.parametrize("model", bundled_models())
def test_shipped_checkpoints_reproduce_their_cards(model, shared_data, tmp_path):
    path = bundled_checkpoint(model)
    card = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.stat().st_size < 400_000  # "a few hundred kB in all"
    spec = load_experiment(Path(__file__).resolve().parents[2] / "experiments" / "bundled.yaml").dataset
    result = evaluate_checkpoint(path, spec, "test", cache_dir=tmp_path / "cache", progress=False)
    # The same weights on the same clips: equal up to a clip whose top two logits tie within rounding.
    assert abs(result.accuracy - card["test_accuracy"]) <= 1 / result.clips + 1e-12
    assert card["test_accuracy"] > 0.85
