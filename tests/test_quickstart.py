"""The quickstart (`make run`): the shipped experiment on the synthetic set, and a quick version of it end to end
(synthesise, train, measure, report) as a user's first command runs it, with no shared audio involved."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kwsbench.cli import main
from kwsbench.results import TrialRecord, read_records
from kwsbench.runner.config import load_experiment

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"


def test_the_shipped_quickstart_needs_no_dataset_folder():
    experiment = load_experiment(QUICKSTART)
    assert experiment.dataset.dataset == "synthetic" and experiment.dataset.data_dir is None
    assert set(experiment.models) == {"bcresnet_1", "bcresnet_3", "dscnn_s"}
    assert set(experiment.measure.backends) == {"eager", "optimized"}
    # make run is the quickstart: the Makefile runs this file and reports its results.
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "experiments/quickstart.yaml" in makefile and "kwsbench report" in makefile


@pytest.mark.slow
def test_a_quick_quickstart_synthesises_trains_measures_and_reports(tmp_path, monkeypatch, capsys):
    # No shared audio: the quickstart must not touch it.
    monkeypatch.setenv("KWSBENCH_SHARED_DATA", str(tmp_path / "absent"))
    data = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(data), "--clips-per-word", "12", "--seed", "3"]) == 0
    config = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    config["dataset"]["data_dir"] = str(data)
    config["recipe"].update(epochs=2, warmup_epochs=1, batch_size=32)
    experiment = tmp_path / "quick.yaml"
    experiment.write_text(yaml.safe_dump(config), encoding="utf-8")
    out, report = tmp_path / "results", tmp_path / "report"
    args = ["run", str(experiment), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    records = read_records(out / "results.jsonl", TrialRecord)
    assert sorted(r.model for r in records) == ["bcresnet_1", "bcresnet_3", "dscnn_s"]
    for record in records:
        assert record.status == "ok", record.error
        assert sorted(row["backend"] for row in record.latency) == ["eager", "optimized"]
        assert all(row["median_ms"] > 0 for row in record.latency)
        assert len(record.metrics["labels"]) == 12 and 0.0 <= record.metrics["final"]["test_accuracy"] <= 1.0
    assert main(["report", str(out / "results.jsonl"), "--out", str(report)]) == 0
    text = (report / "README.md").read_text(encoding="utf-8")
    assert "synthetic" in text and all(m in text for m in ("bcresnet_1", "bcresnet_3", "dscnn_s"))
    assert (report / "accuracy_vs_macs.png").stat().st_size > 1_000
    # A second run finds every trial done.
    capsys.readouterr()
    assert main(args) == 0
    assert len(read_records(out / "results.jsonl", TrialRecord)) == 3
