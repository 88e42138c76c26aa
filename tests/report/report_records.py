"""A hand-written sweep of trial records with known accuracies and counts, and helpers to write others
(importable as ``report_records``: pytest puts this folder on sys.path).

The sweep of ``fixture_trials`` is built so that each verdict is known in advance (the numbers are chosen
so a reader can check them by hand):

- ``bcresnet_1`` seeds 0-3, final-epoch test accuracy 0.90 0.92 0.91 0.93.
- ``bcresnet_1 use_subspectral_norm=false`` (= ``table2_no_ssn``) 0.88 0.895 0.89 0.905: every seed
  0.02-0.025 lower -> "SSN beats BatchNorm" *supported*.
- ``table2_no_shortcut`` 0.92 0.945 0.93 0.955: every seed higher -> "beats no-shortcut" *contradicted*;
  its recorded 9,500 parameters are 3.3 % off Table 2's 9.2k -> that count is *contradicted*.
- ``table2_attention`` 0.89 0.93 0.905 0.934: differences +0.01 -0.01 +0.005 -0.004 -> *undecided*.
- ``table2_freq_maxpool`` seeds 0, 1 and 7: two matched seeds -> *undecided* (too few).
- ``bcresnet_1_5`` seeds 0-3, 0.93 0.951 0.939 0.962: +0.029..0.032 over tau 1 -> the width trend *supported*.
- ``tcresnet14_1_5`` seed 0, 0.94: 303,000 / 9,232 = 32.8x fewer parameters (>= 10.9x) *supported*.
- one failed trial of ``bcresnet_1_5`` (seed 9) with a two-line error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LABELS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "_unknown_", "_silence_"]
DATASET = {
    "dataset": "speech_commands_test_set",
    "data_dir": "/data/speech_commands_test_set_v0.02",
    "protocol": "mini",
    "keywords": None,
    "noise_dir": "/data/speech_commands_v0.01_sample/_background_noise_",
    "version": None,
    "skip_bad": False,
    "fractions": [0.8, 0.1, 0.1],
}
RECIPE = {
    "epochs": 60, "batch_size": 100, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.001, "warmup_epochs": 5,
    "label_smoothing": 0.0, "time_shift_ms": 100.0, "noise_probability": 0.8, "spec_augment": "auto",
    "eval_batch_size": 500, "fast": True,
}  # fmt: skip
PROVENANCE = {
    "cpu": "Test CPU", "cpu_flags": ["avx2"], "logical_cpus": 2, "threads": 2, "platform": "Linux-test",
    "python": "3.11.7", "versions": {"kwsbench": "0.1.0", "torch": "2.14.1"},
}  # fmt: skip

# Measured counts of the registry's models (kwsbench models --json), as a sweep records them.
COUNTS = {
    "bcresnet_1": (9_232, 3_114_820, 2_482_156),
    "bcresnet_1_5": (17_154, 5_556_990, 4_607_994),
    "table2_no_ssn": (7_760, 3_114_820, 2_482_156),
    "table2_no_shortcut": (9_500, 3_114_820, 2_482_156),  # deliberately off: 9,232 is right
    "table2_attention": (9_232, 3_114_820, 2_482_156),
    "table2_freq_maxpool": (9_232, 2_985_540, 2_482_156),
    "tcresnet14_1_5": (303_000, 6_720_840, 6_677_136),
}
LATENCY_MS = {
    "bcresnet_1": 0.30, "bcresnet_1_5": 0.45, "table2_no_ssn": 0.28, "table2_no_shortcut": 0.29,
    "table2_attention": 0.31, "table2_freq_maxpool": 0.26, "tcresnet14_1_5": 0.50,
}  # fmt: skip

# (model, options, {seed: final-epoch test accuracy}); the count key is the registry model the variant is.
FINAL = [
    ("bcresnet_1", {}, {0: 0.90, 1: 0.92, 2: 0.91, 3: 0.93}, "bcresnet_1"),
    ("bcresnet_1", {"use_subspectral_norm": False}, {0: 0.88, 1: 0.895, 2: 0.89, 3: 0.905}, "table2_no_ssn"),
    ("table2_no_shortcut", {}, {0: 0.92, 1: 0.945, 2: 0.93, 3: 0.955}, "table2_no_shortcut"),
    ("table2_attention", {}, {0: 0.89, 1: 0.93, 2: 0.905, 3: 0.934}, "table2_attention"),
    ("table2_freq_maxpool", {}, {0: 0.85, 1: 0.86, 7: 0.87}, "table2_freq_maxpool"),
    ("bcresnet_1_5", {}, {0: 0.93, 1: 0.951, 2: 0.939, 3: 0.962}, "bcresnet_1_5"),
    ("tcresnet14_1_5", {}, {0: 0.94}, "tcresnet14_1_5"),
]


def latency(model: str, median_ms: float, backend: str = "eager") -> dict[str, Any]:
    return {
        "kind": "latency", "schema_version": 1, "name": model, "backend": backend, "threads": 1, "batch": 1,
        "timed": "model", "median_ms": median_ms, "p90_ms": median_ms * 1.2, "iqr_ms": 0.01, "n": 100,
        "status": "ok",
        "protocol": {"version": "kwsbench-latency/1", "warmup": 20, "iterations": 100, "min_time_s": 0.3,
                     "max_iterations": 2000, "timed": "model", "input": "standard normal, seed 0, declared shape",
                     "threads": 1, "batch": 1},
        "provenance": PROVENANCE,
    }  # fmt: skip


def trial(
    model: str,
    seed: int,
    final: float | None,
    *,
    options: dict | None = None,
    best: float | None = None,
    counts: tuple[int, int, int] | None = None,
    latency_ms: float | None = None,
    status: str = "ok",
    error: str | None = None,
    dataset: dict | None = None,
    recipe: dict | None = None,
    labels: list[str] | None = None,
    experiment: str = "fixture",
) -> dict[str, Any]:
    """One trial record as ``kwsbench run`` writes it (the metrics of loop.train_trial, minus the bulk)."""
    options = options or {}
    params, macs_total, macs_conv = counts or (None, None, None)
    record: dict[str, Any] = {
        "kind": "trial", "schema_version": 1,
        "trial_id": f"{model}-{'-'.join(f'{k}={v}' for k, v in sorted(options.items()))}-{seed}",
        "experiment": experiment, "model": model, "seed": seed, "status": status, "options": options,
        "recipe": recipe or RECIPE, "dataset": dataset or DATASET, "metrics": {},
        "params": params, "macs_total": macs_total, "macs_conv": macs_conv, "latency": [],
        "train_samples_per_s": None, "wall_time_s": 600.0, "checkpoint": None, "provenance": PROVENANCE,
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "started_at": f"2026-01-01T00:{seed:02d}:00+00:00", "finished_at": f"2026-01-01T01:{seed:02d}:00+00:00",
        "error": error, "traceback": None,
    }  # fmt: skip
    if status == "ok":
        best = final if best is None else best
        record["metrics"] = {
            "labels": labels or LABELS, "best_epoch": 50, "epochs": (recipe or RECIPE)["epochs"],
            "best": {"validation_accuracy": 0.9, "test_accuracy": best},
            "final": {"validation_accuracy": 0.9, "test_accuracy": final},
            "clips": {"train": 2867, "validation": 617, "test": 481},
        }  # fmt: skip
        record["train_samples_per_s"] = 600.0
        if latency_ms is not None:
            record["latency"] = [latency(model, latency_ms)]
    return record


def fixture_trials() -> list[dict[str, Any]]:
    records = []
    for model, options, finals, key in FINAL:
        for seed, final in finals.items():
            # Best-validation-epoch accuracy a little below the final one, so the two columns differ.
            records.append(trial(model, seed, final, options=options, best=round(final - 0.005, 6),
                                 counts=COUNTS[key], latency_ms=LATENCY_MS[key]))  # fmt: skip
    records.append(
        trial("bcresnet_1_5", 9, None, status="failed", error="RuntimeError: out of memory\nwhile training")
    )
    return records


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path
