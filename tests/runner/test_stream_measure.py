"""An experiment that asks for streaming detection: each trial record carries stream-eval's false-rejection
rates, and the report shows them in a table (the same numbers)."""

from __future__ import annotations

import pytest
import yaml

from kwsbench.cli import main
from kwsbench.errors import ConfigError
from kwsbench.results import TrialRecord, read_records
from kwsbench.runner.config import Measure

pytestmark = pytest.mark.slow


def test_negative_stream_hours_are_refused():
    with pytest.raises(ConfigError, match="stream_hours"):
        Measure(stream_hours=-1.0)


def test_a_sweep_records_and_reports_stream_eval(tiny_folder, tmp_path, write_experiment):
    path = write_experiment(tiny_folder, tmp_path / "tiny.yaml", seeds=(0,))
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["measure"] = {"backends": ["eager"], "threads": 1, "stream_hours": 0.01, "stream_snr_db": 20}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    out, report = tmp_path / "results", tmp_path / "report"
    assert main(["run", str(path), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    (record,) = read_records(out / "results.jsonl", TrialRecord)
    assert record.status == "ok", record.error
    stream = record.stream_eval
    assert stream["hours"] == 0.01 and stream["snr_db"] == 20 and stream["occurrences"] >= 1
    points = {p["target_false_alarms_per_hour"]: p for p in stream["operating_points"]}
    assert sorted(points) == [0.5, 1.0, 2.0]
    # More false alarms allowed can only lower (never raise) the false-rejection rate.
    rates = [points[t]["false_rejection_rate"] for t in (0.5, 1.0, 2.0)]
    assert all(0.0 <= r <= 1.0 for r in rates) and rates[0] >= rates[1] >= rates[2]
    assert set(points[1.0]["per_keyword"]) <= {"yes", "no", "up"}

    assert main(["report", str(out / "results.jsonl"), "--out", str(report)]) == 0
    text = (report / "README.md").read_text(encoding="utf-8")
    assert "## Streaming detection" in text
    row = next(line for line in text.splitlines() if line.startswith("| C1 | bcresnet_1 | 1 |"))
    assert row.rstrip(" |").endswith(f"{rates[2] * 100:.2f}")
    assert (report / "streaming.csv").is_file()
