"""`kwsbench bench`: JSON fields, the table, the frontend graph and one-line errors."""

from __future__ import annotations

import json

import pytest

from kwsbench.cli import main
from kwsbench.measure.bench import format_bench, run_bench

FIELDS = {
    "name", "backend", "threads", "batch", "median_ms", "p90_ms", "iqr_ms", "max_abs_diff",
    "ratio_to_eager", "status", "protocol", "provenance",
}  # fmt: skip


def test_bench_json_fields(capsys):
    argv = ["bench", "bcresnet_1", "--backend", "eager", "--backend", "onnxruntime", "--json"]
    assert main(argv + ["--iterations", "5", "--warmup", "1"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["backend"]) for r in records] == [
        ("bcresnet_1", "eager"),
        ("bcresnet_1", "onnxruntime"),
    ]
    for r in records:
        assert FIELDS <= set(r)
        assert r["status"] == "ok" and r["threads"] == 1 and r["batch"] == 1
        assert r["n"] >= 5 and 0 < r["median_ms"] <= r["p90_ms"] and r["iqr_ms"] >= 0
        assert r["protocol"]["iterations"] == 5 and r["protocol"]["timed"] == "model"
        assert r["provenance"]["versions"]["onnxruntime"]
    eager, ort = records
    assert eager["ratio_to_eager"] == 1.0 and eager["max_abs_diff"] == 0.0
    assert ort["ratio_to_eager"] == pytest.approx(ort["median_ms"] / eager["median_ms"])
    assert ort["max_abs_diff"] < 1e-4


def test_bad_backend_is_a_one_line_error(capsys):
    assert main(["bench", "bcresnet_1", "--backend", "tensorrt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown backend 'tensorrt'" in err and "optimized" in err


def test_pattern_matching_nothing_is_a_one_line_error(capsys):
    assert main(["bench", "nosuchnet*"]) == 2
    assert "no registered model matches 'nosuchnet*'" in capsys.readouterr().err


def test_frontend_graph_takes_raw_audio_and_table_has_provenance():
    report = run_bench(
        "bcresnet_1", ["eager", "onnxruntime", "optimized"], batch=2, frontend=True, iterations=3, warmup=1
    )
    statuses = {r.backend: r.status for r in report.records}
    assert statuses == {"eager": "ok", "onnxruntime": "ok", "optimized": "ok"}
    assert all(r.timed == "frontend+model" and r.batch == 2 for r in report.records)
    table = format_bench(report)
    assert report.provenance["cpu"] in table and "torch" in table
    assert table.count("bcresnet_1 ") == 3
