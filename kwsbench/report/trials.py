"""Trial records read once into the flat rows every table, plot and claim of a report works from.

A trial's *context* is everything besides the network and the seed that decides its accuracy: the dataset
(its paths reduced to folder names, so the same data on two machines pairs up), the recipe and the number
of classes. Only trials of one context are ever averaged or paired.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from kwsbench.report.variants import FAMILY_DEFAULTS, Variant, describe, preset_name, variant_of
from kwsbench.results.schema import LatencyRecord, RecordError, TrialRecord
from kwsbench.results.store import read_json, read_records

# Dataset fields that are places on one machine, not what the data is: compared by their folder name.
_PATH_FIELDS = ("data_dir", "noise_dir")
# Recipe fields that change how fast a trial runs, never what it learns.
_SPEED_ONLY_RECIPE = ("eval_batch_size", "fast")


@dataclass(frozen=True)
class Context:
    """What a trial was trained and tested on (dataset, recipe, classes), as sortable JSON text."""

    dataset: str
    recipe: str
    num_classes: int

    @property
    def dataset_dict(self) -> dict[str, Any]:
        return json.loads(self.dataset)

    @property
    def recipe_dict(self) -> dict[str, Any]:
        return json.loads(self.recipe)

    def describe(self) -> str:
        d, r = self.dataset_dict, self.recipe_dict
        words = [str(d.get("dataset") or "?")]
        if d.get("version"):
            words.append(str(d["version"]))
        if d.get("data_dir"):
            words.append(f"({d['data_dir']})")
        words.append(f"protocol {d['protocol']}," if d.get("protocol") else "default protocol,")
        words.append(f"{self.num_classes} classes, {r.get('epochs', '?')} epochs")
        return " ".join(words)


@dataclass(frozen=True)
class Trial:
    """One finished (``ok``) trial as the report uses it; accuracies are fractions 0-1."""

    record: TrialRecord
    variant: Variant
    label: str
    context: Context
    best_test: float | None
    final_test: float | None
    best_validation: float | None
    final_validation: float | None

    @property
    def seed(self) -> int:
        return self.record.seed


@dataclass
class TrialSet:
    """Every trial of the results files: those that finished, those whose last record failed, and the rest."""

    sources: list[str]
    trials: list[Trial]
    failed: list[TrialRecord]
    superseded_failures: int = 0
    contexts: list[Context] = field(default_factory=list)
    records: list[TrialRecord] = field(default_factory=list)

    def context_name(self, context: Context) -> str:
        """``C1``, ``C2``...: short names in sorted order for tables that span several contexts."""
        return f"C{self.contexts.index(context) + 1}"


def _context(record: TrialRecord) -> Context:
    dataset = dict(record.dataset)
    for key in _PATH_FIELDS:
        if dataset.get(key):
            dataset[key] = PurePath(str(dataset[key])).name
    recipe = {k: v for k, v in record.recipe.items() if k not in _SPEED_ONLY_RECIPE}
    labels = record.metrics.get("labels") or []
    return Context(
        dataset=json.dumps(dataset, sort_keys=True),
        recipe=json.dumps(recipe, sort_keys=True),
        num_classes=len(labels),
    )


def _accuracy(metrics: dict[str, Any], which: str, split: str) -> float | None:
    value = (metrics.get(which) or {}).get(f"{split}_accuracy")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _trial(record: TrialRecord) -> Trial:
    variant = variant_of(record.model, record.options)
    return Trial(
        record=record,
        variant=variant,
        label=describe(record.model, record.options),
        context=_context(record),
        best_test=_accuracy(record.metrics, "best", "test"),
        final_test=_accuracy(record.metrics, "final", "test"),
        best_validation=_accuracy(record.metrics, "best", "validation"),
        final_validation=_accuracy(record.metrics, "final", "validation"),
    )


def _latest(records: Iterable[TrialRecord]) -> tuple[list[TrialRecord], int]:
    """One record per trial id: its last ``ok`` record (a re-run that succeeded), else its last failure;
    also the number of failures that a later success superseded."""
    by_id: dict[str, list[TrialRecord]] = {}
    for record in records:
        by_id.setdefault(record.trial_id, []).append(record)
    latest, superseded = [], 0
    for group in by_id.values():
        ok = [r for r in group if r.status == "ok"]
        latest.append(ok[-1] if ok else group[-1])
        superseded += len(group) - len(ok) if ok else 0
    latest.sort(key=lambda r: (r.experiment, describe(r.model, r.options), r.seed, r.trial_id))
    return latest, superseded


def _first_line(path: str | os.PathLike) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return next((line for line in handle if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return None


def _first_line_is_a_record(path: str | os.PathLike) -> bool:
    first = _first_line(path)
    try:
        return first is not None and isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _looks_like_records(path: str | os.PathLike) -> None:
    """Refuse a file whose first line is not a JSON object, before the store reads it line by line (it
    would skip every line of a text file as torn, with a warning each)."""
    first = _first_line(path)
    if first is None or _first_line_is_a_record(path):
        return  # unreadable: read_records reports it, with the reason
    if first.lstrip().startswith("["):
        raise RecordError(
            f"{path}: a JSON list, not the JSON Lines of `kwsbench run`; a `kwsbench bench --json` file "
            "goes after --bench"
        )
    raise RecordError(f"{path}: not a results file (its first line is not a JSON record); pass the "
                      "results.jsonl that `kwsbench run` wrote")  # fmt: skip


def load_trials(paths: Sequence[str | os.PathLike]) -> TrialSet:
    """Read the ``results.jsonl`` files a sweep wrote; a file without one trial record is an error."""
    if not paths:
        raise RecordError("no results file given; pass the results.jsonl that `kwsbench run` wrote")
    records: list[TrialRecord] = []
    for path in paths:
        if os.path.isfile(path):
            _looks_like_records(path)
        found = read_records(path, TrialRecord)
        if not found:
            raise RecordError(f"{path}: no trial records; pass the results.jsonl that `kwsbench run` wrote")
        records.extend(found)  # type: ignore[arg-type]
    latest, superseded = _latest(records)
    trials = [_trial(r) for r in latest if r.status == "ok"]
    failed = [r for r in latest if r.status != "ok"]
    # The label of a variant is the first way (in sorted order) any trial named it.
    names: dict[Variant, str] = {}
    for trial in sorted(trials, key=lambda t: t.label):
        names.setdefault(trial.variant, trial.label)
    trials = [dataclasses.replace(t, label=names[t.variant]) for t in trials]
    contexts = sorted({t.context for t in trials}, key=lambda c: (c.dataset, c.recipe, c.num_classes))
    return TrialSet(
        sources=[str(p) for p in paths],
        trials=trials,
        failed=failed,
        superseded_failures=superseded,
        contexts=contexts,
        records=latest,
    )


def load_bench(path: str | os.PathLike | None) -> list[LatencyRecord]:
    """The latency records of a ``kwsbench bench --json`` file (none without a path)."""
    if path is None:
        return []
    try:
        records = read_json(path)
    except RecordError:
        if _first_line_is_a_record(path):
            raise RecordError(
                f"{path}: JSON Lines (a results file?), not the JSON list of `kwsbench bench --json`; "
                "give results files before the options"
            ) from None
        raise
    latency = [r for r in records if isinstance(r, LatencyRecord)]
    if not latency:
        raise RecordError(f"{path}: no latency records; pass the file `kwsbench bench --json` wrote")
    return latency  # type: ignore[return-value]


def alias(variant: Variant) -> str:
    """The registered model that is exactly ``variant`` ('' when none): a preset of the table, or a model
    the table does not know run without overrides."""
    if variant.family not in FAMILY_DEFAULTS and not variant.options:
        return variant.family
    return preset_name(variant) or ""
