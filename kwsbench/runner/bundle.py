"""Copy trained trials into the package's bundled checkpoints, each with a JSON card of where it came from.

A card holds the test accuracy of the weights it ships (the best-validation epoch's, 0-1, on the trial's own
test split), the final epoch's beside it, the command that retrains it, and the trial's provenance: a user
who loads a bundled model can tell what it is and how good it is without trusting anything unwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

from kwsbench.atomic import write_atomically, write_json_atomically
from kwsbench.errors import ConfigError
from kwsbench.export.exported import file_sha256
from kwsbench.models.checkpoint import load_checkpoint
from kwsbench.results import TrialRecord, read_records

RETRAIN_COMMAND = (
    "make bundled  # kwsbench run experiments/bundled.yaml; kwsbench bundle results/bundled/results.jsonl"
)


def card_of(record: TrialRecord, checkpoint: Path) -> dict:
    """The JSON card of one finished trial whose checkpoint is ``checkpoint``."""
    metrics = record.metrics
    return {
        "model": record.model,
        "options": record.options,
        "labels": metrics["labels"],
        "test_accuracy": metrics["best"]["test_accuracy"],
        "validation_accuracy": metrics["best"]["validation_accuracy"],
        "best_epoch": metrics["best_epoch"],
        "final_epoch_test_accuracy": metrics["final"]["test_accuracy"],
        "epochs": metrics["epochs"],
        "clips": metrics.get("clips"),
        "dataset": record.dataset,
        "recipe": record.recipe,
        "seed": record.seed,
        "params": record.params,
        "macs_total": record.macs_total,
        "trained_by": RETRAIN_COMMAND,
        "trial_id": record.trial_id,
        "experiment": record.experiment,
        "git_commit": record.git_commit,
        "finished_at": record.finished_at,
        "wall_time_s": record.wall_time_s,
        "provenance": record.provenance,
        "sha256": file_sha256(checkpoint),
    }


def bundle_trials(results: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Copy every finished trial of ``results`` (a results.jsonl) to ``dest/<model>.pt`` plus ``<model>.json``.

    One trial per model: two finished trials of one model (seeds, options) are ambiguous and refused.
    Each checkpoint is loaded safely first (``weights_only=True``), so nothing unloadable is bundled.
    """
    records = [r for r in read_records(results, TrialRecord) if r.status == "ok"]
    if not records:
        raise ConfigError(f"{results}: no finished trial to bundle; run the experiment first")
    models = [r.model for r in records]
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        raise ConfigError(
            f"{results}: {twice[0]} has several finished trials; bundle an experiment with one trial per model"
        )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for record in records:
        checkpoint = Path(record.checkpoint or "")
        load_checkpoint(checkpoint)  # refuses a missing, damaged or foreign file in one line
        target = dest / f"{record.model}.pt"
        data = checkpoint.read_bytes()
        write_atomically(target, lambda f, data=data: f.write(data))
        write_json_atomically(target.with_suffix(".json"), card_of(record, target))
        written += [target, target.with_suffix(".json")]
    return written
